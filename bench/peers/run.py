#!/usr/bin/env python3
"""Peers bench: the same job through this host and through other loaders, in
one run, printed as one table.

    python3 bench/peers/run.py            # from the repository's root
    ROWS=100000 python3 bench/peers/run.py

The job: a JSON-lines object of N Fetch login events (the generator of
tests/it/objects.rs `logins_lines`, the same bytes for every tool) in an S3
bucket (moto, started here) loaded into PostgreSQL, in two variants:

  transform  the logins chain (flatten, app_version -> major, sha256 of ip
             and device_id) into a `user_logins`-shaped table: the host
             (`host backfill` of pipelines/logins.toml on S3), dlt (the same
             transform in Python), and `psql \\copy` of the transformed rows;
  raw        the records as they are, one text column per top-level field:
             the host (a pipeline without [[transforms]]), Sling,
             faucet-stream, dlt, and `psql \\copy` of the raw rows.

Each tool runs as a child process, timed from its start to its exit; its
CPU (user + system) comes from wait4 (its whole process tree, children
included once they are waited for), its peak RSS from /proc (the largest
process of the tree), and the local PostgreSQL server's CPU meanwhile
from /proc (its postmaster and children). Every table is counted and
checksummed afterwards; a tool that loaded anything else than the N rows
fails the run.

Settings (environment): ROWS (1000000), DATABASE_URL (else
postgres://postgres@127.0.0.1:5432/test; sslmode is forced to disable for
every tool), PEERS_TOOLS (comma list of host,dlt,sling,faucet,psql: all),
PEERS_VARIANTS (transform,raw), PEERS_HOST_BIN (target/release/host),
PEERS_PLUGIN_DIR (target/plugins), PEERS_CARGO_TARGET_DIR
(target/peers/cargo: faucet-stream's build), PEERS_KEEP=1 keeps the schema.

It installs its tools (bench/peers/requirements.txt, pinned) into
target/peers/venv on first use and builds the faucet-stream runner
(bench/peers/faucet) with cargo; neither is timed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS = REPO / "target" / "peers"
VENV = PEERS / "venv"
PY = VENV / "bin" / "python"


# --------------------------------------------------------------------------
# The venv: made and filled on first use, again when the pins change.


def ensure_venv():
    reqs = (HERE / "requirements.txt").read_bytes() + (HERE / "constraints.txt").read_bytes()
    stamp = VENV / ".peers-pins"
    digest = hashlib.sha256(reqs).hexdigest()
    if not (PY.exists() and stamp.exists() and stamp.read_text() == digest):
        PEERS.mkdir(parents=True, exist_ok=True)
        if not PY.exists():
            print(f"peers: creating {VENV}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        print("peers: installing the pinned tools (bench/peers/requirements.txt)", file=sys.stderr)
        subprocess.run(
            [str(PY), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt"),
             "-c", str(HERE / "constraints.txt")],
            check=True,
        )
        stamp.write_text(digest)


if Path(sys.prefix).resolve() != VENV.resolve():
    try:
        ensure_venv()
    except (subprocess.CalledProcessError, OSError) as e:
        sys.exit(f"peers: could not set up {VENV}: {e}")
    os.execv(str(PY), [str(PY), str(Path(__file__).resolve())] + sys.argv[1:])

# From here on: inside the venv.
import datetime  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402

import boto3  # noqa: E402
import psycopg2  # noqa: E402


def log(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The data: the same bytes for every tool.


def logins_lines(n, out):
    """tests/it/objects.rs `logins_lines`, byte for byte."""
    with open(out, "w", newline="\n") as f:
        for i in range(n):
            f.write(
                f'{{"user_id": "{i:08x}-063a-43a7-b91b-7ca1a833afae", "app_version": "2.3.0", '
                f'"device_type": "android", "ip": "199.172.{i // 256 % 256}.{i % 256}", "locale": "RU", '
                f'"device_id": "593-47-{i % 10_000:04}"}}\n'
            )


def raw_row(i):
    return (f"{i:08x}-063a-43a7-b91b-7ca1a833afae", "2.3.0", "android",
            f"199.172.{i // 256 % 256}.{i % 256}", "RU", f"593-47-{i % 10_000:04}")


RAW_COLUMNS = ("user_id", "app_version", "device_type", "ip", "locale", "device_id")
T_COLUMNS = ("user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version")


def transformed_row(i):
    user_id, version, device_type, ip, locale, device_id = raw_row(i)
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    return (user_id, device_type, sha(ip), sha(device_id), locale, str(int(version.split(".")[0])))


def checksum_of(row):
    """What `CHECKSUM_SQL` sums for a row (a tuple of texts)."""
    return int(hashlib.md5("|".join(row).encode()).hexdigest()[:15], 16)


def checksum_sql(table, columns):
    joined = ", ".join(f"{c}::text" for c in columns)
    return (f"SELECT count(*), coalesce(sum(('x' || left(md5(concat_ws('|', {joined})), 15))"
            f"::bit(60)::bigint), 0)::text FROM {table}")


def make_data(n, folder):
    """The object's bytes, the rows of each variant as COPY text, and each
    variant's expected checksum."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = folder / f"logins-{n}.jsonl"
    raw_tsv = folder / f"raw-{n}.tsv"
    t_tsv = folder / f"transformed-{n}.tsv"
    today = datetime.date.today().isoformat()
    if not lines.exists():
        logins_lines(n, lines.with_suffix(".tmp"))
        lines.with_suffix(".tmp").rename(lines)
    raw_sum = t_sum = 0
    with open(raw_tsv, "w") as r, open(t_tsv, "w") as t:
        for i in range(n):
            raw = raw_row(i)
            tr = transformed_row(i)
            raw_sum += checksum_of(raw)
            t_sum += checksum_of(tr)
            r.write("\t".join(raw) + "\n")
            # COPY text in user_logins' column order.
            user_id, device_type, masked_ip, masked_device_id, locale, app_version = tr
            t.write("\t".join((user_id, device_type, masked_ip, masked_device_id, locale,
                               app_version, today)) + "\n")
    return lines, raw_tsv, t_tsv, {"raw": str(raw_sum), "transform": str(t_sum)}


