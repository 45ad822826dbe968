#!/usr/bin/env python3
"""SQL-level replay of the sink's commits (host/src/sink), for issue 27.

Replays, per batch, the statements one commit issues (BEGIN; [staging
create]; COPY; merge; lineage insert; ledger lock + seen + record; COMMIT) in
a schema of its own (`sinkexp`: copies of public.user_logins' shape and of
etl.batches / etl.step_params / etl.receipts), with the rows and message ids
the sink bench (tests/benches/sink.rs) makes, two batches in flight on two
connections, and prints rows/s against one plain COPY of the same rows into
an empty unindexed table measured in the same run.

    python sinkbench.py CASE [CASE...]     (env: N rows, default 300000)

CASE is mode:batch:rate:layout[:merge[:per_tx[:flags]]]: mode append,
upsert (new keys) or update (a table holding every key); rate the messages
a second their SentTimestamps are apart (100: trickle, 10000: dense);
layout old (etl.receipts as on main) or new (V20, read from
migrations/V20__ledger_spans.sql); merge onconflict (today), merge,
update_insert, onconflict_nodistinct, onconflict_skip; per_tx batches a
transaction (group commit); flags: timing (ms per step), serial (one
connection), mergelock (MERGE_LOCK before the merge), stageonce (staging
table made once per connection), changed (update rows differ from those in
the table), epochlock (ledger lock per partition bucket), keyedcopy (one
plain COPY into the keyed table instead). FLIGHT sets the connections
(default 2). `failcopy:1000`: a direct COPY meeting the key, rolled back.

Run with psycopg 3 (binary). Drops its schema at the end unless KEEP=1.
"""
import os, sys, time, threading, uuid

import psycopg

