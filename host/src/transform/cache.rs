//! The compiled-component cache: native code that the host runs without
//! checking it again, so the folder is trusted only when it is the host's
//! own. It is created private (0700); one that is not a plain folder of
//! this user's, or that its group or others can write, is not used (a
//! warning says why, and components are compiled each time). Files are
//! written without following symlinks (a new file, then a rename), read
//! only if they are plain files of this user's, touched when used, and
//! removed once no one used them for [`EVICT_AFTER`].
//!
//! Must not compile: the engine does, and names the files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Artifacts unused this long are removed when an engine opens the cache.
pub const EVICT_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// An opened cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a folder or file is not trusted, if it is not.
fn untrusted(meta: &fs::Metadata, what: &str) -> Option<String> {
    if meta.file_type().is_symlink() {
        return Some(format!("it is a symlink, not a {what}"));
    }
    if meta.uid() != uid() {
        return Some(format!("it belongs to user {}, not to this one ({})", meta.uid(), uid()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Some(format!("its group or others may write it (mode {:o})", meta.permissions().mode() & 0o777));
    }
    None
}

impl Cache {
    /// The cache at `dir` (created if missing), or `None` with a warning
    /// when it cannot be trusted or made.
    pub fn open(dir: &Path) -> Option<Cache> {
        if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot create the compiled-component cache; compiling each time");
            return None;
        }
        let refused = match fs::symlink_metadata(dir) {
            Ok(meta) if !meta.is_dir() && !meta.file_type().is_symlink() => Some("it is not a folder".to_string()),
            Ok(meta) => untrusted(&meta, "folder"),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refused {
            tracing::warn!(folder = %dir.display(), reason = %why, "the compiled-component cache is not used (its files would run as native code); compiling each time");
            return None;
        }
        let cache = Cache { dir: dir.to_path_buf() };
        cache.evict(EVICT_AFTER);
        Some(cache)
    }

    /// The artifact `name`, if it is there and trusted; marked as used.
    pub fn get(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || untrusted(&meta, "file").is_some() {
            let _ = fs::remove_file(&path);
            return None;
        }
        if let Ok(f) = fs::File::options().write(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(path)
    }

    /// Stores `bytes` as `name`: a new private file (never through a
    /// symlink, never over another file), then renamed into place.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let tmp = self.dir.join(format!("{name}.tmp{}-{}", std::process::id(), rand::random::<u32>()));
        let written = fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes));
        match written {
            Ok(()) => {
                if fs::rename(&tmp, self.dir.join(name)).is_err() {
                    let _ = fs::remove_file(&tmp);
                }
            }
            Err(e) => {
                tracing::debug!(file = %tmp.display(), error = %e, "could not write a compiled component");
                let _ = fs::remove_file(&tmp);
            }
        }
    }

    /// Removes artifacts (and leftover temporary files) not used for `age`.
    fn evict(&self, age: Duration) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.contains(".cwasm") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let unused = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if unused > age {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cache-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_folder_others_can_write_is_not_used() {
        let dir = folder("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Cache::open(&dir).is_none());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Cache::open(&dir).is_some());
        let link = folder("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(Cache::open(&link).is_none(), "a symlinked folder is not trusted");
        let new = folder("new").join("inner");
        Cache::open(&new).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o700, "created private");
    }

    #[test]
    fn writes_never_follow_a_symlink_and_reads_take_only_plain_files() {
        let dir = folder("links");
        let cache = Cache::open(&dir).unwrap();
        let victim = dir.with_extension("victim");
        fs::write(&victim, b"keep").unwrap();
        // A symlink where the artifact goes: replaced, not written through.
        std::os::unix::fs::symlink(&victim, dir.join("a.cwasm")).unwrap();
        assert!(cache.get("a.cwasm").is_none(), "a symlink is not read");
        std::os::unix::fs::symlink(&victim, dir.join("b.cwasm")).unwrap();
        cache.put("b.cwasm", b"compiled");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(dir.join("b.cwasm")).unwrap(), b"compiled");
        assert!(cache.get("b.cwasm").is_some());
        let mode = fs::metadata(dir.join("b.cwasm")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn artifacts_unused_for_long_are_evicted() {
        let dir = folder("evict");
        let cache = Cache::open(&dir).unwrap();
        cache.put("old.cwasm", b"x");
        cache.put("new.cwasm", b"y");
        let long_ago = SystemTime::now() - EVICT_AFTER - Duration::from_secs(60);
        fs::File::options().write(true).open(dir.join("old.cwasm")).unwrap().set_modified(long_ago).unwrap();
        Cache::open(&dir).unwrap();
        assert!(!dir.join("old.cwasm").exists());
        assert!(dir.join("new.cwasm").exists());
    }
}
