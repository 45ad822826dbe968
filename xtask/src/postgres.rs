//! The PostgreSQL the demo and the tests use, in this order: `DATABASE_URL`
//! when set; a private server when `XTASK_POSTGRES=private`; whatever
//! answers at 127.0.0.1:5432 (the machine's own); else a private server.
//!
//! The private server runs the machine's binaries (Debian's `postgresql`,
//! or those in `XTASK_PG_BINDIR`) on a data folder in `target/postgres/`,
//! kept from one run to the next, as an unprivileged user when xtask runs as
//! root (initdb and the server refuse root): `postgres` where the machine
//! has that user, else `nobody`. It offers what the tests assume of the
//! machine's server: TLS with a certificate for `localhost` made on the
//! spot, trust for user `postgres` on 127.0.0.1, databases `postgres` and
//! `test`, autovacuum off. It listens on 127.0.0.1:5432 when that port is
//! free, else on a free port, and stops when xtask ends (or with Ctrl-C:
//! it is in xtask's process group).
//!
//! xtask never starts the machine's own cluster: that is the machine's
//! service, and its authentication and TLS are not xtask's to know.

use crate::packages::euid;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which PostgreSQL a command uses.
pub enum Choice {
    /// A server that answers already.
    Url(String),
    /// One of xtask's own.
    Private,
}

/// Decides which PostgreSQL to use; says at once when `DATABASE_URL`
/// does not answer, before a build of several minutes.
pub fn choose() -> Result<Choice, String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        return match host_port(&url) {
            Some(addr) if !answers(&addr) => {
                Err(format!("PostgreSQL does not answer at {addr} (DATABASE_URL): start it, or unset DATABASE_URL"))
            }
            _ => Ok(Choice::Url(url)),
        };
    }
    match std::env::var("XTASK_POSTGRES").as_deref() {
        Ok("private") => return Ok(Choice::Private),
        Ok("" | "auto") | Err(_) => {}
        Ok(other) => return Err(format!("XTASK_POSTGRES={other}: the value is `private` (or unset)")),
    }
    Ok(if answers("127.0.0.1:5432") { Choice::Url(DEFAULT_URL.into()) } else { Choice::Private })
}

fn answers(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .is_ok_and(|mut all| all.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok()))
}

/// `host:port` of a `postgres://[user[:pw]@]host[:port]/...` URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    let has_port = host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !host.ends_with(']');
    Some(if has_port { host.to_string() } else { format!("{host}:5432") })
}

/// The newest of the machine's PostgreSQL installations
/// (`/usr/lib/postgresql/N/bin`, as Debian lays them out).
pub fn machine_bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The binaries a private server runs: `XTASK_PG_BINDIR`, else the
/// machine's.
pub fn bindir() -> Option<PathBuf> {
    std::env::var_os("XTASK_PG_BINDIR").map(PathBuf::from).or_else(machine_bindir)
}

/// The PostgreSQL in use; a private one stops when this is dropped.
pub struct Postgres {
    pub url: String,
    server: Option<Server>,
}

impl Postgres {
    pub fn start(choice: Choice, target: &Path) -> Result<Postgres, String> {
        match choice {
            Choice::Url(url) => Ok(Postgres { url, server: None }),
            Choice::Private => {
                let server = Server::start(target)?;
                let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
                println!("xtask: a private PostgreSQL at {url} (data and log in {})", server.base.display());
                Ok(Postgres { url, server: Some(server) })
            }
        }
    }

    pub fn is_private(&self) -> bool {
        self.server.is_some()
    }

