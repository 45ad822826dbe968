//! `[source.sftp]` checked: the SFTP side here, the bucket and the
//! loading as a reconciling `[source.s3]` (`validate::s3_source`).
//!
//! Must not connect to anything.

use super::validate::{S3SourceConfig, range, s3_source};
use super::{CompareConfig, PortConfig, S3Config, S3ModeConfig, Secret, SftpConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checked `[source.sftp]`: where the files come from. Where they go
/// (bucket, prefix) and how they load are its [`S3SourceConfig`]'s.
#[derive(Debug, Clone, PartialEq)]
pub struct SftpSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SftpAuth,
    pub host_key: HostKeyCheck,
    /// The remote folder, without a trailing `/` (but `/` itself).
    pub dir: String,
    /// Matched against file names.
    pub glob: String,
    pub recursive: bool,
    pub stable: Duration,
    pub compare: Compare,
    pub mirror_deletes: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SftpAuth {
    Password(Secret),
    /// An OpenSSH private key file.
    Key {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HostKeyCheck {
    /// In this known-hosts file; `None`: `~/.ssh/known_hosts`.
    KnownHosts(Option<PathBuf>),
    /// This SHA-256 fingerprint (`SHA256:` and unpadded base64).
    Fingerprint(String),
    /// Any key (asked for with `check_host_key = false`).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// Size and modification time.
    Mtime,
    /// The content's SHA-256.
    Digest,
}

/// `[source.sftp]`: the SFTP side checked here, the bucket and the loading
/// as a reconciling `[source.s3]` would be. Relative key and known-hosts
/// paths are relative to the pipeline file's folder.
pub(super) fn sftp_source(s: SftpConfig, base: &Path) -> Result<S3SourceConfig, String> {
    let t = "[source.sftp]";
    for (key, v) in [("host", &s.host), ("user", &s.user), ("dir", &s.dir), ("bucket", &s.bucket)] {
        if v.trim().is_empty() {
            return Err(format!("{t} {key} is empty"));
        }
    }
    let port = match &s.port {
        PortConfig::Number(n) => Some(*n),
        PortConfig::Text(t) => t.trim().parse::<u16>().ok(),
    };
    let port = match port {
        Some(p) if p > 0 => p,
        _ => {
            let given = match &s.port {
                PortConfig::Number(n) => n.to_string(),
                PortConfig::Text(t) => format!("\"{t}\""),
            };
            return Err(format!("{t} port = {given} is not a port (1 to 65535)"));
        }
    };
    range(&format!("{t} stable_s"), s.stable_s, 0, 3_600)?;
    range(&format!("{t} timeout_s"), s.timeout_s, 1, 3_600)?;
    let path = |p: &str| base.join(p);
    let auth = match (s.password, s.private_key) {
        (Some(p), None) => {
            if s.private_key_passphrase.is_some() {
                return Err(format!("{t} private_key_passphrase goes with private_key, not password"));
            }
            SftpAuth::Password(p)
        }
        (None, Some(k)) if !k.trim().is_empty() => {
            SftpAuth::Key { path: path(&k), passphrase: s.private_key_passphrase }
        }
        (None, Some(_)) => return Err(format!("{t} private_key is empty")),
        (None, None) => return Err(format!("{t} needs `password` or `private_key`")),
        (Some(_), Some(_)) => return Err(format!("{t} give `password` or `private_key`, not both")),
    };
    let host_key = match (s.check_host_key, s.known_hosts, s.host_key_fingerprint) {
        (false, None, None) => HostKeyCheck::Off,
        (false, _, _) => {
            return Err(format!(
                "{t} check_host_key = false accepts any key: known_hosts and host_key_fingerprint would not be used"
            ));
        }
        (true, Some(_), Some(_)) => {
            return Err(format!("{t} give `known_hosts` or `host_key_fingerprint`, not both"));
        }
        (true, None, Some(f)) => {
            let ok = f.strip_prefix("SHA256:").is_some_and(|b| {
                b.len() == 43 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
            });
            if !ok {
                return Err(format!(
                    "{t} host_key_fingerprint must be `SHA256:` and 43 characters of base64, as `ssh-keygen -lf` \
                     prints it"
                ));
            }
            HostKeyCheck::Fingerprint(f)
        }
        (true, k, None) => HostKeyCheck::KnownHosts(k.map(|k| path(&k))),
    };
    if s.glob.is_empty() {
        return Err(format!("{t} glob is empty"));
    }
    globset::Glob::new(&s.glob).map_err(|e| format!("{t} glob `{}`: {e}", s.glob))?;
    let dir = match s.dir.trim_end_matches('/') {
        "" => "/".to_string(),
        d => d.to_string(),
    };
    let sftp = SftpSettings {
        host: s.host,
        port,
        user: s.user,
        auth,
        host_key,
        dir,
        glob: s.glob,
        recursive: s.recursive,
        // At least a second: modification times have whole seconds, and a
        // file rewritten within the second of its copy, at the same size,
        // would look unchanged forever (found by the history checker).
        stable: Duration::from_secs(s.stable_s.max(1)),
        compare: match s.compare {
            CompareConfig::Mtime => Compare::Mtime,
            CompareConfig::Digest => Compare::Digest,
        },
        mirror_deletes: s.mirror_deletes,
        timeout: Duration::from_secs(s.timeout_s),
    };
    let s3 = S3Config {
        mode: S3ModeConfig::Reconcile,
        queue: None,
        bucket: Some(s.bucket),
        prefix: s.prefix,
        interval_s: s.interval_s,
        range_objects: super::default_range_objects(),
        format: s.format,
        compression: s.compression,
        csv: s.csv,
        rows_per_commit: s.rows_per_commit,
        wait_time_s: 0,
        visibility_timeout_s: 2,
        max_receives: 1,
    };
    let mut config = s3_source(s3).map_err(|e| e.replace("[source.s3", t.trim_end_matches(']')))?;
    config.sftp = Some(sftp);
    Ok(config)
}
