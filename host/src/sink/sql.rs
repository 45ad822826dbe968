//! The SQL the sink runs, built by small pure functions from validated names.
//! Every identifier is quoted; none comes from record data.
//!
//! Must not run anything: the sink does; every function here is pure.

use crate::config::MergeMode;

/// `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// The name as PostgreSQL's `quote_ident` writes it, for a person to read
/// and paste (messages, `host sink ddl`): bare when it reads back as the
/// same name (lowercase ASCII letters, digits and `_`, not a keyword),
/// quoted otherwise.
pub fn readable(name: &str) -> String {
    let bare = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && KEYWORDS.binary_search(&name).is_err();
    if bare { name.to_string() } else { ident(name) }
}

/// `schema.table`, each part [`readable`].
pub fn readable_qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", readable(schema), readable(table))
}

/// PostgreSQL's keywords that are not unreserved (`pg_get_keywords()` of
/// versions 15 to 18, sorted): as a name, each must be quoted.
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization", "between",
    "bigint", "binary", "bit", "boolean", "both", "case", "cast", "char", "character", "check", "coalesce",
    "collate", "collation", "column", "concurrently", "constraint", "create", "cross", "current_catalog",
    "current_date", "current_role", "current_schema", "current_time", "current_timestamp", "current_user", "dec",
    "decimal", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "exists", "extract",
    "false", "fetch", "float", "for", "foreign", "freeze", "from", "full", "grant", "greatest", "group", "grouping",
    "having", "ilike", "in", "initially", "inner", "inout", "int", "integer", "intersect", "interval", "into", "is",
    "isnull", "join", "json", "json_array", "json_arrayagg", "json_exists", "json_object", "json_objectagg",
    "json_query", "json_scalar", "json_serialize", "json_table", "json_value", "lateral", "leading", "least", "left",
    "like", "limit", "localtime", "localtimestamp", "merge_action", "national", "natural", "nchar", "none",
    "normalize", "not", "notnull", "null", "nullif", "numeric", "offset", "on", "only", "or", "order", "out",
    "outer", "overlaps", "overlay", "placing", "position", "precision", "primary", "real", "references", "returning",
    "right", "row", "select", "session_user", "setof", "similar", "smallint", "some", "substring", "symmetric",
    "system_user", "table", "tablesample", "then", "time", "timestamp", "to", "trailing", "treat", "trim", "true",
    "union", "unique", "user", "using", "values", "varchar", "variadic", "verbose", "when", "where", "window",
    "with", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists", "xmlforest", "xmlnamespaces", "xmlparse",
    "xmlpi", "xmlroot", "xmlserialize", "xmltable",
];

fn list(columns: &[String]) -> String {
    columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
}

/// The staging table of a target: a temporary table of the mapped columns
/// plus a sequence number, emptied at every commit. Temporary tables are
/// private to the session and not WAL-logged.
pub fn staging_name(table: &str) -> String {
    ident(&format!("etl_stage_{table}"))
}

pub fn create_staging(stage: &str, target: &str, columns: &[String]) -> String {
    format!(
        "SET LOCAL client_min_messages = warning; \
         CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS \
         SELECT {cols}, 0::bigint AS \"_etl_seq\" FROM {target} WITH NO DATA",
        cols = list(columns)
    )
}

/// `COPY` of the rows, into the staging table (with its sequence column) or
/// straight into the target (append).
pub fn copy_in(table: &str, columns: &[String], with_seq: bool) -> String {
    let seq = if with_seq { ", \"_etl_seq\"" } else { "" };
    format!("COPY {table} ({}{seq}) FROM STDIN", list(columns))
}