# --------------------------------------------------------------------------
# Services.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(run_dir):
    port = free_port()
    logf = open(run_dir / "moto.log", "w")
    proc = subprocess.Popen([str(VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({proc.returncode}): see {run_dir / 'moto.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not listen within 30 s")


def database_url():
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/test"
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "sslmode"]
    query.append(("sslmode", "disable"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# --------------------------------------------------------------------------
# Measuring a child.


class Failed(Exception):
    pass


CLK_TCK = os.sysconf("SC_CLK_TCK")
# The local server's postmaster (found by `Bench.find_postmaster`), else None.
POSTMASTER = None


def proc_stat(pid):
    """(state, ppid, utime + stime + cutime + cstime in ticks) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), sum(int(x) for x in fields[11:15])


def server_cpu():
    """CPU seconds used so far by the local PostgreSQL server: its
    postmaster's and its children's (backends, checkpointer, WAL writer,
    autovacuum), each with what it collected from the children it reaped
    (the postmaster collects exited backends'). Read before and after a
    tool's run: includes any other client's work in between.

    A backend that has exited but is not reaped yet shows no CPU of its own
    and is not in the postmaster's count yet: read again until there is
    none (2 s at most)."""
    if POSTMASTER is None:
        return 0.0
    deadline = time.monotonic() + 2
    while True:
        total, zombies = 0, False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                state, ppid, ticks = proc_stat(pid)
            except (OSError, ValueError):
                continue
            if int(pid) == POSTMASTER or ppid == POSTMASTER:
                total += ticks
                zombies = zombies or state == "Z"
        if not zombies or time.monotonic() > deadline:
            return total / CLK_TCK
        time.sleep(0.01)


def psql_binary():
    """psql itself: Debian's /usr/bin/psql is a Perl wrapper that picks one."""
    if os.environ.get("PEERS_PSQL"):
        return os.environ["PEERS_PSQL"]
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    if shutil.which("psql"):
        return shutil.which("psql")
    raise Failed("psql is not on PATH (or set PEERS_PSQL)")


def process_tree(pid):
    """`pid` and its descendants, from /proc's children lists."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return seen


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


with open("/proc/self/cmdline", "rb") as _f:
    OWN_CMDLINE = _f.read()


class RssWatch(threading.Thread):
    """Peak resident memory (VmHWM) of each process of a tree, read from /proc
    every 20 ms. Not wait4's ru_maxrss: a forked child's count starts from its
    parent's (this 60 MB Python), and exec carries that peak over."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks = {}
        self.done = threading.Event()

    def execed(self):
        """Whether the child has left this Python for its program."""
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return f.read() != OWN_CMDLINE
        except OSError:
            return False

    def run(self):
        while not self.done.is_set():
            if self.execed():
                for p in process_tree(self.pid):
                    self.peaks[p] = max(self.peaks.get(p, 0), vm_hwm_kib(p))
            self.done.wait(0.02)


class Measured:
    def __init__(self, seconds, cpu, rss_kib, server_cpu):
        self.seconds, self.cpu, self.rss_kib, self.server_cpu = seconds, cpu, rss_kib, server_cpu
        self.table = None


def measure(name, cmd, env, run_dir, cwd=None):
    """Runs `cmd`: its seconds, the CPU seconds of its tree, the peak RSS
    (KiB) of its largest process, and the local PostgreSQL's CPU seconds
    meanwhile."""
    out_path, err_path = run_dir / f"{name}.out", run_dir / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        server_before = server_cpu()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=cwd)
        watch = RssWatch(proc.pid)
        watch.start()
        # Reaped here, not by Popen: wait4 gives the CPU of the child and of
        # every descendant it waited for. (The watcher sees each process up
        # to 20 ms before its exit: VmHWM only grows, so that is its peak
        # but for a last-moment spike.)
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        server = server_cpu() - server_before
        watch.done.set()
        watch.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise Failed(f"exit {proc.returncode}; {err_path}:\n    " + "\n    ".join(tail))
    peak = max(watch.peaks.values(), default=0)
    return Measured(elapsed, ru.ru_utime + ru.ru_stime, peak, server)


# --------------------------------------------------------------------------
# The tools.


class Bench:
    def __init__(self, n):
        self.n = n
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = PEERS / "runs" / stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.schema = f"peers_{os.getpid()}_{int(time.time())}"
        self.bucket = f"peers-{os.getpid()}-{int(time.time())}"
        self.prefix = "logins/"
        self.key = "logins/big.jsonl"
        self.db_url = database_url()
        self.host_bin = Path(os.environ.get("PEERS_HOST_BIN") or REPO / "target" / "release" / "host")
        self.plugin_dir = Path(os.environ.get("PEERS_PLUGIN_DIR") or REPO / "target" / "plugins")
        self.cache_dir = PEERS / "host-cache"
        self.host_pipelines = []
        self.results = []
        self.failures = []

    # ---- database
    def sql(self, statement, fetch=False):
        conn = psycopg2.connect(self.db_url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if fetch else None
        finally:
            conn.close()

    def table(self, name):
        return f"{self.schema}.{name}"

    def verify(self, table, variant):
        columns = T_COLUMNS if variant == "transform" else RAW_COLUMNS
        ((count, total),) = self.sql(checksum_sql(table, columns), fetch=True)
        if count != self.n:
            raise Failed(f"{table} holds {count} rows, not {self.n}")
        if total != self.expected[variant]:
            raise Failed(f"{table}: the {self.n} rows differ from the expected ones (checksum "
                         f"{total}, expected {self.expected[variant]})")
        if variant == "transform":
            ((dated,),) = self.sql(f"SELECT count(create_date) FROM {table}", fetch=True)
            if dated != self.n:
                raise Failed(f"{table}: {self.n - dated} rows without create_date")

    def env(self, **extra):
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint, AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", DATABASE_URL=self.db_url,
        )
        env.update(extra)
        return env

    def record(self, variant, tool, source, fn):
        log(f"{variant}: {tool} ...")
        try:
            # Untimed: the previous tool's writes flushed, so that no tool
            # pays for another's checkpoint.
            self.sql("CHECKPOINT")
            m, table = fn()
            self.verify(table, variant)
            # Dropped once checked, so that autovacuum does not work on it
            # during the next tool's run (and the next PG CPU figure).
            if os.environ.get("PEERS_KEEP") != "1":
                self.sql(f"DROP TABLE {table}")
        except (Failed, psycopg2.Error) as e:
            log(f"{variant}: {tool} FAILED: {e}")
            self.failures.append((variant, tool, str(e)))
            self.results.append((variant, tool, source, None, str(e).splitlines()[0]))
            return
        log(f"{variant}: {tool}: {m.seconds:.2f} s, {m.cpu:.2f} CPU s, {m.rss_kib / 1024:.0f} MB, "
            f"server {m.server_cpu:.2f} CPU s, {self.n} rows verified")
        self.results.append((variant, tool, source, m, None))

    def not_applicable(self, variant, tool, why):
        self.results.append((variant, tool, "-", None, why))

    # ---- psql \copy
    def psql_copy(self, variant):
        table = self.table(f"copy_{variant}")
        if variant == "transform":
            self.sql(f"CREATE TABLE {table} (user_id varchar(128), device_type varchar(32), "
                     "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
                     "app_version integer, create_date date)")
            path = self.t_tsv
        else:
            self.sql(f"CREATE TABLE {table} ({', '.join(c + ' text' for c in RAW_COLUMNS)})")
            path = self.raw_tsv
        psql = psql_binary()
        cmd = [psql, self.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
               f"\\copy {table} FROM '{path}'"]
        return measure(f"psql-{variant}", cmd, self.env(), self.run_dir), table

    # ---- the host
    def host_pipeline(self, variant):
        name = f"{self.schema}_{variant}"
        self.host_pipelines.append(name)
        if variant == "transform":
            table = "user_logins"
            self.sql(f"CREATE TABLE {self.table(table)} (user_id varchar(128), device_type varchar(32), "
                     "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
                     "app_version integer, create_date date)")
            # What tests/it/objects.rs `big_object` does to the logins pipeline.
            text = (REPO / "pipelines" / "logins.toml").read_text()
            old_source = '[source.sqs]\nqueue = "${LOGIN_QUEUE:-login-queue}"'
            if old_source not in text:
                raise Failed("pipelines/logins.toml's source is not where this bench expects it")
            text = (text.replace('name = "logins"', f'name = "{name}"')
                    .replace(old_source, f'[source.s3]\nqueue = "unused"\nbucket = "{self.bucket}"\n'
                                         f'prefix = "{self.prefix}"\nformat = "json-lines"')
                    .replace('table = "user_logins"', f'table = "user_logins"\nschema = "{self.schema}"'))
        else:
            table = "host_raw"
            self.sql(f"CREATE TABLE {self.table(table)} ({', '.join(c + ' text' for c in RAW_COLUMNS)})")
            columns = "\n".join(f'{c} = "{c}"' for c in RAW_COLUMNS)
            text = f"""# The peers bench's raw variant: the records as they are, no [[transforms]].
name = "{name}"

[source.s3]
queue = "unused"
bucket = "{self.bucket}"
prefix = "{self.prefix}"
format = "json-lines"

[batch]
max_records = 500
max_wait_ms = 1000

[sink]
table = "{table}"
schema = "{self.schema}"
mode = "append"

[sink.columns]
{columns}
"""
        path = self.run_dir / f"host-{variant}.toml"
        path.write_text(text)
        return path, table

    def host(self, variant):
        if not self.host_bin.is_file():
            raise Failed(f"{self.host_bin} is missing: build it (cargo build --release -p host) "
                         "or set PEERS_HOST_BIN")
        path, table = self.host_pipeline(variant)
        plugins = ["--plugin-path", str(self.plugin_dir), "--cache-dir", str(self.cache_dir)]
        # Untimed: check the pipeline and fill the compiled-plugin cache, so the
        # timed run starts as a deployed host does (plugins compiled once per version).
        check = subprocess.run([str(self.host_bin), "check", str(path)] + plugins, env=self.env(),
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise Failed(f"host check {path} failed:\n{check.stdout}{check.stderr}")
        cmd = [str(self.host_bin), "backfill", str(path)] + plugins
        return measure(f"host-{variant}", cmd, self.env(), self.run_dir), self.table(table)

    # ---- dlt
    def dlt(self, variant):
        table = f"dlt_{variant}"
        # dlt insists on a password; with trust auth (this bench's default
        # server) a placeholder is never checked.
        u = urllib.parse.urlsplit(self.db_url)
        dlt_url = self.db_url if u.password is not None else urllib.parse.urlunsplit(
            u._replace(netloc=f"{u.username or 'postgres'}:unused@{u.hostname}:{u.port or 5432}"))
        env = self.env(PEERS_VARIANT=variant, PEERS_SOURCE="s3", PEERS_S3_ENDPOINT=self.endpoint,
                       PEERS_BUCKET=self.bucket, PEERS_PREFIX=self.prefix, PEERS_DB_URL=dlt_url,
                       PEERS_SCHEMA=self.schema, PEERS_TABLE=table,
                       PEERS_DLT_DIR=str(self.run_dir / "dlt"))
        try:
            measured = measure(f"dlt-{variant}", [str(PY), str(HERE / "dlt_job.py")], env, self.run_dir,
                               cwd=self.run_dir)
        finally:
            # dlt keeps every loaded package's files (170 MB and more a run).
            shutil.rmtree(self.run_dir / "dlt", ignore_errors=True)
        return measured, self.table(table)

    # ---- Sling
    def sling_binary(self):
        import sling_linux_amd64  # the wheel that carries Sling's binary

        path = Path(sling_linux_amd64.__file__).parent / "bin" / "sling-linux-amd64"
        if not path.is_file():
            raise Failed(f"{path} is missing")
        if not os.access(path, os.X_OK):
            path.chmod(0o755)
        return path

    def sling_env(self, **extra):
        """Sling keeps its state in SLING_HOME_DIR (else ~/.sling)."""
        return self.env(SLING_HOME_DIR=str(PEERS / "sling-home"), SLING_DISABLE_TELEMETRY="true",
                        SLING_LOADED_AT_COLUMN="false", **extra)

    def sling(self, variant):
        table = "sling_raw"
        u = urllib.parse.urlsplit(self.db_url)
        env = self.sling_env(
            PEERS_S3=(f'{{"type": "s3", "bucket": "{self.bucket}", "endpoint": "{self.endpoint}", '
                      '"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}'),
            PEERS_PG=urllib.parse.urlunsplit(u._replace(scheme="postgresql")),
        )
        cmd = [str(self.sling_binary()), "run",
               "--src-conn", "PEERS_S3", "--src-stream", f"s3://{self.bucket}/{self.key}",
               "--src-options", '{"format": "jsonlines", "flatten": true}',
               "--tgt-conn", "PEERS_PG", "--tgt-object", self.table(table),
               "--mode", "full-refresh"]
        return measure(f"sling-{variant}", cmd, env, self.run_dir), self.table(table)

    # ---- faucet-stream
    def faucet_binary(self):
        cargo = shutil.which("cargo")
        if not cargo:
            raise Failed("cargo is not on PATH: faucet-stream is a Rust library, its runner must be built")
        target = Path(os.environ.get("PEERS_CARGO_TARGET_DIR") or PEERS / "cargo")
        log(f"building the faucet-stream runner (untimed; {target}; the first build takes minutes)")
        build = subprocess.run(
            ["nice", "-n", "10", cargo, "build", "--release", "--locked",
             "--manifest-path", str(HERE / "faucet" / "Cargo.toml")],
            env=dict(os.environ, CARGO_TARGET_DIR=str(target)), capture_output=True, text=True)
        if build.returncode != 0:
            raise Failed("building bench/peers/faucet failed:\n" + build.stderr[-3000:])
        return target / "release" / "peers-faucet"

    def faucet(self, variant):
        binary = self.faucet_binary()
        table = "faucet_raw"
        self.sql(f"CREATE TABLE {self.table(table)} ({', '.join(c + ' text' for c in RAW_COLUMNS)})")
        env = self.env(PEERS_S3_ENDPOINT=self.endpoint, PEERS_BUCKET=self.bucket, PEERS_PREFIX=self.prefix,
                       PEERS_SCHEMA=self.schema, PEERS_TABLE=table)
        return measure(f"faucet-{variant}", [str(binary)], env, self.run_dir), self.table(table)

    # ---- the run
    def find_postmaster(self):
        """The server's postmaster, when it runs on this machine (the parent
        of this connection's backend)."""
        global POSTMASTER
        if urllib.parse.urlsplit(self.db_url).hostname not in (None, "", "127.0.0.1", "localhost", "::1"):
            return
        conn = psycopg2.connect(self.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                ((backend,),) = cur.fetchall()
            # Read while the connection, and so its backend, lives.
            POSTMASTER = proc_stat(backend)[1]
        except OSError:
            POSTMASTER = None  # another machine's, or a container's
        finally:
            conn.close()
        if POSTMASTER is None:
            log("the server is not on this machine: no PG CPU figures")

    def run(self, tools, variants):
        log(f"{self.n} rows; files in {self.run_dir}")
        self.find_postmaster()
        self.lines, self.raw_tsv, self.t_tsv, self.expected = make_data(self.n, PEERS / "data")
        self.bytes = self.lines.stat().st_size
        self.moto, self.endpoint = start_moto(self.run_dir)
        try:
            s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
            s3.create_bucket(Bucket=self.bucket)
            s3.upload_file(str(self.lines), self.bucket, self.key)
            self.sql(f"CREATE SCHEMA {self.schema}")
            if "host" in tools:
                self.migrate()
            for variant in variants:
                if "psql" in tools:
                    self.record(variant, "psql \\copy", "local file", lambda: self.psql_copy(variant))
                if "host" in tools:
                    self.record(variant, "host backfill", "S3 (moto)", lambda: self.host(variant))
                if "dlt" in tools:
                    self.record(variant, "dlt", "S3 (moto)", lambda: self.dlt(variant))
                if variant == "transform":
                    if "sling" in tools:
                        self.not_applicable(variant, "Sling", "no sha256 or version-parsing transform")
                    if "faucet" in tools:
                        self.not_applicable(variant, "faucet-stream", "no sha256 transform")
                else:
                    if "sling" in tools:
                        self.record(variant, "Sling", "S3 (moto)", lambda: self.sling(variant))
                    if "faucet" in tools:
                        self.record(variant, "faucet-stream", "S3 (moto)", lambda: self.faucet(variant))
        finally:
            self.cleanup()

    def migrate(self):
        if not self.host_bin.is_file():
            return  # the host's rows will say so
        done = subprocess.run([str(self.host_bin), "migrate"], env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"peers: host migrate failed:\n{done.stdout}{done.stderr}")

    def cleanup(self):
        try:
            if os.environ.get("PEERS_KEEP") == "1":
                log(f"kept schema {self.schema}")
            else:
                self.sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            # The host's own rows for this run's pipelines (ledger, file progress).
            if self.host_pipelines:
                names = ", ".join(f"'{p}'" for p in self.host_pipelines)
                tables = self.sql("SELECT table_name FROM information_schema.columns WHERE "
                                  "table_schema = 'etl' AND column_name = 'pipeline'", fetch=True)
                for (t,) in tables:
                    self.sql(f"DELETE FROM etl.{t} WHERE pipeline IN ({names})")
        except psycopg2.Error as e:
            log(f"cleanup: {e}")
        finally:
            self.moto.terminate()
            self.moto.wait()

    def versions(self, tools):
        """What ran, each as it says itself."""
        def first_line(cmd):
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.sling_env())
                return (done.stdout or done.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.SubprocessError) as e:
                return f"unknown ({e})"

        out = []
        if "host" in tools:
            out.append(f"host: {first_line([str(self.host_bin), '--version'])} ({self.host_bin})")
        if "dlt" in tools:
            import importlib.metadata as md
            out.append(f"dlt {md.version('dlt')} (s3fs {md.version('s3fs')})")
        if "sling" in tools:
            try:
                out.append(f"Sling: {first_line([str(self.sling_binary()), '--version'])}")
            except Failed as e:
                out.append(f"Sling: {e}")
        if "faucet" in tools:
            out.append("faucet-stream 1.0.2 (bench/peers/faucet/Cargo.lock)")
        if "psql" in tools:
            try:
                out.append(first_line([psql_binary(), "--version"]))
            except Failed as e:
                out.append(str(e))
        try:
            ((server,),) = self.sql("SELECT version()", fetch=True)
            out.append(f"server: {server.split(' on ')[0]}")
        except psycopg2.Error:
            pass
        import importlib.metadata as md
        out.append(f"moto {md.version('moto')}")
        return "; ".join(out)

    def table_text(self):
        copy_time = {r[0]: r[3].seconds for r in self.results if r[1] == "psql \\copy" and r[3]}
        local = POSTMASTER is not None
        of_copy = "of \\copy"
        head = (f"{'variant':<10} {'tool':<14} {'source':<10} {'seconds':>8} {'rows/s':>9} "
                f"{'CPU s':>7} {'rows/CPU-s':>10} {'peak RSS':>9} {'PG CPU s':>8} {of_copy:>8}")
        lines = [head, "-" * len(head)]
        for variant, tool, source, m, note in self.results:
            if m is None:
                lines.append(f"{variant:<10} {tool:<14} {source:<10} {'-- ' + note}")
                continue
            ratio = f"{copy_time[variant] / m.seconds:.2f}" if variant in copy_time else "-"
            per_cpu = f"{self.n / m.cpu:.0f}" if m.cpu else "-"
            server = f"{m.server_cpu:.2f}" if local else "-"
            # 0: the process ended before the watcher's first look (20 ms).
            rss = f"{m.rss_kib / 1024:.0f} MB" if m.rss_kib else "-"
            lines.append(
                f"{variant:<10} {tool:<14} {source:<10} {m.seconds:>8.2f} {self.n / m.seconds:>9.0f} "
                f"{m.cpu:>7.2f} {per_cpu:>10} {rss:>9} {server:>8} {ratio:>8}")
        return "\n".join(lines)


def main():
    n = int(os.environ.get("ROWS", "1000000"))
    all_tools = ["host", "dlt", "sling", "faucet", "psql"]
    tools = [t.strip() for t in os.environ.get("PEERS_TOOLS", ",".join(all_tools)).split(",") if t.strip()]
    variants = [v.strip() for v in os.environ.get("PEERS_VARIANTS", "transform,raw").split(",") if v.strip()]
    for t in tools:
        if t not in all_tools:
            sys.exit(f"peers: PEERS_TOOLS: unknown tool {t!r} (one of {', '.join(all_tools)})")
    for v in variants:
        if v not in ("transform", "raw"):
            sys.exit(f"peers: PEERS_VARIANTS: unknown variant {v!r} (transform, raw)")
    bench = Bench(n)
    bench.run(tools, variants)
    text = bench.table_text()
    header = (f"{n} rows, {bench.bytes / 1e6:.0f} MB of JSON lines; PostgreSQL at "
              f"{urllib.parse.urlsplit(bench.db_url).hostname} (sslmode=disable for every tool); "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    header += "\n" + bench.versions(tools)
    print(header)
    print(text)
    (bench.run_dir / "table.txt").write_text(header + "\n" + text + "\n")
    if bench.failures:
        print(f"\n{len(bench.failures)} failed:", file=sys.stderr)
        for variant, tool, why in bench.failures:
            print(f"- {variant} / {tool}: {why}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