DSN = os.environ.get("DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
N = int(os.environ.get("N", "300000"))
FLIGHT = int(os.environ.get("FLIGHT", "2"))
S = "sinkexp"
PIPE = "bench_pipeline_0123456789abcdef"
MIN = -9223372036854775808
PART_MS = 10
MAX_SPAN = int(os.environ.get("MAX_SPAN", "1000"))      # partitions a new-layout row may cover
ROW_BYTES = int(os.environ.get("ROW_BYTES", "7680"))   # bytes of ids a new-layout row may hold (inline)
COLS = ["user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version", "create_date"]
CL = ", ".join(f'"{c}"' for c in COLS)


def rows_text(n):
    return [
        f"{i:08x}-063a-43a7-b91b-7ca1a833afae\tandroid\ta6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c\t"
        f"4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed\tRU\t2\t2026-11-22\n".encode()
        for i in range(n)
    ]


def setup(conn):
    conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
    conn.execute(f"""
    CREATE SCHEMA {S};
    CREATE TABLE {S}.user_logins(user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
        masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date);
    CREATE TABLE {S}.batches (id bigserial PRIMARY KEY, pipeline text NOT NULL, source text NOT NULL,
        messages integer NOT NULL, rows_written integer NOT NULL, dead_letters integer NOT NULL,
        plugins jsonb NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), revision text);
    CREATE TABLE {S}.step_params (digest text PRIMARY KEY, params text NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT now());
    -- etl.receipts as V5+V9+V10 leave it
    CREATE TABLE {S}.receipts (pipeline text NOT NULL, part bigint NOT NULL, batch_id bigint NOT NULL,
        message_ids text[] NOT NULL DEFAULT '{{}}', message_uuids uuid[] NOT NULL DEFAULT '{{}}');
    CREATE INDEX receipts_part ON {S}.receipts (part, pipeline);
    CREATE INDEX receipts_batch ON {S}.receipts USING brin (batch_id);
    ALTER TABLE {S}.receipts SET (toast_tuple_target = 8160);
    ALTER TABLE {S}.receipts ALTER COLUMN message_ids SET STORAGE MAIN;
    ALTER TABLE {S}.receipts ALTER COLUMN message_uuids SET STORAGE MAIN;
    """)
    conn.commit()


def migrate_v20(conn, table="receipts"):
    """migrations/V20__ledger_spans.sql, on the schema's copy."""
    sql = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../migrations/V20__ledger_spans.sql")).read()
    conn.execute(sql.replace("etl.receipts", f"{S}.{table}").replace("etl.", f"{S}."))
    conn.commit()


# ---------------------------------------------------------------- statements
def q(s):
    """The statement on this script's schema (psycopg's %s for sql.rs's $n)."""
    return s.replace("etl.", f"{S}.")

LINEAGE = q("""WITH params AS (INSERT INTO etl.step_params (digest, params)
     SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT (digest) DO NOTHING)
     INSERT INTO etl.batches (id, pipeline, source, messages, rows_written, dead_letters, plugins, revision)
     VALUES (coalesce(%s::bigint, nextval(pg_get_serial_sequence('sinkexp.batches', 'id'))),
             %s, %s, %s, %s, %s, %s::text::jsonb, %s) RETURNING id""")
LOCK = "SELECT pg_advisory_xact_lock(hashtext('etl.receipts'), hashtext(%s))"
# per partition bucket (partition mod 64) instead of per pipeline: batches of
# disjoint partitions commit side by side (a message has one partition: two
# batches holding it still take turns). Keys sorted: no deadlock.
LOCK_EPOCHS = ("SELECT pg_advisory_xact_lock(hashtext('etl.receipts:' || %(p)s), e::int) "
               "FROM (SELECT DISTINCT e FROM unnest(%(epochs)s::bigint[]) AS e ORDER BY e) AS k")
SETLOCAL = "SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0"
KEY_IS_UNIQUE = """SELECT EXISTS (SELECT 1 FROM pg_index i
     WHERE i.indrelid = %s::text::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate
     AND i.indpred IS NULL AND i.indexprs IS NULL
     AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
          WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
       = (SELECT array_agg(k ORDER BY k) FROM unnest(%s::text[]) AS k))"""

# old ledger (sql.rs today)
SEEN_OLD = q("""SELECT id FROM unnest(%(texts)s::text[]) AS id WHERE id IN
     (SELECT unnest(message_ids) FROM etl.receipts WHERE pipeline = %(p)s AND part = ANY(%(look)s::bigint[]))
     UNION ALL SELECT id::text FROM unnest(%(uuids)s::uuid[]) AS id WHERE id IN
     (SELECT unnest(message_uuids) FROM etl.receipts WHERE pipeline = %(p)s AND part = ANY(%(look)s::bigint[]))""")
RECORD_OLD = q("""INSERT INTO etl.receipts (pipeline, part, batch_id, message_ids, message_uuids)
     SELECT %(p)s, part, currval(pg_get_serial_sequence('sinkexp.batches', 'id')),
            (%(texts)s::text[])[t_from:t_to], (%(uuids)s::uuid[])[u_from:u_to]
     FROM unnest(%(parts)s::bigint[], %(tf)s::int[], %(tt)s::int[], %(uf)s::int[], %(ut)s::int[]) AS p(part, t_from, t_to, u_from, u_to)""")

# new ledger (V20: rows cover partitions part..part+span); the text below is
# sql.rs's LEDGER_SEEN / LEDGER_RECORD with $n written as %(name)s
SEEN_NEW = q("""WITH r AS MATERIALIZED (SELECT r.message_ids, r.message_uuids
       FROM unnest(%(parts)s::bigint[], %(lasts)s::bigint[], %(froms)s::bigint[]) AS q(lo, hi, from_part)
       CROSS JOIN LATERAL (SELECT message_ids, message_uuids FROM etl.receipts
            WHERE pipeline = %(p)s AND part BETWEEN q.from_part AND q.hi AND last_part >= q.lo OFFSET 0) r)
     SELECT id FROM unnest(%(texts)s::text[]) AS id WHERE id IN (SELECT unnest(message_ids) FROM r)
     UNION ALL SELECT id::text FROM unnest(%(uuids)s::uuid[]) AS id WHERE id IN (SELECT unnest(message_uuids) FROM r)""")
SEEN_NEW_JOIN = q("""WITH r AS MATERIALIZED (SELECT r.message_ids, r.message_uuids
       FROM unnest(%(parts)s::bigint[], %(lasts)s::bigint[], %(froms)s::bigint[]) AS q(lo, hi, from_part)
       JOIN etl.receipts r ON r.pipeline = %(p)s AND r.part BETWEEN q.from_part AND q.hi AND r.last_part >= q.lo)
     SELECT id FROM unnest(%(texts)s::text[]) AS id WHERE id IN (SELECT unnest(message_ids) FROM r)
     UNION ALL SELECT id::text FROM unnest(%(uuids)s::uuid[]) AS id WHERE id IN (SELECT unnest(message_uuids) FROM r)""")
RECORD_NEW = q("""INSERT INTO etl.receipts (pipeline, part, span, batch_id, message_ids, message_uuids)
     SELECT %(p)s, part, last - part, currval(pg_get_serial_sequence('sinkexp.batches', 'id')),
            (%(texts)s::text[])[t_from:t_to], (%(uuids)s::uuid[])[u_from:u_to]
     FROM unnest(%(parts)s::bigint[], %(lasts)s::bigint[], %(tf)s::int[], %(tt)s::int[], %(uf)s::int[], %(ut)s::int[])
          AS p(part, last, t_from, t_to, u_from, u_to)""")


def pg_array(xs):
    return "{" + ",".join(str(x) for x in xs) + "}"


def is_uuid(s):
    try:
        return str(uuid.UUID(s)) == s
    except ValueError:
        return False


def id_bytes(mid):
    return 16 if is_uuid(mid) else 4 + len(mid.encode())


def ledger_params(units, layout):
    """LedgerIds::new of sql.rs (old: one row per partition; new (V20):
    consecutive partitions share a row while it spans at most MAX_SPAN
    partitions and ROW_BYTES of ids; the legacy partition alone), as
    pre-rendered array literals; and the look-up ranges of LedgerIds::look_up."""
    ids = sorted(((MIN if sent is None else sent // PART_MS), mid) for sent, mid in units)
    rows = []  # [first, last, ids, bytes]
    i = 0
    while i < len(ids):
        part = ids[i][0]
        j = i
        while j < len(ids) and ids[j][0] == part:
            j += 1
        these = [m for _, m in ids[i:j]]
        nb = sum(id_bytes(m) for m in these)
        r = rows[-1] if rows else None
        if (layout == "new" and r is not None and r[0] != MIN and part != MIN and part - r[0] <= MAX_SPAN
                and r[3] + nb <= ROW_BYTES):
            r[1] = part; r[2] += these; r[3] += nb
        else:
            rows.append([part, part, these, nb])
        i = j
    texts, uuids, tf, tt, uf, ut, parts, lasts = [], [], [], [], [], [], [], []
    for part, last, g, _ in rows:
        parts.append(part); lasts.append(last)
        tf.append(len(texts) + 1); uf.append(len(uuids) + 1)
        for mid in g:
            (uuids if is_uuid(mid) else texts).append(mid)
        tt.append(len(texts)); ut.append(len(uuids))
    look = sorted(parts + [MIN])
    # look-up ranges (new): the legacy partition, then the rows' ranges,
    # merged where one's scan would overlap the next
    los, his, froms = [MIN], [MIN], [MIN]
    for p_, l_ in zip(parts, lasts):
        if p_ == MIN:
            continue
        if len(los) > 1 and p_ - MAX_SPAN <= his[-1]:
            his[-1] = max(his[-1], l_)
        else:
            los.append(p_); his.append(l_); froms.append(p_ - MAX_SPAN)
    epochs = sorted({-1 if p_ == MIN else p_ % 64 for p_, _ in ids})
    return dict(p=PIPE, epochs=pg_array(epochs), texts=pg_array(texts), uuids=pg_array(uuids), parts=pg_array(parts), lasts=pg_array(lasts),
                tf=pg_array(tf), tt=pg_array(tt), uf=pg_array(uf), ut=pg_array(ut), look=pg_array(look),
                seen_parts=pg_array(los), seen_lasts=pg_array(his), froms=pg_array(froms), nrows=len(rows))


def make_batches(lines, batch, per_message, rate, layout, first_sent=1_795_000_000_000):
    out = []
    for b in range(0, len(lines) // batch):
        chunk = lines[b * batch:(b + 1) * batch]
        units = []
        for m in range(0, batch // per_message):
            sent = (b * batch // per_message + m) * 1000 // rate
            units.append((first_sent + sent, f"{b:08x}-{m:04x}-4a7e-9d1c-5f3b8e2a6c0d"))
        data = b"".join(chunk)
        staged = b"".join(l[:-1] + b"\t%d\n" % i for i, l in enumerate(chunk))
        out.append(dict(data=data, staged=staged, ledger=ledger_params(units, layout), messages=len(units)))
    return out


# ------------------------------------------------------------------- merges
LAST = '"user_id", CASE WHEN "user_id" IS NULL THEN "_etl_seq" END'
UPD = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in COLS if c != "user_id")
SET_S = ", ".join(f'"{c}" = s."{c}"' for c in COLS if c != "user_id")

def create_staging(target):
    return (f'SET LOCAL client_min_messages = warning; CREATE TEMP TABLE IF NOT EXISTS "etl_stage_t" ON COMMIT DELETE ROWS AS '
            f'SELECT {CL}, 0::bigint AS "_etl_seq" FROM {target} WITH NO DATA')

def merge_sql(kind, target):
    dedup = f'SELECT DISTINCT ON ({LAST}) {CL}, "_etl_seq" FROM "etl_stage_t" ORDER BY {LAST}, "_etl_seq" DESC'
    if kind == "onconflict":
        return (f'INSERT INTO {target} ({CL}) SELECT DISTINCT ON ({LAST}) {CL} FROM "etl_stage_t" '
                f'ORDER BY {LAST}, "_etl_seq" DESC ON CONFLICT ("user_id") DO UPDATE SET {UPD}')
    if kind == "onconflict_skip":
        # as onconflict, but a row equal to the one there is left alone
        # (locked, not rewritten): compared as text, so any type works
        tcols = ", ".join(f'{target}."{c}"' for c in COLS if c != "user_id")
        ecols = ", ".join(f'EXCLUDED."{c}"' for c in COLS if c != "user_id")
        return (f'INSERT INTO {target} ({CL}) SELECT DISTINCT ON ({LAST}) {CL} FROM "etl_stage_t" '
                f'ORDER BY {LAST}, "_etl_seq" DESC ON CONFLICT ("user_id") DO UPDATE SET {UPD} '
                f'WHERE ROW({tcols})::text IS DISTINCT FROM ROW({ecols})::text')
    if kind == "onconflict_nodistinct":
        return f'INSERT INTO {target} ({CL}) SELECT {CL} FROM "etl_stage_t" ON CONFLICT ("user_id") DO UPDATE SET {UPD}'
    if kind == "merge":
        ins = ", ".join(f's."{c}"' for c in COLS)
        return (f'MERGE INTO {target} t USING ({dedup}) s ON t."user_id" = s."user_id" '
                f'WHEN MATCHED THEN UPDATE SET {SET_S} WHEN NOT MATCHED THEN INSERT ({CL}) VALUES ({ins})')
    if kind == "update_insert":
        return (f'WITH s AS MATERIALIZED ({dedup}), '
                f'u AS (UPDATE {target} t SET {SET_S} FROM s WHERE t."user_id" = s."user_id" RETURNING t."user_id") '
                f'INSERT INTO {target} ({CL}) SELECT {CL} FROM s WHERE s."user_id" IS NULL OR NOT EXISTS '
                f'(SELECT 1 FROM {target} t WHERE t."user_id" = s."user_id")')
    raise ValueError(kind)


# ------------------------------------------------------------------- commit
class Committer:
    def __init__(self, mode, target, layout, merge="onconflict", per_tx=1, timing=None, merge_lock=False, stage_once=False):
        self.mode, self.target, self.layout, self.merge, self.per_tx = mode, target, layout, merge, per_tx
        self.timing, self.merge_lock, self.stage_once = timing, merge_lock, stage_once
        self.epoch_lock = False

    def t(self, name, t0):
        if self.timing is not None:
            now = time.perf_counter()
            self.timing[name] = self.timing.get(name, 0.0) + now - t0
            return now
        return t0

    def commit(self, conn, group):
        """One transaction for the batches of `group` (one batch, unless
        group commit is measured): rows of all, one lineage, one ledger
        flight."""
        t0 = time.perf_counter()
        cur = conn.cursor()
        cur.execute("BEGIN", prepare=False)
        staged = self.mode == "update"
        direct_upsert = self.mode == "upsert"
        t0 = self.t("begin", t0)
        if staged and self.merge_lock:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('etl.merge'), hashtext(%s))", (self.target,), prepare=True)
        for b in group:
            if staged:
                if not (self.stage_once and getattr(conn, "_staged", False)):
                    cur.execute(create_staging(self.target), prepare=False)
                    conn._staged = True
                t0 = self.t("staging create", t0)
                with cur.copy(f'COPY "etl_stage_t" ({CL}, "_etl_seq") FROM STDIN') as cp:
                    cp.write(b["staged"])
                t0 = self.t("copy", t0)
                cur.execute(merge_sql(self.merge, self.target), prepare=False)
                t0 = self.t("merge", t0)
            else:
                with cur.copy(f"COPY {self.target} ({CL}) FROM STDIN") as cp:
                    cp.write(b["data"])
                t0 = self.t("copy", t0)
        # the flight: key check, lineage, lock, SET LOCAL, seen, record
        rows = sum(len(b["data"]) for b in group)
        with conn.pipeline():
            if direct_upsert:
                cur.execute(KEY_IS_UNIQUE, (self.target, ["user_id"]), prepare=True)
            cur.execute(LINEAGE, ([], [], None, PIPE, "bench", sum(b["messages"] for b in group), 1000 * len(group), 0, "[]", None), prepare=True)
            if self.epoch_lock:
                cur.execute(LOCK_EPOCHS, dict(p=PIPE, epochs=pg_array(sorted({e for b in group for e in b["ledger"]["epochs"][1:-1].split(",")}, key=int))), prepare=True)
            else:
                cur.execute(LOCK, (PIPE,), prepare=True)
            for st in SETLOCAL.split("; "):
                cur.execute(st)
            seen_results = []
            for b in group:
                L = b["ledger"]
                if self.layout == "old":
                    cur.execute(SEEN_OLD, L, prepare=True)
                else:
                    cur.execute(SEEN_NEW, dict(L, parts=L["seen_parts"], lasts=L["seen_lasts"]), prepare=True)
                cur.execute(RECORD_OLD if self.layout == "old" else RECORD_NEW, L, prepare=True)
        t0 = self.t("flight (lineage+ledger)", t0)
        conn.commit()
        self.t("commit", t0)


def run_stream(dsn, committer, groups, errors):
    try:
        with psycopg.connect(dsn, autocommit=False) as conn:
            conn.prepare_threshold = 0
            for g in groups:
                committer.commit(conn, g)
    except Exception as e:  # noqa
        errors.append(e)


def through(committer, batches, flight=FLIGHT):
    groups = [batches[i:i + committer.per_tx] for i in range(0, len(batches), committer.per_tx)]
    streams = [groups[i::flight] for i in range(flight)]
    errors = []
    ths = [threading.Thread(target=run_stream, args=(DSN, committer, s, errors)) for s in streams]
    t = time.perf_counter()
    for th in ths: th.start()
    for th in ths: th.join()
    el = time.perf_counter() - t
    if errors:
        raise errors[0]
    return sum(len(b["data"]) for b in batches) and (len(batches) * len(batches[0]["data"].splitlines())) / el


def plain_copy(conn, lines, table="plain"):
    conn.execute(f"DROP TABLE IF EXISTS {S}.{table}; CREATE TABLE {S}.{table} (LIKE {S}.user_logins)")
    conn.commit()
    data = b"".join(lines)
    t = time.perf_counter()
    with conn.cursor().copy(f"COPY {S}.{table} ({CL}) FROM STDIN") as cp:
        cp.write(data)
    conn.commit()
    rate = len(lines) / (time.perf_counter() - t)
    conn.execute(f"DROP TABLE {S}.{table}"); conn.commit()
    return rate


def fresh_target(conn, name, keyed, filled_with=None):
    conn.execute(f"DROP TABLE IF EXISTS {S}.{name}; CREATE TABLE {S}.{name} (LIKE {S}.user_logins)")
    if keyed:
        conn.execute(f"ALTER TABLE {S}.{name} ADD PRIMARY KEY (user_id)")
    conn.commit()
    if filled_with is not None:
        with conn.cursor().copy(f"COPY {S}.{name} ({CL}) FROM STDIN") as cp:
            cp.write(b"".join(filled_with))
        conn.commit()
        conn.autocommit = True
        conn.execute(f"VACUUM ANALYZE {S}.{name}")
        conn.autocommit = False
    return f'"{S}"."{name}"'


def clear_ledger(conn):
    conn.execute(f"TRUNCATE {S}.receipts, {S}.batches"); conn.commit()
    conn.autocommit = True; conn.execute(f"VACUUM {S}.receipts"); conn.autocommit = False


def main():
    cases = sys.argv[1:]
    lines = rows_text(N)
    admin = psycopg.connect(DSN)
    setup(admin)
    print(f"# N={N} flight={FLIGHT} max_span={MAX_SPAN} row_bytes={ROW_BYTES}")
    plain = plain_copy(admin, lines)
    print(f"{'plain COPY (one transaction)':<58} | {plain:>9.0f} | 1.00", flush=True)
    cache = {}
    def batches(batch, per_msg, rate, layout):
        k = (batch, per_msg, rate, layout)
        if k not in cache:
            cache[k] = make_batches(lines, batch, per_msg, rate, layout)
        return cache[k]
    for case in cases:
        # case syntax: mode:batch:rate:layout[:merge[:per_tx[:flags]]]
        f = case.split(":")
        if f[0] == "failcopy":
            tgt = fresh_target(admin, "t", True, filled_with=lines)
            bs = batches(int(f[1]), 1, 10000, "old")[:50]
            t = time.perf_counter()
            for b in bs:
                try:
                    with admin.cursor().copy(f"COPY {tgt} ({CL}) FROM STDIN") as cp:
                        cp.write(b["data"])
                except psycopg.errors.UniqueViolation:
                    admin.rollback()
            print(f"{'a direct COPY meeting the key, rolled back (ms each)':<58} | {(time.perf_counter() - t) / len(bs) * 1000:>9.3f} |", flush=True)
            continue
        mode, batch, rate, layout = f[0], int(f[1]), int(f[2]), f[3]
        merge = f[4] if len(f) > 4 and f[4] else "onconflict"
        per_tx = int(f[5]) if len(f) > 5 and f[5] else 1
        flags = f[6].split(",") if len(f) > 6 else []
        if layout == "new":
            # the V20 layout on this schema's copy (idempotent enough: fresh setup per run)
            admin.execute(f"DROP TABLE IF EXISTS {S}.receipts"); admin.commit()
            setup_receipts_new(admin)
        else:
            admin.execute(f"DROP TABLE IF EXISTS {S}.receipts"); admin.commit()
            setup_receipts_old(admin)
        clear_ledger(admin)
        if "keyedcopy" in flags:
            tgt = fresh_target(admin, "keyed", True)
            t = time.perf_counter()
            with admin.cursor().copy(f"COPY {tgt} ({CL}) FROM STDIN") as cp:
                cp.write(b"".join(lines))
            admin.commit()
            r = N / (time.perf_counter() - t)
            print(f"{'plain COPY into a table keyed on user_id':<58} | {r:>9.0f} | {r / plain:.2f}", flush=True)
            continue
        if mode == "update":
            tgt = fresh_target(admin, "t", True, filled_with=lines)
        else:
            tgt = fresh_target(admin, "t", mode == "upsert")
        timing = {} if "timing" in flags else None
        flight = 1 if "serial" in flags else FLIGHT
        c = Committer(mode, tgt, layout, merge, per_tx, timing, merge_lock="mergelock" in flags, stage_once="stageonce" in flags)
        c.epoch_lock = "epochlock" in flags
        bs = batches(batch, 1, rate, layout)
        if "changed" in flags:
            bs = [dict(b, data=b["data"].replace(b"\tRU\t", b"\tUS\t"), staged=b["staged"].replace(b"\tRU\t", b"\tUS\t")) for b in bs]
        r = through(c, bs, flight)
        nrows = admin.execute(f"SELECT count(*) FROM {S}.receipts").fetchone()[0]
        label = f"{case} (ledger rows {nrows})"
        print(f"{label:<58} | {r:>9.0f} | {r / plain:.2f}", flush=True)
        if timing:
            nb = len(bs) / per_tx
            print("    per transaction, ms: " + ", ".join(f"{k} {v / nb * 1000:.3f}" for k, v in timing.items()), flush=True)
    if os.environ.get("KEEP") != "1":
        admin.execute(f"DROP SCHEMA {S} CASCADE"); admin.commit()


def setup_receipts_old(conn):
    conn.execute(f"""
    CREATE TABLE {S}.receipts (pipeline text NOT NULL, part bigint NOT NULL, batch_id bigint NOT NULL,
        message_ids text[] NOT NULL DEFAULT '{{}}', message_uuids uuid[] NOT NULL DEFAULT '{{}}');
    CREATE INDEX ON {S}.receipts (part, pipeline);
    CREATE INDEX ON {S}.receipts USING brin (batch_id);
    ALTER TABLE {S}.receipts SET (toast_tuple_target = 8160);
    ALTER TABLE {S}.receipts ALTER COLUMN message_ids SET STORAGE MAIN;
    ALTER TABLE {S}.receipts ALTER COLUMN message_uuids SET STORAGE MAIN;""")
    conn.commit()


def setup_receipts_fresh(conn, layout="old"):
    conn.execute(f"DROP TABLE IF EXISTS {S}.receipts"); conn.commit()
    (setup_receipts_new if layout == "new" else setup_receipts_old)(conn)
    clear_ledger(conn)


def setup_receipts_new(conn):
    setup_receipts_old(conn)
    migrate_v20(conn)


if __name__ == "__main__":
    main()
