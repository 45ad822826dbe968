//! The exit statuses every command keeps to, as README's "Exit codes"
//! lists them. A command that did several things (pipelines, test cases,
//! dead letters) ends with the worst status among them.
//!
//! Must not print anything: `main.rs` prints, then ends with one of these.

use std::process::ExitCode;

/// How a command ended, best first (`max` of two is the worse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything asked for was done.
    Ok,
    /// 1: the command ran, and part of its work failed: a batch or object
    /// that did not commit, a test case, a dead letter that failed again.
    Failed,
    /// 2: the command could not do what was asked: bad usage, a pipeline
    /// file or plugin that is not valid, a missing setting, a database or
    /// endpoint that refused, a pipeline that stopped on an error.
    Error,
}

/// 130: a second SIGINT or SIGTERM ended a stop at once (128 + SIGINT, as
/// a shell reports a process ended by Ctrl-C).
pub const ABANDONED: u8 = 130;

impl Exit {
    /// [`Exit::Ok`] unless `failed`, then [`Exit::Failed`].
    pub fn failed_if(failed: bool) -> Exit {
        if failed { Exit::Failed } else { Exit::Ok }
    }

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Error => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn the_worst_status_wins() {
        assert_eq!([Exit::Failed, Exit::Ok, Exit::Error, Exit::Failed].into_iter().max(), Some(Exit::Error));
        assert_eq!(Exit::Ok.max(Exit::Failed).code(), 1);
    }
}