/// Statements that move the staging rows into the target. In-batch
/// duplicates of a key: the last one wins. Rows with a NULL in their key
/// have no key (PostgreSQL's unique index keeps them all, as a direct
/// COPY does): each is kept.
pub fn merge(mode: &MergeMode, target: &str, stage: &str, columns: &[String]) -> Vec<String> {
    let cols = list(columns);
    match mode {
        MergeMode::Append => Vec::new(),
        MergeMode::Upsert { key } => {
            let keys = list(key);
            let last = last_of_each_key(key);
            let updates: Vec<String> =
                columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", ident(c))).collect();
            let action = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            vec![format!(
                "INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({last}) {cols} FROM {stage} \
                 ORDER BY {last}, \"_etl_seq\" DESC ON CONFLICT ({keys}) {action}"
            )]
        }
        MergeMode::DeleteInsert { key } => {
            let keys = list(key);
            let last = last_of_each_key(key);
            let on: Vec<String> = key.iter().map(|k| format!("t.{0} = s.{0}", ident(k))).collect();
            vec![
                format!(
                    "DELETE FROM {target} t USING (SELECT DISTINCT {keys} FROM {stage}) s WHERE {}",
                    on.join(" AND ")
                ),
                format!(
                    "INSERT INTO {target} ({cols}) SELECT DISTINCT ON ({last}) {cols} FROM {stage} \
                     ORDER BY {last}, \"_etl_seq\" DESC"
                ),
            ]
        }
    }
}

/// What tells the staging rows of one key apart: the key, and for a row
/// with a NULL in its key its own number (such a row has no key, and is
/// kept). `DISTINCT ON` these, ordered by them and then the number
/// descending, keeps the last row of each key.
fn last_of_each_key(key: &[String]) -> String {
    let nulls: Vec<String> = key.iter().map(|k| format!("{} IS NULL", ident(k))).collect();
    format!("{}, CASE WHEN {} THEN \"_etl_seq\" END", list(key), nulls.join(" OR "))
}

/// Whether table `$1` (quoted, qualified) has a valid unique index on
/// exactly the columns `$2` (in any order, no expression, no predicate),
/// checked at once (not deferrable): the index `ON CONFLICT ($2)` infers.
/// A deferrable key would refuse a direct COPY only at the commit.
pub const KEY_IS_UNIQUE: &str = "SELECT EXISTS (SELECT 1 FROM pg_index i \
     WHERE i.indrelid = $1::text::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate \
     AND i.indpred IS NULL AND i.indexprs IS NULL \
     AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
          WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])) \
       = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) AS k))";

/// The target `$2` of schema `$1`: no row when the schema does not exist;
/// the table's oid (none when there is no such relation), its kind
/// (`pg_class.relkind`), and whether the user may use the schema.
pub const TABLE_OF: &str = "SELECT c.oid, c.relkind::text, has_schema_privilege(n.oid, 'USAGE') \
     FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = $2 WHERE n.nspname = $1";

/// The columns of table `$1` (oid), in order: name, type as `format_type`
/// writes it, type category, NOT NULL, whether it has a default (or is an
/// identity), whether it is an identity GENERATED ALWAYS, whether it is a
/// generated column.
pub const COLUMNS_OF: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text, \
     a.attnotnull, a.atthasdef OR a.attidentity <> '', a.attidentity = 'a', a.attgenerated <> '' \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// The session's user and database, and whether it may INSERT into,
/// UPDATE and DELETE from table `$1` (oid; a grant on some columns counts)
/// and make temporary tables.
pub const RIGHTS_ON: &str = "SELECT current_user::text, current_database()::text, \
     has_any_column_privilege($1::oid, 'INSERT'), has_any_column_privilege($1::oid, 'UPDATE'), \
     has_table_privilege($1::oid, 'DELETE'), has_database_privilege(current_database(), 'TEMP')";

/// The temporary table `host check --db` tries a pipeline's values in.
pub const PROBE: &str = "etl_probe";

/// [`PROBE`] with `columns` (name, type as `format_type` wrote it). Its
/// transaction is rolled back.
pub fn create_probe(columns: &[(String, String)]) -> String {
    let defs: Vec<String> = columns.iter().map(|(name, ty)| format!("{} {ty}", ident(name))).collect();
    format!("CREATE TEMP TABLE {} ({})", ident(PROBE), defs.join(", "))
}

/// Width of a ledger partition in milliseconds of sent time. Wide enough
/// that a busy queue's batch writes a few ledger rows, not one per message;
/// narrow enough that a look-up reads few ids besides the batch's own.
pub const LEDGER_PART_MS: i64 = 10;

/// The `sent_ms` of a message whose source gave no sent time.
pub const SENT_UNKNOWN: i64 = i64::MIN;

