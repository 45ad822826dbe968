//! An OpenSSH `sshd` of a test's own on a free loopback port, with the
//! `internal-sftp` subsystem, a host key and a user key made for it. The
//! SFTP user is this user, or `nobody` when the tests run as root (root
//! reads any file, whatever its mode: an unreadable file would not be one).
//! Shared by the SFTP tests and the history checker.

use crate::services::unique;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// An `sshd` of the test's own, and what logging in to it takes.
pub(crate) struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub user: String,
    /// The folder files are served from.
    pub files: PathBuf,
    /// The user key the server accepts, and one it does not.
    pub key: PathBuf,
    pub other_key: PathBuf,
    /// A known-hosts file with the server's key, and one with another key.
    pub known_hosts: PathBuf,
    pub wrong_known_hosts: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (Debian's openssh-client; .ci/run installs openssh-server)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn sshd_binary() -> PathBuf {
    let found = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    found.expect("sshd is missing: install Debian's openssh-server (.ci/run does)")
}

impl Sshd {
    pub(crate) fn start() -> Sshd {
        let dir = std::env::temp_dir().join(unique("sshd"));
        let files = dir.join("outgoing");
        std::fs::create_dir_all(&files).unwrap();
        // Readable by the SFTP user, whoever it is.
        for d in [&dir, &files] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        for k in ["host_key", "user_key", "other_key", "other_host_key"] {
            keygen(&dir.join(k));
        }
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let line = |pub_file: &str| {
            let key = std::fs::read_to_string(dir.join(pub_file)).unwrap();
            let mut parts = key.split_whitespace();
            format!("[127.0.0.1]:{port} {} {}\n", parts.next().unwrap(), parts.next().unwrap())
        };
        std::fs::write(dir.join("known_hosts"), line("host_key.pub")).unwrap();
        std::fs::write(dir.join("wrong_known_hosts"), line("other_host_key.pub")).unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
             LogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // Run as root, sshd wants its privilege separation folder.
        if unsafe_is_root() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(sshd_binary())
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(log)
            .spawn()
            .unwrap();
        let user = if unsafe_is_root() {
            "nobody".to_string()
        } else {
            let out = Command::new("id").arg("-un").output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let sshd = Sshd {
            child,
            port,
            user,
            files,
            key: dir.join("user_key"),
            other_key: dir.join("other_key"),
            known_hosts: dir.join("known_hosts"),
            wrong_known_hosts: dir.join("wrong_known_hosts"),
            dir,
        };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(sshd.dir.join("sshd.log")).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(10), "sshd did not start: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// The variables of the shipped pipeline, pointed at this server.
    pub(crate) fn vars(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("SFTP_HOST", "127.0.0.1".to_string()),
            ("SFTP_PORT", self.port.to_string()),
            ("SFTP_USER", self.user.clone()),
            ("SFTP_KEY_FILE", self.key.display().to_string()),
            ("SFTP_KNOWN_HOSTS", self.known_hosts.display().to_string()),
            ("SFTP_DIR", self.files.display().to_string()),
            ("RAW_BUCKET", bucket.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.files.join(name), text).unwrap();
    }

    /// Sets the mode of `path` (below the served folder, or absolute).
    pub(crate) fn chmod(&self, path: &str, mode: u32) {
        let perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
        std::fs::set_permissions(self.files.join(path), perms).unwrap();
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
