//! Whether the object version a dead row came from is still the one
//! loaded for its key, by `etl.files`: a row of a version replaced since
//! (or of a key gone) is not replayed, or it would come back under the
//! current file's name beside the rows of the version that replaced it.
//!
//! Must not ask S3: what is loaded is what `etl.files` says.

use super::ReplayError;

/// The versions `etl.files` holds of one key, oldest first, and whether
/// each is done. A version replaced under a `source-file` column, or a key
/// a reconcile pass found gone, has no row any more.
pub const VERSIONS_SQL: &str = "SELECT version, done FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 ORDER BY started_at, version";

/// Where an object version stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The version loaded for its key (or being loaded): replay it.
    Current,
    /// A later version was loaded (or, its own row forgotten, is loading).
    Replaced { by: String },
    /// Nothing of the key is loaded any more.
    Gone,
}

impl Standing {
    /// From `files` ([`VERSIONS_SQL`]'s rows: version, done) for `version`.
    pub fn of(version: &str, files: &[(String, bool)]) -> Standing {
        let later = match files.iter().position(|(v, _)| v == version) {
            Some(at) => files[at + 1..].iter().rev().find(|(_, done)| *done),
            None => files.iter().rev().find(|(_, done)| *done).or(files.last()),
        };
        match (later, files.iter().any(|(v, _)| v == version)) {
            (Some((by, _)), _) => Standing::Replaced { by: by.clone() },
            (None, true) => Standing::Current,
            (None, false) => Standing::Gone,
        }
    }

    /// Why a row of `version` of `uri` is not replayed; `None` when current.
    pub fn why_not(&self, uri: &str, version: &str) -> Option<String> {
        match self {
            Standing::Current => None,
            Standing::Replaced { by } => {
                Some(format!("object version {version} of {uri} was replaced by {by}; not replayed"))
            }
            Standing::Gone => {
                Some(format!("object version {version} of {uri} is no longer loaded (the key is gone); not replayed"))
            }
        }
    }
}

/// Where `version` of `uri` (`s3://bucket/key`) stands for `pipeline`.
pub async fn of(
    client: &tokio_postgres::Client,
    pipeline: &str,
    uri: &str,
    version: &str,
) -> Result<Standing, ReplayError> {
    let Some((bucket, key)) = uri.strip_prefix("s3://").and_then(|rest| rest.split_once('/')) else {
        return Ok(Standing::Current);
    };
    let rows = client.query(VERSIONS_SQL, &[&pipeline, &bucket, &key]).await.map_err(ReplayError::Db)?;
    let files: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Standing::of(version, &files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(rows: &[(&str, bool)]) -> Vec<(String, bool)> {
        rows.iter().map(|(v, d)| (v.to_string(), *d)).collect()
    }

    #[test]
    fn a_version_stands_by_what_was_loaded_after_it() {
        let replaced = |by: &str| Standing::Replaced { by: by.into() };
        assert_eq!(Standing::of("v1", &files(&[("v1", true)])), Standing::Current);
        assert_eq!(Standing::of("v1", &files(&[("v1", false)])), Standing::Current, "still loading");
        assert_eq!(Standing::of("v2", &files(&[("v1", true), ("v2", true)])), Standing::Current);
        assert_eq!(Standing::of("v1", &files(&[("v1", true), ("v2", true)])), replaced("v2"));
        assert_eq!(Standing::of("v1", &files(&[("v1", true), ("v2", false)])), Standing::Current, "v2 not done");
        // Its row forgotten when a later version's rows replaced its own.
        assert_eq!(Standing::of("v1", &files(&[("v2", false)])), replaced("v2"));
        assert_eq!(Standing::of("v1", &files(&[("v2", true), ("v3", false)])), replaced("v2"));
        assert_eq!(Standing::of("v1", &[]), Standing::Gone);
    }

    #[test]
    fn the_reason_names_both_versions() {
        let why = Standing::Replaced { by: "v2".into() }.why_not("s3://b/k.csv", "v1").unwrap();
        assert_eq!(why, "object version v1 of s3://b/k.csv was replaced by v2; not replayed");
        assert_eq!(Standing::Current.why_not("s3://b/k.csv", "v1"), None);
    }
}
