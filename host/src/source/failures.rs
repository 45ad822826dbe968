//! The units a source could not take (SFTP files, S3 objects of a
//! reconcile), remembered between passes: each is tried again after a
//! backoff that doubles (from its `first` wait up to [`LONGEST`]), or at
//! once when what it is seen as changed (someone fixed it: another size
//! and modification time, another object version), and its reason is
//! logged once, not every pass.
//!
//! Must not do any I/O: the passes ask it and tell it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The first wait of an SFTP file that failed.
pub const FIRST: Duration = Duration::from_secs(30);
/// The longest wait between two tries of a unit.
pub const LONGEST: Duration = Duration::from_secs(3600);

/// Failed units by name (a path, a key); `S` is what a unit is seen as.
#[derive(Debug)]
pub struct Failures<S = (u64, i64)> {
    by_path: HashMap<String, Failure<S>>,
    /// The wait after a first failure.
    first: Duration,
}

impl<S> Default for Failures<S> {
    fn default() -> Self {
        Failures { by_path: HashMap::new(), first: FIRST }
    }
}

#[derive(Debug)]
struct Failure<S> {
    reason: String,
    /// Failed tries in a row.
    tries: u32,
    next: Instant,
    /// What the unit was seen as at the last try (`None` when unknown).
    seen: Option<S>,
}

impl<S: PartialEq> Failures<S> {
    /// Failures whose first wait is `first`.
    pub fn new(first: Duration) -> Self {
        Failures { by_path: HashMap::new(), first }
    }

    /// Whether to try the unit `path`, seen as `now_seen`, at `now`.
    pub fn due(&self, path: &str, now_seen: Option<&S>, now: Instant) -> bool {
        self.by_path.get(path).is_none_or(|f| now >= f.next || (now_seen.is_some() && f.seen.as_ref() != now_seen))
    }

    /// Remembers a failed try; `true` when its reason is new for the unit
    /// (log it then, and only then, as a warning).
    pub fn failed(&mut self, path: &str, seen: Option<S>, reason: &str, now: Instant) -> bool {
        let first = self.first;
        let f = self.by_path.entry(path.to_string()).or_insert_with(|| Failure {
            reason: String::new(),
            tries: 0,
            next: now,
            seen: None,
        });
        f.tries += 1;
        f.seen = seen;
        f.next = now + doubling(first, f.tries, LONGEST);
        let new = f.reason != reason;
        if new {
            reason.clone_into(&mut f.reason);
        }
        new
    }

    /// Forgets the unit's failures: it was taken. How many tries failed.
    pub fn succeeded(&mut self, path: &str) -> Option<u32> {
        self.by_path.remove(path).map(|f| f.tries)
    }

    /// Forgets the units no longer listed.
    pub fn keep_only(&mut self, listed: &HashSet<&str>) {
        self.by_path.retain(|p, _| listed.contains(p.as_str()));
    }
}

pub use crate::backoff::doubling;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_an_hour() {
        assert_eq!(doubling(FIRST, 1, LONGEST), FIRST);
        assert_eq!(doubling(FIRST, 2, LONGEST), FIRST * 2);
        assert_eq!(doubling(FIRST, 4, LONGEST), FIRST * 8);
        assert_eq!(doubling(FIRST, 8, LONGEST), LONGEST);
        assert_eq!(doubling(FIRST, u32::MAX, LONGEST), LONGEST);
    }

    #[test]
    fn a_failed_file_waits_its_backoff_unless_it_changed() {
        let (mut f, t0, seen) = (Failures::<(u64, i64)>::default(), Instant::now(), Some((10, 100)));
        assert!(f.due("/a", seen.as_ref(), t0), "never failed");
        f.failed("/a", seen, "cannot open", t0);
        assert!(!f.due("/a", seen.as_ref(), t0 + FIRST / 2));
        assert!(f.due("/a", seen.as_ref(), t0 + FIRST));
        assert!(f.due("/a", Some(&(11, 100)), t0 + FIRST / 2), "changed: at once");
        assert!(!f.due("/a", None, t0 + FIRST / 2), "unknown now: not a change");
        f.failed("/a", seen, "cannot open", t0 + FIRST);
        assert!(!f.due("/a", seen.as_ref(), t0 + FIRST * 2), "the second wait is twice as long");
        assert!(f.due("/a", seen.as_ref(), t0 + FIRST * 3));
        assert!(f.due("/b", seen.as_ref(), t0), "one file's failure is its own");
    }

    #[test]
    fn a_reason_is_new_once_and_a_success_forgets() {
        let (mut f, t) = (Failures::<(u64, i64)>::default(), Instant::now());
        assert!(f.failed("/a", None, "cannot open", t));
        assert!(!f.failed("/a", None, "cannot open", t), "the same reason again: not logged again");
        assert!(f.failed("/a", None, "cannot read", t), "a new reason");
        assert_eq!(f.succeeded("/a"), Some(3));
        assert_eq!(f.succeeded("/a"), None);
        assert!(f.failed("/a", None, "cannot read", t), "after a success, new again");
    }

    #[test]
    fn files_no_longer_listed_are_forgotten() {
        let (mut f, t) = (Failures::<(u64, i64)>::default(), Instant::now());
        f.failed("/a", None, "x", t);
        f.failed("/b", None, "x", t);
        f.keep_only(&HashSet::from(["/b"]));
        assert!(f.due("/a", None, t));
        assert!(!f.due("/b", None, t));
    }
}
