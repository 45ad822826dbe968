//! `host lineage PIPELINE`: which batches each plugin version wrote, and
//! with `--digest`, the batches and source message ids of one version.
//!
//! Must not change anything.

use crate::config;
use std::path::Path;

/// Prints the pipeline's plugin versions with their batches and rows, or,
/// for one digest, its batches (newest first, at most `limit`) and their
/// message ids. Returns the number of batches printed.
pub async fn show(path: &Path, digest: Option<&str>, limit: i64, url: &str) -> anyhow::Result<usize> {
    let pipeline = config::load(path)?;
    let client = super::dead_letters::connect(url).await?;
    let Some(digest) = digest else {
        let rows = client
            .query(
                "SELECT p->>'name', p->>'digest', count(*), sum(b.rows_written), sum(b.dead_letters), \
                 min(b.committed_at)::text, max(b.committed_at)::text \
                 FROM etl.batches b, jsonb_array_elements(b.plugins) p WHERE b.pipeline = $1 \
                 GROUP BY 1, 2 ORDER BY min(b.committed_at)",
                &[&pipeline.name],
            )
            .await?;
        println!("plugin\tdigest\tbatches\trows\tdead letters\tfirst\tlast");
        for r in &rows {
            let (name, digest, batches): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            let (rows, dead): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
            let (first, last): (String, String) = (r.get(5), r.get(6));
            println!("{name}\t{digest}\t{batches}\t{}\t{}\t{first}\t{last}", rows.unwrap_or(0), dead.unwrap_or(0));
        }
        return Ok(rows.len());
    };
    let rows = client
        .query(
            "SELECT b.id, b.committed_at::text, b.messages, b.rows_written, b.dead_letters, \
             coalesce((SELECT array_agg(m) FROM etl.receipts r, unnest(r.message_ids || r.message_uuids::text[]) m \
                       WHERE r.batch_id = b.id AND r.pipeline = b.pipeline), '{}') \
             FROM etl.batches b WHERE b.pipeline = $1 AND b.plugins @> jsonb_build_array(jsonb_build_object('digest', $2::text)) \
             ORDER BY b.id DESC LIMIT $3",
            &[&pipeline.name, &digest, &limit],
        )
        .await?;
    println!("batch\tcommitted\tmessages\trows\tdead letters\tmessage ids");
    for r in &rows {
        let (id, at, messages, written, dead): (i64, String, i32, i32, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let ids: Vec<String> = r.get(5);
        println!("{id}\t{at}\t{messages}\t{written}\t{dead}\t{}", ids.join(","));
    }
    Ok(rows.len())
}