/// The partition where a message sent at `sent_ms` is recorded. A message
/// whose sent time is unknown ([`SENT_UNKNOWN`]) goes to the legacy
/// partition, which every look-up reads and pruning keeps.
pub fn ledger_part(sent_ms: i64) -> i64 {
    if sent_ms == SENT_UNKNOWN {
        return LEGACY_PART;
    }
    sent_ms.div_euclid(LEDGER_PART_MS)
}

/// The partition of the ids recorded before partitions existed (V5).
pub const LEGACY_PART: i64 = i64::MIN;

/// Delete-insert commits into one target (`$1`, quoted and qualified) take
/// turns from their merge to their end.
pub const MERGE_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('etl.merge'), hashtext($1))";

/// Commits of one pipeline take turns from their ledger check to their end.
pub const LEDGER_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('etl.receipts'), hashtext($1))";

/// Partitions one ledger row may cover (10 s of sent time): a row holds the
/// ids of partitions `part` to `last_part = part + span`, `span` at most
/// this. V20's check constraint holds every writer to it; a look-up relies
/// on it (see [`LEDGER_SEEN`]). Widening it needs a migration that widens
/// the constraint first.
pub const LEDGER_MAX_SPAN: i64 = 1000;

/// Bytes of ids (16 a UUID, about 4 + its length a text id) a ledger row
/// takes before the next partition starts a new row: 480 UUIDs, so the row
/// stays inline and uncompressed (V9: moved out of line, a row cost twice
/// as much to insert). One partition is never split, so a busy one's row
/// may be larger, as before.
pub const LEDGER_ROW_BYTES: usize = 7_680;

/// Which of the ids `$5` (text) and `$6` (UUIDs) pipeline `$1` recorded in
/// a row covering a partition of the ranges `$3[i]..$4[i]` (see
/// [`LedgerIds::look_up`]); as text. A row covering partition p starts at
/// most [`LEDGER_MAX_SPAN`] partitions before it, so the rows overlapping
/// `lo..hi` are those with `part` in `$2[i] = lo - LEDGER_MAX_SPAN ..hi`
/// and `last_part >= lo`: a range of the index (pipeline, part, last_part),
/// `last_part` checked in the index. One index scan per range: `OFFSET 0`
/// keeps the subquery from being flattened into a join, whose generic plan
/// (prepared statements use one after five runs) read every row of the
/// pipeline (measured: 0.5 ms growing to 1.6 ms within 150 batches). Rows
/// are read once for both kinds of ids (MATERIALIZED).
pub const LEDGER_SEEN: &str = "WITH r AS MATERIALIZED (SELECT r.message_ids, r.message_uuids \
     FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS q(from_part, lo, hi) \
     CROSS JOIN LATERAL (SELECT message_ids, message_uuids FROM etl.receipts \
          WHERE pipeline = $1 AND part BETWEEN q.from_part AND q.hi AND last_part >= q.lo OFFSET 0) r) \
     SELECT id FROM unnest($5::text[]) AS id WHERE id IN (SELECT unnest(message_ids) FROM r) \
     UNION ALL SELECT id::text FROM unnest($6::uuid[]) AS id WHERE id IN (SELECT unnest(message_uuids) FROM r)";

/// Records a batch's ids for the batch whose lineage this session inserted
/// last: one row per run of partitions `$2[i]..$3[i]`, holding the slices
/// `$6[i]..$7[i]` of the text ids `$4` and `$8[i]..$9[i]` of the UUIDs `$5`
/// (1-based, inclusive; see [`LedgerIds`]). `last_part` is generated from
/// `span`.
pub const LEDGER_RECORD: &str = "INSERT INTO etl.receipts (pipeline, part, span, batch_id, message_ids, message_uuids) \
     SELECT $1, part, (last - part)::int, currval(pg_get_serial_sequence('etl.batches', 'id')), \
            ($4::text[])[t_from:t_to], ($5::uuid[])[u_from:u_to] \
     FROM unnest($2::bigint[], $3::bigint[], $6::int[], $7::int[], $8::int[], $9::int[]) \
          AS p(part, last, t_from, t_to, u_from, u_to)";

