//! What a dead letter kept, read a page at a time: its identity, where it
//! came from, and its payload (opened with the dead-letter key); and what
//! a replay writes back onto it.
//!
//! Must not log or return a payload except to the replay that runs it, and
//! to `host dead-letters show | export --payload`, which print it.

use super::ReplayError;
use crate::input::fields_json;
use crate::sink::dead_letter::{PayloadForm, Sealer, storable};
use readers::file::{Compression, FileOptions, FileReader, Format, Item};

/// Dead letters read at a time: replay holds one page of payloads.
pub const PAGE: i64 = 500;

/// The next page of `pipeline`'s open dead letters (neither replayed nor
/// discarded), after id `after`, in id order: among `ids` unless empty.
/// Keyset pagination, so a dead letter that fails again (and stays) never
/// shifts the pages. Its first eight columns are those [`Kept::open`]
/// takes.
pub const PAGE_SQL: &str = "SELECT d.id, d.message_id, d.source, p.form, p.key_id, p.nonce, p.payload, p.bound \
     FROM etl.dead_letters d JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
     WHERE d.pipeline = $1 AND d.replayed_at IS NULL AND d.discarded_at IS NULL \
     AND (cardinality($2::bigint[]) = 0 OR d.id = ANY($2)) AND d.id > $3 ORDER BY d.id LIMIT $4";

/// A replay that loaded: the dead letter is done, with its result.
pub const MARK_LOADED: &str = "UPDATE etl.dead_letters SET replayed_at = now(), replay_result = $2, \
     replay_attempts = replay_attempts + 1, last_replay_at = now() WHERE id = $1";

/// A replay that did not load: the same dead letter, one attempt more and
/// why not.
pub const MARK_FAILED: &str = "UPDATE etl.dead_letters SET replay_attempts = replay_attempts + 1, \
     last_replay_at = now(), last_replay_reason = $2 WHERE id = $1";

/// One dead letter, opened.
pub struct Kept {
    pub id: i64,
    pub message_id: String,
    /// The queue (`sqs:NAME`), or the file a row came from
    /// (`s3://bucket/key#version`).
    pub source: String,
    pub form: PayloadForm,
    pub payload: Vec<u8>,
}

impl Kept {
    /// From a row whose first eight columns are [`PAGE_SQL`]'s (id,
    /// message id, source, form, key id, nonce, payload, bound), its
    /// payload opened with `sealer`.
    pub fn open(row: &tokio_postgres::Row, sealer: Option<&Sealer>) -> Result<Kept, ReplayError> {
        let id: i64 = row.get(0);
        let form: String = row.get(3);
        let form = PayloadForm::parse(&form)
            .ok_or_else(|| ReplayError::Open { id, reason: format!("its payload's form `{form}` is not known") })?;
        let payload = match (row.get::<_, Option<String>>(4), sealer) {
            (None, _) => row.get(6),
            (Some(k), Some(s)) => {
                let nonce = row.get::<_, Option<Vec<u8>>>(5).unwrap_or_default();
                s.open(id, &k, &nonce, row.get(6), row.get(7)).map_err(|reason| ReplayError::Open { id, reason })?
            }
            (Some(key), None) => return Err(ReplayError::Sealed { id, key }),
        };
        Ok(Kept { id, message_id: row.get(1), source: row.get(2), form, payload })
    }

    /// The object (`s3://bucket/key`) and version of a row of a file.
    pub fn file(&self) -> Option<(&str, &str)> {
        self.source.starts_with("s3://").then(|| self.source.rsplit_once('#').unwrap_or((&self.source, "")))
    }
}

/// Writes a replay's outcome onto dead letter `id`: `loaded` (done, with
/// its result `text`) or not (it stays, one attempt more, `text` why).
pub async fn mark(client: &tokio_postgres::Client, id: i64, loaded: bool, text: &str) -> Result<(), ReplayError> {
    let sql = if loaded { MARK_LOADED } else { MARK_FAILED };
    client.execute(sql, &[&id, &storable(text)]).await.map_err(ReplayError::Db)?;
    Ok(())
}

/// The record a row kept as the file held it makes, read with `format`
/// (the pipeline's, as it is now) and at most `max` bytes; or why not,
/// after `message_id` (`line N`) like the dead letter's own reason.
pub async fn row_record(format: &Format, max: usize, message_id: &str, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let options =
        FileOptions { format: format.clone(), compression: Compression::None, start_after_row: 0, max_row_bytes: max };
    let why = |reason: String| format!("{message_id}: {reason}");
    let mut reader =
        FileReader::open(std::io::Cursor::new(raw), options, "", None).await.map_err(|e| why(e.to_string()))?;
    let chunk = reader.next_chunk(2, usize::MAX).await.map_err(|e| why(e.to_string()))?;
    let mut rows = chunk.map(|c| c.rows).unwrap_or_default();
    // More than one: a CSV header kept before the row, read as a row now.
    if rows.len() != 1 {
        let n = rows.len();
        return Err(why(format!("the kept row reads as {n} rows with the format as it is now (is `header` changed?)")));
    }
    let row = rows.remove(0);
    match row.item {
        // A JSON line comes unchecked: checked here, so that its reason
        // starts with the line, as the dead letter's own did.
        Ok(Item::Json(bytes)) => match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => Ok(bytes),
            Err(e) => Err(why(format!("invalid JSON: {e}"))),
        },
        Ok(Item::Fields(fields)) => Ok(fields_json(reader.columns(), &fields)),
        Err(bad) => Err(why(bad.error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use readers::file::CsvOptions;

    fn csv(header: bool, columns: &[&str]) -> Format {
        let columns = columns.iter().map(|c| c.to_string()).collect();
        Format::Csv(CsvOptions { header, columns, ..CsvOptions::default() })
    }

    #[tokio::test]
    async fn a_kept_row_reads_with_the_format_as_it_is_now() {
        let row = b"1,\"a, b\",x".to_vec();
        let two = csv(false, &["n", "t"]);
        let three = csv(false, &["n", "t", "u"]);
        assert_eq!(
            row_record(&two, 100, "line 4", row.clone()).await.unwrap_err(),
            "line 4: expected 2 fields, found 3"
        );
        let record = row_record(&three, 100, "line 4", row).await.unwrap();
        assert_eq!(String::from_utf8(record).unwrap(), r#"{"n":"1","t":"a, b","u":"x"}"#);
        let with_header = b"n,t\n2,b".to_vec();
        let record = row_record(&csv(true, &[]), 100, "line 9", with_header).await.unwrap();
        assert_eq!(String::from_utf8(record).unwrap(), r#"{"n":"2","t":"b"}"#);
        let json = row_record(&Format::JsonLines, 100, "line 2", b"{\"a\": 1".to_vec()).await.unwrap_err();
        assert!(json.starts_with("line 2: invalid JSON"), "{json}");
        assert!(row_record(&Format::JsonLines, 100, "line 2", Vec::new()).await.unwrap_err().contains("as 0 rows"));
        let header_now_a_row = row_record(&csv(false, &["n", "t"]), 100, "line 9", b"n,t\n2,b".to_vec()).await;
        assert!(header_now_a_row.unwrap_err().contains("as 2 rows"), "never the header as a record");
    }

    #[test]
    fn pages_go_by_id_after_the_last_one() {
        assert!(PAGE_SQL.contains("d.replayed_at IS NULL AND d.discarded_at IS NULL"));
        assert!(PAGE_SQL.ends_with("AND d.id > $3 ORDER BY d.id LIMIT $4"));
        assert!(!PAGE_SQL.contains("OFFSET"));
    }
}
