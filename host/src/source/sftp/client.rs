//! One SSH connection and its SFTP session to a pipeline's server: the
//! server's host key checked (a known-hosts file, a pinned fingerprint,
//! or, asked for, not at all), then a password or a private key; the
//! remote folder listed (its subfolders too, if asked); files stat'ed,
//! read as streams and digested.
//!
//! Errors name the server and the user (`sftp://USER@HOST:PORT`), never a
//! password. Those the server's or the file's owner must fix (a refused
//! login, an unknown or changed host key, an unreadable key file) are
//! [`SftpError::Refused`]; the rest are tried again on the next pass.
//!
//! Must not copy or record anything: [`super::pass`] does.

use crate::config::{HostKeyCheck, SftpAuth, SftpSettings};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The server or the pipeline's settings refuse this host: it stops.
    #[error("sftp://{at}: {why}")]
    Refused { at: String, why: String },
    /// The network, the server or a file failed: the next pass tries again.
    #[error("sftp://{at}: {why}")]
    Failed { at: String, why: String },
}

impl SftpError {
    pub fn refused(&self) -> bool {
        matches!(self, SftpError::Refused { .. })
    }
}

/// A file of the remote folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    /// Its absolute path on the server.
    pub path: String,
    /// Its path below the folder (the object key's last part).
    pub name: String,
    pub size: u64,
    /// Seconds since the epoch, as the server gives them.
    pub mtime: i64,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<RemoteFile>,
    /// Entries that are there but could not be looked at this time: not
    /// files to copy, and not gone either.
    pub unknown: Vec<Unknown>,
}

/// A listed entry whose kind, size and time are unknown this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    pub path: String,
    pub why: String,
}

/// A connected, logged-in SFTP session.
pub struct Remote {
    pub at: String,
    sftp: SftpSession,
    ssh: russh::client::Handle<Checker>,
}

/// Checks the server's host key; says why it refused one.
struct Checker {
    host: String,
    port: u16,
    check: HostKeyCheck,
    refusal: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let refuse = |why: String| {
            *self.refusal.lock().expect("not poisoned") = Some(why);
            Ok(false)
        };
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                if self.check == HostKeyCheck::Off {
                    return Ok(true);
                }
                return refuse(
                    "the server offers a host certificate; host certificates are not supported: pin its key".into(),
                );
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let shown = format!("{} {fingerprint}", key.algorithm());
        match &self.check {
            HostKeyCheck::Off => Ok(true),
            HostKeyCheck::Fingerprint(pinned) if *pinned == fingerprint => Ok(true),
            HostKeyCheck::Fingerprint(pinned) => {
                refuse(format!("the server's host key ({shown}) is not the pinned host_key_fingerprint {pinned}"))
            }
            HostKeyCheck::KnownHosts(file) => {
                let file = match file {
                    Some(f) => f.clone(),
                    None => match std::env::home_dir() {
                        Some(home) => home.join(".ssh").join("known_hosts"),
                        None => return refuse("no known-hosts file is set and there is no home folder".into()),
                    },
                };
                let shown_file = file.display();
                if !file.is_file() {
                    return refuse(format!("the known-hosts file {shown_file} does not exist"));
                }
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, &file) {
                    Ok(true) => Ok(true),
                    Ok(false) => refuse(format!(
                        "the server's host key ({shown}) is not in {shown_file}: add it (`ssh-keyscan -p {} {} >> \
                         {shown_file}`, after checking the fingerprint with the server's owner) or pin it with \
                         host_key_fingerprint",
                        self.port, self.host
                    )),
                    Err(russh::keys::Error::KeyChanged { line }) => refuse(format!(
                        "the server's host key ({shown}) differs from line {line} of {shown_file}: the key changed, \
                         or something is in between"
                    )),
                    Err(e) => refuse(format!("cannot read the known-hosts file {shown_file}: {e}")),
                }
            }
        }
    }
}

impl Remote {
    /// Connects, checks the host key and logs in, within the settings'
    /// timeout.
    pub async fn connect(s: &SftpSettings) -> Result<Remote, SftpError> {
        let at = format!("{}@{}:{}", s.user, s.host, s.port);
        match tokio::time::timeout(s.timeout, Self::connect_on(s, &at)).await {
            Ok(r) => r,
            Err(_) => Err(SftpError::Failed {
                at,
                why: format!("no answer within {} s (connect, host key, login)", s.timeout.as_secs()),
            }),
        }
    }