/// A batch's message ids as the ledger takes them: in rows, each covering
/// consecutive partitions (at most [`LEDGER_MAX_SPAN`] apart, up to
/// [`LEDGER_ROW_BYTES`] of ids; the legacy partition in a row of its own),
/// UUIDs in the canonical form as 16 bytes, any other id as text. A trickle
/// (a message per partition) writes a row per 480 messages, not one per
/// message; a busy queue (100 per partition) one per 4 partitions.
#[derive(Debug, Default, PartialEq)]
pub struct LedgerIds<'a> {
    /// Per row, its first and last partition.
    pub parts: Vec<i64>,
    pub lasts: Vec<i64>,
    pub texts: Vec<&'a str>,
    pub uuids: Vec<uuid::Uuid>,
    /// Per row, the 1-based inclusive ranges of its ids in `texts` and
    /// `uuids` (empty when from > to).
    pub text_from: Vec<i32>,
    pub text_to: Vec<i32>,
    pub uuid_from: Vec<i32>,
    pub uuid_to: Vec<i32>,
}

impl<'a> LedgerIds<'a> {
    /// From `(sent_ms, message id)` pairs.
    pub fn new(ids: impl IntoIterator<Item = (i64, &'a str)>) -> Self {
        let mut ids: Vec<(i64, Result<uuid::Uuid, &str>)> =
            ids.into_iter().map(|(sent, id)| (ledger_part(sent), canonical_uuid(id).ok_or(id))).collect();
        ids.sort_by_key(|&(part, _)| part);
        let bytes = |id: &Result<uuid::Uuid, &str>| match id {
            Ok(_) => 16,
            Err(text) => 4 + text.len(),
        };
        let mut l = LedgerIds::default();
        let mut row_bytes = 0;
        let mut i = 0;
        while i < ids.len() {
            let part = ids[i].0;
            let end = i + ids[i..].iter().take_while(|(p, _)| *p == part).count();
            let part_bytes: usize = ids[i..end].iter().map(|(_, id)| bytes(id)).sum();
            // Both real partitions (the legacy one is far from any), so the
            // difference cannot overflow.
            let joins = l.parts.last().is_some_and(|&first| {
                first != LEGACY_PART
                    && part != LEGACY_PART
                    && part - first <= LEDGER_MAX_SPAN
                    && row_bytes + part_bytes <= LEDGER_ROW_BYTES
            });
            if joins {
                *l.lasts.last_mut().expect("a row") = part;
                row_bytes += part_bytes;
            } else {
                l.parts.push(part);
                l.lasts.push(part);
                l.text_from.push(l.texts.len() as i32 + 1);
                l.uuid_from.push(l.uuids.len() as i32 + 1);
                l.text_to.push(0);
                l.uuid_to.push(0);
                row_bytes = part_bytes;
            }
            for (_, id) in &ids[i..end] {
                match id {
                    Ok(u) => l.uuids.push(*u),
                    Err(text) => l.texts.push(*text),
                }
            }
            *l.text_to.last_mut().expect("a row") = l.texts.len() as i32;
            *l.uuid_to.last_mut().expect("a row") = l.uuids.len() as i32;
            i = end;
        }
        l
    }

    /// The ranges [`LEDGER_SEEN`] reads, as `(from_part, lo, hi)` arrays:
    /// the legacy partition (always), then the rows' partitions, a range
    /// merged into the one before when their index scans would overlap
    /// (a batch's rows are consecutive: usually one range).
    pub fn look_up(&self) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let (mut from, mut lo, mut hi) = (vec![LEGACY_PART], vec![LEGACY_PART], vec![LEGACY_PART]);
        for (&first, &last) in self.parts.iter().zip(&self.lasts) {
            if first == LEGACY_PART {
                continue;
            }
            let start = first - LEDGER_MAX_SPAN;
            match hi.last_mut() {
                Some(end) if lo.len() > 1 && start <= *end => *end = (*end).max(last),
                _ => {
                    from.push(start);
                    lo.push(first);
                    hi.push(last);
                }
            }
        }
        (from, lo, hi)
    }
}

/// A message id as a UUID, when it is one in the canonical lowercase form
/// `8-4-4-4-12`: that form and the value map one to one, so `id::text`
/// gives the id back exactly. Any other id is kept as text.
pub fn canonical_uuid(text: &str) -> Option<uuid::Uuid> {
    let u = uuid::Uuid::try_parse(text).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (u.hyphenated().encode_lower(&mut buf) == text).then_some(u)
}

