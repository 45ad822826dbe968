//! Which dead letters a command means (`--stage`, `--source`, `--since`,
//! `--reason`, and whether replayed and discarded ones count), as a SQL
//! condition and its parameters.
//!
//! Must not run statements: it only builds their text.

use tokio_postgres::types::ToSql;

/// The stages a dead letter can come from.
pub const STAGES: [&str; 4] = ["source", "input", "transform", "sink"];

/// The dead letters a command means, beyond their pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// `source`, `input`, `transform` or `sink`.
    pub stage: Option<String>,
    /// Where it came from ([`Filter::sql`] says how it matches).
    pub source: Option<String>,
    pub since: Option<Since>,
    /// A part of its reason, in any case.
    pub reason: Option<String>,
    /// Replayed and discarded ones too (`--all`); else only open ones.
    pub all: bool,
}

/// `--since`: a time, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    /// A time, in seconds since the Unix epoch.
    At(f64),
    /// Seconds before now, by the database's clock (the one that stamped
    /// `failed_at`).
    Ago(f64),
}

/// A parameter of the condition.
pub type Param = Box<dyn ToSql + Sync + Send>;

impl Since {
    /// RFC 3339 (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00+02:00`) or a
    /// duration: whole numbers with units `s`, `m`, `h`, `d`, `w`, one or
    /// more (`90s`, `2h`, `1h30m`, `7d`).
    pub fn parse(text: &str) -> Result<Since, String> {
        use time::format_description::well_known::Rfc3339;
        if let Some(secs) = duration_secs(text.trim()) {
            return Ok(Since::Ago(secs as f64));
        }
        match time::OffsetDateTime::parse(text.trim(), &Rfc3339) {
            Ok(t) => Ok(Since::At(t.unix_timestamp_nanos() as f64 / 1e9)),
            Err(_) => Err(format!(
                "`{text}` is neither a time (RFC 3339: 2024-05-01T10:00:00Z) nor a duration before now \
                 (a number and a unit, s, m, h, d or w: 30m, 2h, 1h30m, 7d)"
            )),
        }
    }
}

/// The seconds of a duration like `1h30m`; `None` if it is not one.
fn duration_secs(text: &str) -> Option<u64> {
    let (mut total, mut digits) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    (digits.is_empty() && !text.is_empty()).then_some(total)
}

impl Filter {
    /// Whether it names any dead letters rather than all of a pipeline's.
    pub fn narrows(&self) -> bool {
        self.stage.is_some() || self.source.is_some() || self.since.is_some() || self.reason.is_some()
    }

    /// Refuses what would match nothing by mistake: an unknown stage, an
    /// empty source or reason.
    pub fn check(&self) -> Result<(), String> {
        if let Some(stage) = self.stage.as_deref().filter(|s| !STAGES.contains(s)) {
            return Err(format!("--stage `{stage}`: a stage is one of {}", STAGES.join(", ")));
        }
        if self.source.as_deref() == Some("") {
            return Err("--source is empty: give a message id or an object key prefix".into());
        }
        if self.reason.as_deref() == Some("") {
            return Err("--reason is empty: give a part of the reasons to match".into());
        }
        Ok(())
    }

