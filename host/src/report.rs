//! An error and its causes as one line, each cause once.
//!
//! The host's own errors say their cause in their message and are not its
//! `source` (ARCHITECTURE.md, "Each cause once"); errors of other crates
//! may keep their reason in their source only (tokio-postgres's `error
//! connecting to server`), or say it and return it too. [`report`] walks
//! the chain and leaves out a cause the text holds already, so that
//! `main.rs` and the logs print every cause once.

use std::error::Error;

/// `e` and each of its causes the text does not hold yet, joined by `: `
/// (an `anyhow::Error`'s contexts and causes: `report(e.as_ref())`).
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if more.contains(&text) {
            // The cause says everything the text says, and more.
            text = more;
        } else if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {0}: {1}")]
    struct Embeds(&'static str, std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct EmbedsAndSources {
        path: &'static str,
        source: std::io::Error,
    }

    fn missing() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn a_cause_in_the_message_is_not_repeated() {
        let e = EmbedsAndSources { path: "a.toml", source: missing() };
        assert_eq!(report(&e), "cannot read a.toml: entity not found");
        assert_eq!(report(&Embeds("a.toml", missing())), "cannot read a.toml: entity not found");
    }

    #[test]
    fn contexts_and_causes_join_once_each() {
        let e = anyhow::Error::new(EmbedsAndSources { path: "a.toml", source: missing() }).context("checking a.toml");
        assert_eq!(report(e.as_ref()), "checking a.toml: cannot read a.toml: entity not found");
        // What `{:#}` printed before: the cause twice.
        assert_eq!(format!("{e:#}"), "checking a.toml: cannot read a.toml: entity not found: entity not found");
    }
}