/// Forgets pipeline `$1`'s ledger rows of messages sent before partition
/// `$2`: past the queue's retention they cannot come back. A row is kept
/// while its last partition is not past (it may cover later ones). Replays
/// (negative partitions) and the legacy partition stay.
pub const LEDGER_PRUNE: &str =
    "DELETE FROM etl.receipts WHERE pipeline = $1 AND part >= 0 AND part < $2 AND last_part < $2";

/// The id of the next batch, taken before its rows when they hold it.
pub const NEXT_BATCH_ID: &str = "SELECT nextval(pg_get_serial_sequence('etl.batches', 'id'))";

/// The batch's lineage, under id `$7` (taken by [`NEXT_BATCH_ID`]) or the
/// sequence's next; its steps' params (digests `$8`, canonical JSON `$9`)
/// kept once each; `$10` the pipeline file's revision. Gives its id.
pub const LINEAGE: &str = "WITH params AS (INSERT INTO etl.step_params (digest, params) \
     SELECT * FROM unnest($8::text[], $9::text[]) ON CONFLICT (digest) DO NOTHING) \
     INSERT INTO etl.batches (id, pipeline, source, messages, rows_written, dead_letters, plugins, revision) \
     VALUES (coalesce($7::bigint, nextval(pg_get_serial_sequence('etl.batches', 'id'))), \
             $1, $2, $3, $4, $5, $6::text::jsonb, $10) RETURNING id";

/// Makes sure object version `$1..$4` has its ledger row.
pub const FILE_CLAIM: &str = "INSERT INTO etl.files (pipeline, bucket, key, version, sequencer, etag) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pipeline, bucket, key, version) \
     DO UPDATE SET sequencer = EXCLUDED.sequencer \
     WHERE etl.files.sequencer IS NULL AND EXCLUDED.sequencer IS NOT NULL";

/// Forgets a part-loaded version (`$4`) of object `$2`/`$3` of pipeline `$1`.
pub const FILE_ABANDON: &str = "DELETE FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND NOT done";

/// The part-loaded object versions of pipeline `$1`, oldest first, at most `$2`.
pub const FILES_PART_LOADED: &str = "SELECT bucket, key, version, etag FROM etl.files \
     WHERE pipeline = $1 AND NOT done ORDER BY started_at LIMIT $2";

/// The event sequencers of the object's other versions recorded.
pub const FILE_SEQUENCERS: &str = "SELECT sequencer FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version <> $4 AND sequencer IS NOT NULL";

/// Locks the object version's ledger row to the commit; gives its progress.
pub const FILE_LOCK: &str =
    "SELECT rows_done FROM etl.files WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 FOR UPDATE";

/// The object version's progress, without a lock.
pub const FILE_PEEK: &str =
    "SELECT rows_done, done FROM etl.files WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4";

/// Forgets the other versions of the object: this one replaces them.
pub const FILE_FORGET_OTHERS: &str =
    "DELETE FROM etl.files WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version <> $4";

/// Moves the object version's progress to row `$5`, adding `$6` rows and
/// `$7` dead letters; `$8`: its last rows.
pub const FILE_PROGRESS: &str = "UPDATE etl.files SET rows_done = $5, rows_written = rows_written + $6, \
     dead_letters = dead_letters + $7, done = $8, finished_at = CASE WHEN $8 THEN now() END \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4";

/// The object versions pipeline `$1` has loaded, completely (`done`) or in
/// part, from bucket `$2` under prefix `$3` (reconcile compares them with a
/// listing): a page in byte order of keys (as S3 lists them), after key
/// `$4` and version `$5`, at most `$6` rows, of the keys after `$7` and up
/// to `$8` (a reconcile range's; `$8` NULL: to the end).
pub const FILES_LOADED_PAGE: &str = "SELECT key, version, done FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND starts_with(key, $3) \
     AND (key COLLATE \"C\", version) > ($4::text COLLATE \"C\", $5::text) \
     AND key COLLATE \"C\" > $7::text COLLATE \"C\" \
     AND ($8::text IS NULL OR key COLLATE \"C\" <= $8::text COLLATE \"C\") \
     ORDER BY key COLLATE \"C\", version LIMIT $6";