    /// What the demo's and the tests' processes are given: `DATABASE_URL`,
    /// and for a private server `PG_RESTART_COMMAND`, the shell command with
    /// which the crash test crashes and restarts it.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("DATABASE_URL".to_string(), self.url.clone())];
        if let Some(s) = &self.server {
            env.push(("PG_RESTART_COMMAND".to_string(), s.restart_command()));
        }
        env
    }

    /// Waits until the private server stops (with Ctrl-C, or `pg_ctl
    /// stop`), through restarts by `PG_RESTART_COMMAND`.
    pub fn wait(&mut self) {
        let Some(s) = &mut self.server else { return };
        let _ = s.child.wait();
        let mut gone = 0;
        while gone < 6 {
            gone = if s.data().join("postmaster.pid").exists() { 0 } else { gone + 1 };
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The unprivileged user a private server runs as when xtask is root.
#[derive(Clone)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

fn user() -> Result<Option<User>, String> {
    if euid() != Some(0) {
        return Ok(None);
    }
    let id = |name: &str, flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    for name in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id(name, "-u"), id(name, "-g")) {
            return Ok(Some(User { name: name.to_string(), uid, gid }));
        }
    }
    Err("running as root, and the machine has neither a `postgres` nor a `nobody` user to run PostgreSQL as \
         (initdb and the server refuse root): create one, e.g. `useradd --system postgres`"
        .into())
}

/// A private PostgreSQL server, a child of xtask.
struct Server {
    child: Child,
    port: u16,
    bin: PathBuf,
    base: PathBuf,
    user: Option<User>,
}

