//! A PgBouncer of a test's own (Debian's package, 1.18) on a free loopback
//! port, in front of the tests' PostgreSQL, in transaction mode: every
//! transaction of a client may run on another server connection, and
//! nothing of a session (prepared statements, session locks, settings)
//! lasts from one to the next. PgBouncer refuses to run as root, so as
//! root it runs as `nobody`.

use crate::services::{database_address, database_url, unique};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

pub(crate) struct Bouncer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn binary() -> PathBuf {
    let found = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    found.expect("pgbouncer is missing: install Debian's pgbouncer (cargo xtask test does)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Bouncer {
    /// Started, and answering.
    pub(crate) async fn start() -> Bouncer {
        let dir = std::env::temp_dir().join(unique("pgbouncer"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let (host, server_port) =
            database_address().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
        let user = user_of(&database_url());
        let port = free_port();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let ini = format!(
            "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {users}\n\
             pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 8\n\
             server_tls_sslmode = disable\n\
             logfile = {log}\npidfile = {pid}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        let config = dir.join("pgbouncer.ini");
        std::fs::write(&config, ini).unwrap();
        let mut command = Command::new(binary());
        command.arg(&config).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:\t0\t")) {
            // nobody
            command.uid(65534).gid(65534);
        }
        let child = command.spawn().unwrap();
        let bouncer = Bouncer { child, port, dir };
        let start = std::time::Instant::now();
        loop {
            if let Ok((client, conn)) = tokio_postgres::connect(&bouncer.url(), tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                if client.simple_query("SELECT 1").await.is_ok() {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "pgbouncer does not answer:\n{}", bouncer.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bouncer
    }

    /// The URL of the tests' database through this PgBouncer.
    pub(crate) fn url(&self) -> String {
        let url = database_url();
        let db = url.rsplit_once('/').map(|(_, d)| d.split('?').next().unwrap_or("postgres")).unwrap_or("postgres");
        format!("postgres://{}@127.0.0.1:{}/{db}?sslmode=disable", user_of(&url), self.port)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

/// The user of a `postgres://user@...` URL.
fn user_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let user = authority.rsplit_once('@').map_or("postgres", |(u, _)| u);
    user.split(':').next().unwrap_or("postgres").to_string()
}