/// Forgets every version of object `$2`/`$3` of pipeline `$1` (it is gone).
pub const FILE_FORGET: &str = "DELETE FROM etl.files WHERE pipeline = $1 AND bucket = $2 AND key = $3";

/// The object versions of keys `$3` (an array) in bucket `$2` that
/// pipeline `$1` loaded completely: key, version, ETag.
pub const FILES_DONE_OF: &str = "SELECT key, version, etag FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND key = ANY($3) AND done";

/// A replay (`host replay --apply`, chain `$5`) of an object version
/// `etl.files` holds as loaded: its progress row, made if missing.
pub const REPLAY_CLAIM: &str = "INSERT INTO etl.replays (pipeline, bucket, key, version, chain) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// Whether the object version is (still) the one loaded: a share lock on
/// its `etl.files` row holds off a newer version's first commit until this
/// replay's commit.
pub const REPLAY_LOADED: &str = "SELECT 1 FROM etl.files \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND done FOR SHARE";

/// Locks the replay's progress row to the commit; gives its progress.
pub const REPLAY_LOCK: &str = "SELECT rows_done FROM etl.replays \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND chain = $5 FOR UPDATE";

/// The replay's progress, without a lock.
pub const REPLAY_PEEK: &str = "SELECT rows_done, done FROM etl.replays \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND chain = $5";

/// Forgets the replays of the object version through other chains: this
/// one replaces their rows.
pub const REPLAY_FORGET_OTHERS: &str = "DELETE FROM etl.replays \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND chain <> $5";

/// Moves the replay's progress to row `$6`, adding `$7` rows and `$8` dead
/// letters; `$9`: its last rows.
pub const REPLAY_PROGRESS: &str = "UPDATE etl.replays SET rows_done = $6, rows_written = rows_written + $7, \
     dead_letters = dead_letters + $8, done = $9, finished_at = CASE WHEN $9 THEN now() END \
     WHERE pipeline = $1 AND bucket = $2 AND key = $3 AND version = $4 AND chain = $5";

/// What pipeline `$1` copied: path, size, mtime, digest, key.
pub const SFTP_FILES: &str = "SELECT path, size, mtime, digest, key FROM etl.sftp_files WHERE pipeline = $1";

/// Records file `$2` of pipeline `$1` as copied (size `$3`, mtime `$4`,
/// digest `$5`) to `$6`/`$7`, version `$8`.
pub const SFTP_RECORD: &str = "INSERT INTO etl.sftp_files \
     (pipeline, path, size, mtime, digest, bucket, key, version_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (pipeline, path) DO UPDATE SET size = EXCLUDED.size, mtime = EXCLUDED.mtime, \
     digest = EXCLUDED.digest, bucket = EXCLUDED.bucket, key = EXCLUDED.key, version_id = EXCLUDED.version_id, \
     copied_at = now()";

/// File `$2` was touched, not changed: its new size `$3` and mtime `$4`.
pub const SFTP_TOUCH: &str = "UPDATE etl.sftp_files SET size = $3, mtime = $4 WHERE pipeline = $1 AND path = $2";

/// Forgets file `$2` of pipeline `$1` (deleted on the server and in the bucket).
pub const SFTP_FORGET: &str = "DELETE FROM etl.sftp_files WHERE pipeline = $1 AND path = $2";