impl Server {
    fn start(target: &Path) -> Result<Server, String> {
        let bin = bindir().ok_or("no PostgreSQL binaries (/usr/lib/postgresql/N/bin, or XTASK_PG_BINDIR)")?;
        let user = user()?;
        let base = base_dir(target, user.as_ref())?;
        let data = base.join("data");
        let as_user = |program: &str| command(&bin.join(program), &base, user.as_ref());
        // A server left by an xtask that was killed.
        if data.join("postmaster.pid").exists() && quiet(as_user("pg_ctl").arg("status").arg("-D").arg(&data)) {
            quiet(as_user("pg_ctl").args(["stop", "-m", "fast", "-w", "-D"]).arg(&data));
        }
        let fresh = !reusable(&bin, &data, user.as_ref());
        if fresh {
            initdb(&bin, &base, user.as_ref())?;
        }
        let port = port()?;
        write_config(&data, port, &base, user.as_ref())?;
        let log = base.join("server.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        own(&log, user.as_ref())?;
        let child = as_user("postgres")
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.join("postgres").display()))?;
        let mut server = Server { child, port, bin, base, user };
        server.wait_ready()?;
        if server.psql("SELECT 1 FROM pg_database WHERE datname = 'test'")?.is_empty() {
            server.psql("CREATE DATABASE test")?;
        }
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    /// Until the server says `ready` in its `postmaster.pid` (the 8th line;
    /// the 1st is its pid: not a stale file of a killed server's).
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let ours = self.child.id().to_string();
        loop {
            let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
            if pid.lines().next() == Some(ours.as_str()) && pid.lines().nth(7).is_some_and(|s| s.trim() == "ready") {
                return Ok(());
            }
            let exited = self.child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                let how = exited.map_or("did not become ready in 60 s".to_string(), |s| format!("exited ({s})"));
                return Err(format!("the private PostgreSQL {how}; its log:\n{}", tail.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql`; its rows, unaligned.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-d", "postgres", "-p", &self.port.to_string(), "-c", sql])
            .output()
            .map_err(|e| format!("{}: {e}", psql.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("`{sql}` on the private PostgreSQL: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// `pg_ctl restart` in immediate mode (as if the server crashed), as
    /// the server's user, for `sh -c`.
    fn restart_command(&self) -> String {
        let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let runuser = self.user.as_ref().map_or(String::new(), |u| format!("runuser -u {} -- ", u.name));
        format!(
            "{runuser}{} restart -m immediate -w -D {} -l {}",
            q(&self.bin.join("pg_ctl")),
            q(&self.data()),
            q(&self.base.join("server.log"))
        )
    }
}

impl Drop for Server {
    /// Stops the server, whether it is still the child started here or
    /// one that `PG_RESTART_COMMAND` started since.
    fn drop(&mut self) {
        let stop = command(&self.bin.join("pg_ctl"), &self.base, self.user.as_ref())
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stop.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `program` run as `user` (when given), in `dir`.
fn command(program: &Path, dir: &Path, user: Option<&User>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    if let Some(u) = user {
        // std drops root's supplementary groups when it sets the uid.
        cmd.uid(u.uid).gid(u.gid);
    }
    cmd
}

/// Runs `cmd` with its output discarded: did it succeed?
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn own(path: &Path, user: Option<&User>) -> Result<(), String> {
    match user {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), u.name)),
        None => Ok(()),
    }
}

/// `target/postgres`, owned by the server's user; a folder in the temp
/// folder when that user cannot reach `target/`.
fn base_dir(target: &Path, user: Option<&User>) -> Result<PathBuf, String> {
    let mut base = target.join("postgres");
    if let Some(u) = user
        && !reachable(target, u)
    {
        base = std::env::temp_dir().join(format!("xtask-postgres-{}", std::process::id()));
    }
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    own(&base, user)?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    Ok(base)
}

/// Can `user` pass through every folder down to `dir`?
fn reachable(dir: &Path, user: &User) -> bool {
    dir.ancestors().all(|d| {
        let Ok(m) = std::fs::metadata(d) else { return true };
        let mode = m.mode();
        mode & 0o001 != 0 || (m.uid() == user.uid && mode & 0o100 != 0) || (m.gid() == user.gid && mode & 0o010 != 0)
    })
}

/// A data folder of the binaries' major version, owned by the user, is
/// kept (with the demo's rows); another one is made anew.
fn reusable(bin: &Path, data: &Path, user: Option<&User>) -> bool {
    let owner = user.map(|u| u.uid).or_else(euid);
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    let ours = std::fs::metadata(data).is_ok_and(|m| Some(m.uid()) == owner);
    ours && !version.trim().is_empty() && major_version(bin).is_some_and(|v| v == version.trim())
}

/// `15` of `postgres (PostgreSQL) 15.20 (Debian ...)`.
fn major_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin.join("postgres")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split(") ").nth(1)?.split_whitespace().next()?;
    Some(version.split('.').next()?.to_string())
}

fn initdb(bin: &Path, base: &Path, user: Option<&User>) -> Result<(), String> {
    let data = base.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }
    println!("xtask: initdb {}", data.display());
    let out = command(&bin.join("initdb"), base, user)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| format!("{}: {e}", bin.join("initdb").display()))?;
    if !out.status.success() {
        return Err(format!("initdb failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    certificate(base, user)?;
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
    text.push_str("\n# Written by cargo xtask at each start.\ninclude 'xtask.conf'\n");
    std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))
}

/// A self-signed certificate for `localhost` (not a CA: rustls takes it as
/// its own root for `verify-full`), as the machine's server has.
fn certificate(base: &Path, user: Option<&User>) -> Result<(), String> {
    let openssl = crate::packages::on_path("openssl").ok_or("openssl is missing (Debian's `openssl`)")?;
    let out = command(&openssl, base, user)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "server.key", "-out", "server.crt", "-days", "3650", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::set_permissions(base.join("server.key"), std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())
}

/// 5432 when free (so the defaults of README and the tests fit), else any.
fn port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:5432")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn write_config(data: &Path, port: u16, base: &Path, user: Option<&User>) -> Result<(), String> {
    let q = |p: PathBuf| p.display().to_string().replace('\'', "''");
    let text = format!(
        "listen_addresses = '127.0.0.1'\nport = {port}\n\
         # No Unix socket: its path could be too long, and nothing here uses it.\n\
         unix_socket_directories = ''\n\
         ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
         # As on the machine's server (the sink benchmark vacuums itself).\nautovacuum = off\n",
        q(base.join("server.crt")),
        q(base.join("server.key")),
    );
    let path = data.join("xtask.conf");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    own(&path, user)
}