    /// The condition on `d` (`etl.dead_letters`), each part after ` AND `,
    /// its parameters numbered from `$first`; and the parameters.
    ///
    /// `--source X` matches a dead letter whose message id is X, whose
    /// source is X (`sqs:QUEUE`), or whose object's key starts with X; an
    /// X that starts with `s3://` matches the sources that start with it
    /// (`s3://bucket/key#version` for a row of an object).
    pub fn sql(&self, first: usize) -> (String, Vec<Param>) {
        let (mut text, mut params): (String, Vec<Param>) = (String::new(), Vec::new());
        let mut add = |condition: &str, param: Param| {
            let n = first + params.len();
            text.push_str(" AND ");
            text.push_str(&condition.replace("$?", &format!("${n}")));
            params.push(param);
        };
        if let Some(stage) = &self.stage {
            add("d.stage = $?", Box::new(stage.clone()));
        }
        match &self.source {
            Some(s) if s.starts_with("s3://") => add("starts_with(d.source, $?)", Box::new(s.clone())),
            Some(s) => add(
                "(d.message_id = $? OR d.source = $? OR (d.source LIKE 's3://%' \
                 AND starts_with(regexp_replace(d.source, '^s3://[^/]*/', ''), $?)))",
                Box::new(s.clone()),
            ),
            None => {}
        }
        match self.since {
            Some(Since::At(secs)) => add("d.failed_at >= to_timestamp($?)", Box::new(secs)),
            Some(Since::Ago(secs)) => add("d.failed_at >= now() - make_interval(secs => $?)", Box::new(secs)),
            None => {}
        }
        if let Some(reason) = &self.reason {
            add("strpos(lower(d.reason), lower($?::text)) > 0", Box::new(reason.clone()));
        }
        if !self.all {
            text.push_str(" AND d.replayed_at IS NULL AND d.discarded_at IS NULL");
        }
        (text, params)
    }
}

/// `params` as a statement takes them.
pub fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(Since::parse("2h"), Ok(Since::Ago(7_200.0)));
        assert_eq!(Since::parse("1h30m"), Ok(Since::Ago(5_400.0)));
        assert_eq!(Since::parse("90s"), Ok(Since::Ago(90.0)));
        assert_eq!(Since::parse("7d"), Ok(Since::Ago(604_800.0)));
        assert_eq!(Since::parse("1w"), Ok(Since::Ago(604_800.0)));
        assert_eq!(Since::parse("1970-01-01T00:01:00Z"), Ok(Since::At(60.0)));
        assert_eq!(Since::parse("1970-01-01T02:01:00.5+02:00"), Ok(Since::At(60.5)));
        for bad in ["", "2", "h", "2x", "2h3", "yesterday", "2024-05-01", "99999999999999999999s"] {
            let e = Since::parse(bad).unwrap_err();
            assert!(e.contains("neither a time (RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn by_default_only_open_dead_letters_match() {
        let (text, params) = Filter::default().sql(2);
        assert_eq!(text, " AND d.replayed_at IS NULL AND d.discarded_at IS NULL");
        assert!(params.is_empty());
        let (text, _) = Filter { all: true, ..Filter::default() }.sql(2);
        assert_eq!(text, "");
        assert!(!Filter { all: true, ..Filter::default() }.narrows());
    }

    #[test]
    fn each_filter_is_one_condition_with_its_own_parameter() {
        let f = Filter {
            stage: Some("input".into()),
            source: Some("customers/2024/".into()),
            since: Some(Since::Ago(7_200.0)),
            reason: Some("Missing".into()),
            all: true,
        };
        let (text, params) = f.sql(2);
        assert_eq!(
            text,
            " AND d.stage = $2 \
             AND (d.message_id = $3 OR d.source = $3 OR (d.source LIKE 's3://%' \
             AND starts_with(regexp_replace(d.source, '^s3://[^/]*/', ''), $3))) \
             AND d.failed_at >= now() - make_interval(secs => $4) \
             AND strpos(lower(d.reason), lower($5::text)) > 0"
        );
        assert_eq!(params.len(), 4);
        assert!(f.narrows());
        let f = Filter { source: Some("s3://b/k.csv#v1".into()), since: Some(Since::At(60.0)), ..Filter::default() };
        let (text, params) = f.sql(4);
        assert_eq!(
            text,
            " AND starts_with(d.source, $4) AND d.failed_at >= to_timestamp($5) \
             AND d.replayed_at IS NULL AND d.discarded_at IS NULL"
        );
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn a_filter_that_would_match_nothing_by_mistake_is_refused() {
        assert!(Filter::default().check().is_ok());
        let e = Filter { stage: Some("load".into()), ..Filter::default() }.check().unwrap_err();
        assert_eq!(e, "--stage `load`: a stage is one of source, input, transform, sink");
        assert!(Filter { source: Some(String::new()), ..Filter::default() }.check().is_err());
        assert!(Filter { reason: Some(String::new()), ..Filter::default() }.check().is_err());
    }
}