/// Deletes the rows of file `$1` from `target`, found by `column`.
pub fn delete_file_rows(target: &str, column: &str) -> String {
    format!("DELETE FROM {target} WHERE {} = $1", ident(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        vec!["id".into(), "name".into()]
    }

    #[test]
    fn only_canonical_uuids_are_uuids() {
        let u = canonical_uuid("424cdd21-063a-43a7-b91b-7ca1a833afae").unwrap();
        assert_eq!(u.as_bytes()[..4], [0x42, 0x4c, 0xdd, 0x21]);
        assert_eq!(u.as_bytes()[15], 0xae);
        for not in [
            "424CDD21-063a-43a7-b91b-7ca1a833afae",
            "424cdd21063a43a7b91b7ca1a833afae",
            "{424cdd21-063a-43a7-b91b-7ca1a833afae}",
            "424cdd21-063a-43a7-b91b-7ca1a833afa",
            "424cdd21-063a-43a7-b91b-7ca1a833afaeX",
            "424cdd21+063a-43a7-b91b-7ca1a833afae",
            "dead-letter:12",
            "",
        ] {
            assert_eq!(canonical_uuid(not), None, "{not}");
        }
    }

    #[test]
    fn ledger_ids_are_grouped_in_runs_of_partitions() {
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        let l = LedgerIds::new([(25, a), (3, "dead-letter:1"), (21, b), (5, "x")]);
        // Partitions 0 and 2: one row covering both.
        assert_eq!((l.parts.clone(), l.lasts.clone()), (vec![0], vec![2]));
        assert_eq!(l.texts, ["dead-letter:1", "x"]);
        assert_eq!(l.uuids, [canonical_uuid(a).unwrap(), canonical_uuid(b).unwrap()]);
        assert_eq!((l.text_from, l.text_to), (vec![1], vec![2]));
        assert_eq!((l.uuid_from, l.uuid_to), (vec![1], vec![2]));
        assert_eq!(LedgerIds::new([]), LedgerIds::default());
    }

    fn sqs_id(i: usize) -> String {
        format!("{i:08x}-0000-4a7e-9d1c-5f3b8e2a6c0d")
    }

    #[test]
    fn a_trickle_takes_a_row_per_480_messages() {
        // 100 messages/s: each in a 10 ms partition of its own.
        let ids: Vec<String> = (0..1000).map(sqs_id).collect();
        let l = LedgerIds::new(ids.iter().enumerate().map(|(i, id)| (1_795_000_000_000 + 10 * i as i64, id.as_str())));
        let first = 179_500_000_000;
        assert_eq!(l.parts, [first, first + 480, first + 960]);
        assert_eq!(l.lasts, [first + 479, first + 959, first + 999]);
        assert_eq!((l.uuid_from.clone(), l.uuid_to.clone()), (vec![1, 481, 961], vec![480, 960, 1000]));
        // One look-up range, from the span's reach before the first.
        assert_eq!(
            l.look_up(),
            (vec![LEGACY_PART, first - LEDGER_MAX_SPAN], vec![LEGACY_PART, first], vec![LEGACY_PART, first + 999])
        );
    }

    #[test]
    fn a_busy_queue_takes_a_row_per_480_messages_whole_partitions_each() {
        // 10,000 messages/s: 100 a partition.
        let ids: Vec<String> = (0..1000).map(sqs_id).collect();
        let l = LedgerIds::new(ids.iter().enumerate().map(|(i, id)| (i as i64 / 10, id.as_str())));
        assert_eq!((l.parts.clone(), l.lasts.clone()), (vec![0, 4, 8], vec![3, 7, 9]));
        assert_eq!(l.uuid_to, [400, 800, 1000]);
        // Rows whose scans overlap are read by one range.
        assert_eq!(l.look_up(), (vec![LEGACY_PART, -LEDGER_MAX_SPAN], vec![LEGACY_PART, 0], vec![LEGACY_PART, 9]));
    }

    #[test]
    fn a_row_spans_at_most_the_cap_and_the_legacy_partition_is_alone() {
        let ids: Vec<String> = (0..4).map(sqs_id).collect();
        let far = 10 * (LEDGER_MAX_SPAN + 1);
        let l = LedgerIds::new([
            (SENT_UNKNOWN, ids[0].as_str()),
            (0, ids[1].as_str()),
            (10 * LEDGER_MAX_SPAN, ids[2].as_str()),
            (10 * LEDGER_MAX_SPAN + far, ids[3].as_str()),
        ]);
        assert_eq!(l.parts, [LEGACY_PART, 0, LEDGER_MAX_SPAN + LEDGER_MAX_SPAN + 1]);
        assert_eq!(l.lasts, [LEGACY_PART, LEDGER_MAX_SPAN, LEDGER_MAX_SPAN + LEDGER_MAX_SPAN + 1]);
        assert!(l.parts.iter().zip(&l.lasts).all(|(p, q)| q - p <= LEDGER_MAX_SPAN));
        // The second row's scan would start past the first's end: two ranges.
        let second = 2 * LEDGER_MAX_SPAN + 1;
        assert_eq!(
            l.look_up(),
            (
                vec![LEGACY_PART, -LEDGER_MAX_SPAN, second - LEDGER_MAX_SPAN],
                vec![LEGACY_PART, 0, second],
                vec![LEGACY_PART, LEDGER_MAX_SPAN, second]
            )
        );
        // Far apart (a redelivery of an old message among new ones): two
        // ranges, never the span between them.
        let l = LedgerIds::new([(0, ids[1].as_str()), (10_000_000, ids[2].as_str())]);
        assert_eq!(
            l.look_up(),
            (
                vec![LEGACY_PART, -LEDGER_MAX_SPAN, 1_000_000 - LEDGER_MAX_SPAN],
                vec![LEGACY_PART, 0, 1_000_000],
                vec![LEGACY_PART, 0, 1_000_000]
            )
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("user_logins"), "\"user_logins\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("public", "t"), "\"public\".\"t\"");
    }

    #[test]
    fn readable_names_are_bare_only_when_they_read_back_the_same() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]), "sorted, for the binary search");
        assert_eq!(readable("user_logins"), "user_logins");
        assert_eq!(readable("_x1"), "_x1");
        assert_eq!(readable("Contact Phone Number"), "\"Contact Phone Number\"");
        assert_eq!(readable("City"), "\"City\"");
        assert_eq!(readable("1st"), "\"1st\"");
        assert_eq!(readable("user"), "\"user\"");
        assert_eq!(readable("order"), "\"order\"");
        assert_eq!(readable("straße"), "\"straße\"");
        assert_eq!(readable("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(readable_qualified("public", "Kunden"), "public.\"Kunden\"");
    }

    #[test]
    fn staging_and_copy() {
        assert_eq!(
            create_staging("\"etl_stage_t\"", "\"public\".\"t\"", &cols()),
            "SET LOCAL client_min_messages = warning; CREATE TEMP TABLE IF NOT EXISTS \"etl_stage_t\" ON COMMIT DELETE ROWS AS \
             SELECT \"id\", \"name\", 0::bigint AS \"_etl_seq\" FROM \"public\".\"t\" WITH NO DATA"
        );
        assert_eq!(copy_in("\"s\"", &cols(), true), "COPY \"s\" (\"id\", \"name\", \"_etl_seq\") FROM STDIN");
        assert_eq!(copy_in("\"p\".\"t\"", &cols(), false), "COPY \"p\".\"t\" (\"id\", \"name\") FROM STDIN");
    }

    #[test]
    fn the_probe_has_the_targets_types() {
        let columns = [("Contact Phone".to_string(), "character varying(32)".to_string())];
        assert_eq!(create_probe(&columns), "CREATE TEMP TABLE \"etl_probe\" (\"Contact Phone\" character varying(32))");
    }

    #[test]
    fn merges_by_mode() {
        assert!(merge(&MergeMode::Append, "t", "s", &cols()).is_empty());
        let upsert = merge(&MergeMode::Upsert { key: vec!["id".into()] }, "t", "s", &cols());
        assert_eq!(
            upsert,
            vec![
                "INSERT INTO t (\"id\", \"name\") SELECT DISTINCT ON (\"id\", CASE WHEN \"id\" IS NULL THEN \"_etl_seq\" END) \"id\", \"name\" FROM s \
                 ORDER BY \"id\", CASE WHEN \"id\" IS NULL THEN \"_etl_seq\" END, \"_etl_seq\" DESC ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
            ]
        );
        let only_key = merge(&MergeMode::Upsert { key: vec!["id".into()] }, "t", "s", &["id".to_string()]);
        assert!(only_key[0].ends_with("ON CONFLICT (\"id\") DO NOTHING"));
        let di = merge(&MergeMode::DeleteInsert { key: vec!["id".into()] }, "t", "s", &cols());
        assert_eq!(
            di,
            vec![
                "DELETE FROM t t USING (SELECT DISTINCT \"id\" FROM s) s WHERE t.\"id\" = s.\"id\"".to_string(),
                "INSERT INTO t (\"id\", \"name\") SELECT DISTINCT ON (\"id\", CASE WHEN \"id\" IS NULL THEN \"_etl_seq\" END) \"id\", \"name\" FROM s \
                 ORDER BY \"id\", CASE WHEN \"id\" IS NULL THEN \"_etl_seq\" END, \"_etl_seq\" DESC"
                    .to_string(),
            ]
        );
    }
}