    async fn connect_on(s: &SftpSettings, at: &str) -> Result<Remote, SftpError> {
        let failed = |why: String| SftpError::Failed { at: at.to_string(), why };
        let refused = |why: String| SftpError::Refused { at: at.to_string(), why };
        // A key that cannot be read is the pipeline's to fix: before connecting.
        let key = match &s.auth {
            SftpAuth::Key { path, passphrase } => {
                let pass = passphrase.as_ref().map(|p| p.0.as_str());
                let key = russh::keys::load_secret_key(path, pass)
                    .map_err(|e| refused(format!("cannot use the private key {}: {e}", path.display())))?;
                Some((Arc::new(key), path.display().to_string()))
            }
            SftpAuth::Password(_) => None,
        };
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(s.timeout.max(std::time::Duration::from_secs(5)) * 2),
            ..Default::default()
        });
        let refusal = Arc::new(Mutex::new(None));
        let checker =
            Checker { host: s.host.clone(), port: s.port, check: s.host_key.clone(), refusal: refusal.clone() };
        let mut ssh = match russh::client::connect(config, (s.host.as_str(), s.port), checker).await {
            Ok(h) => h,
            Err(e) => {
                return Err(match refusal.lock().expect("not poisoned").take() {
                    Some(why) => refused(why),
                    None => failed(format!("cannot connect: {e}")),
                });
            }
        };
        let user = s.user.clone();
        let auth = match (&s.auth, key) {
            (SftpAuth::Password(p), _) => ssh.authenticate_password(user, p.0.clone()).await.map(|r| {
                r.success().then_some(()).ok_or_else(|| format!("the server refused the password of `{}`", s.user))
            }),
            (SftpAuth::Key { .. }, Some((key, path))) => {
                let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
                ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash)).await.map(|r| {
                    r.success()
                        .then_some(())
                        .ok_or_else(|| format!("the server refused the key {path} for `{}`", s.user))
                })
            }
            (SftpAuth::Key { .. }, None) => unreachable!("the key was read above"),
        };
        match auth {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(refused(why)),
            Err(e) => return Err(failed(format!("login failed: {e}"))),
        }
        let channel = ssh.channel_open_session().await.map_err(|e| failed(format!("cannot open a session: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| failed(format!("the server has no sftp subsystem: {e}")))?;
        let sftp =
            SftpSession::new(channel.into_stream()).await.map_err(|e| failed(format!("cannot start SFTP: {e}")))?;
        sftp.set_timeout(s.timeout.as_secs().max(1));
        Ok(Remote { at: at.to_string(), sftp, ssh })
    }

    fn failed(&self, what: &str, path: &str, e: impl std::fmt::Display) -> SftpError {
        SftpError::Failed { at: self.at.clone(), why: format!("{what} `{path}`: {e}") }
    }

    /// The files under `s.dir` whose names match `glob` (in its subfolders
    /// too with `recursive`), in byte order of their names. Symbolic links
    /// to files count as the files; links to folders are not followed; a
    /// link whose target cannot be looked at this time is [`Unknown`].
    pub async fn list(&self, s: &SftpSettings, glob: &globset::GlobMatcher) -> Result<Listing, SftpError> {
        let mut listing = Listing::default();
        let mut folders = vec![(s.dir.clone(), String::new())];
        while let Some((dir, below)) = folders.pop() {
            let entries = self.sftp.read_dir(dir.as_str()).await.map_err(|e| self.failed("cannot list", &dir, e))?;
            for entry in entries {
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = join(&dir, &name);
                let rel = if below.is_empty() { name.clone() } else { format!("{below}/{name}") };
                let mut meta = entry.metadata();
                if meta.is_symlink() {
                    match self.sftp.metadata(path.as_str()).await {
                        Ok(m) => meta = m,
                        Err(e) if glob.is_match(&name) => {
                            let why = self.failed("cannot look at the target of the link", &path, e).to_string();
                            listing.unknown.push(Unknown { path, why });
                            continue;
                        }
                        Err(_) => continue,
                    }
                }
                if meta.is_dir() {
                    if s.recursive && !entry.metadata().is_symlink() {
                        folders.push((path, rel));
                    }
                } else if meta.is_regular() && glob.is_match(&name) {
                    let (size, mtime) = (meta.size.unwrap_or(0), meta.mtime.map_or(0, i64::from));
                    listing.files.push(RemoteFile { path, name: rel, size, mtime });
                }
            }
        }
        listing.files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(listing)
    }

    /// The file's size and modification time now; `None` if it is gone.
    pub async fn stat(&self, path: &str) -> Result<Option<(u64, i64)>, SftpError> {
        match self.sftp.metadata(path).await {
            Ok(m) => Ok(Some((m.size.unwrap_or(0), m.mtime.map_or(0, i64::from)))),
            Err(russh_sftp::client::error::Error::Status(st))
                if st.status_code == russh_sftp::protocol::StatusCode::NoSuchFile =>
            {
                Ok(None)
            }
            Err(e) => Err(self.failed("cannot stat", path, e)),
        }
    }

    /// The file, to read from its start.
    pub async fn open(&self, path: &str) -> Result<russh_sftp::client::fs::File, SftpError> {
        self.sftp.open(path).await.map_err(|e| self.failed("cannot open", path, e))
    }

    /// The hex SHA-256 of the file's content, streamed.
    pub async fn digest(&self, path: &str) -> Result<(String, u64), SftpError> {
        use sha2::Digest;
        use tokio::io::AsyncReadExt;
        let mut file = self.open(path).await?;
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        loop {
            let read = file.read(&mut buf).await.map_err(|e| self.failed("cannot read", path, e))?;
            if read == 0 {
                return Ok((hex::encode(hash.finalize()), n));
            }
            hash.update(&buf[..read]);
            n += read as u64;
        }
    }

    /// Says goodbye (the server logs a clean end).
    pub async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }

    /// Whether the connection is gone (every request would fail).
    pub fn closed(&self) -> bool {
        self.ssh.is_closed()
    }

    pub fn read_error(&self, path: &str, e: impl std::fmt::Display) -> SftpError {
        self.failed("cannot read", path, e)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_with_one_slash() {
        assert_eq!(join("/", "a.csv"), "/a.csv");
        assert_eq!(join("/out", "a.csv"), "/out/a.csv");
        assert_eq!(join("/out/", "a.csv"), "/out/a.csv");
    }

    #[test]
    fn errors_name_the_server_and_the_user_and_say_which_stop() {
        let e = SftpError::Refused { at: "etl@sftp.example:2222".into(), why: "the server refused".into() };
        assert_eq!(e.to_string(), "sftp://etl@sftp.example:2222: the server refused");
        assert!(e.refused());
        assert!(!SftpError::Failed { at: String::new(), why: String::new() }.refused());
    }
}
