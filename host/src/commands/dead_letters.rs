//! `host dead-letters list | replay`: what could not be loaded, and loading
//! it again through the pipeline as it is now.

use super::EngineOptions;
use crate::batch::BatchBuilder;
use crate::config;
use crate::input::Decoder;
use crate::mapping::{LoadTime, Mapping};
use crate::sink::dead_letter::{DeadLetter, Sealer};
use crate::sink::{PostgresSink, Unit, copy};
use crate::transform::TransformChain;
use anyhow::Context;
use std::path::Path;

pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("cannot connect to the database")?;
    tokio::spawn(conn);
    Ok(client)
}

/// Prints the pipeline's dead letters (never their payloads).
pub async fn list(path: &Path, limit: i64, include_replayed: bool) -> anyhow::Result<usize> {
    let pipeline = config::load(path)?;
    let client = connect(&super::run::database_url()?).await?;
    let rows = client
        .query(
            "SELECT id, failed_at::text, message_id, stage, step, plugin, reason, received_count, \
             coalesce(replay_result, '') FROM etl.dead_letters \
             WHERE pipeline = $1 AND ($3 OR replayed_at IS NULL) ORDER BY id LIMIT $2",
            &[&pipeline.name, &limit, &include_replayed],
        )
        .await?;
    println!("{:>6}  {:<29}  {:<38}  {:<9}  {:<20}  reason", "id", "failed at", "message", "stage", "step");
    for r in &rows {
        let step: Option<i32> = r.get(4);
        let plugin: Option<String> = r.get(5);
        let at = match (step, plugin) {
            (Some(s), Some(p)) => format!("{s} ({p})"),
            _ => "-".into(),
        };
        let replay: String = r.get(8);
        let replay = if replay.is_empty() { String::new() } else { format!(" [replayed: {replay}]") };
        println!(
            "{:>6}  {:<29}  {:<38}  {:<9}  {:<20}  {}{replay}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            at,
            r.get::<_, String>(6)
        );
    }
    Ok(rows.len())
}

/// Replays dead letters (`ids`, or all not yet replayed) through the current
/// pipeline. Returns (loaded, failed again).
pub async fn replay(path: &Path, ids: &[i64], opts: &EngineOptions) -> anyhow::Result<(usize, usize)> {
    replay_with(path, ids, opts, &super::run::database_url()?).await
}

/// [`replay`] against the database at `url`.
pub async fn replay_with(path: &Path, ids: &[i64], opts: &EngineOptions, url: &str) -> anyhow::Result<(usize, usize)> {
    let pipeline = config::load(path)?;
    let sink_config = pipeline.sink.clone().context("the pipeline has no [sink]")?;
    let client = connect(url).await?;
    let rows = client
        .query(
            "SELECT d.id, d.message_id, p.key_id, p.nonce, p.payload FROM etl.dead_letters d \
             JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
             WHERE d.pipeline = $1 AND d.replayed_at IS NULL AND (cardinality($2::bigint[]) = 0 OR d.id = ANY($2)) \
             ORDER BY d.id",
            &[&pipeline.name, &ids],
        )
        .await?;
    let sealer = Sealer::from_env().map_err(anyhow::Error::msg)?;
    let engine = opts.engine()?;
    let p = pipeline.clone();
    let mut chain = tokio::task::spawn_blocking(move || TransformChain::build(&engine, &p)).await??;
    let pool = crate::sink::pool(url, 2)?;
    let sink = PostgresSink::new(pool, &pipeline.name, "replay", &sink_config, sealer);
    let sealer = Sealer::from_env().map_err(anyhow::Error::msg)?;
    let (decoder, mapping) = (Decoder::new(&pipeline), Mapping::new(&sink_config));
    let (mut loaded, mut failed) = (0, 0);
    for row in rows {
        let id: i64 = row.get(0);
        let key_id: Option<String> = row.get(2);
        let payload: Vec<u8> = match (key_id, &sealer) {
            (None, _) => row.get(4),
            (Some(k), Some(s)) => {
                s.open(&k, &row.get::<_, Vec<u8>>(3), &row.get::<_, Vec<u8>>(4)).map_err(anyhow::Error::msg)?
            }
            (Some(k), None) => {
                anyhow::bail!("dead letter {id} is sealed with key {k}; set HOST_DEAD_LETTER_KEY")
            }
        };
        let mut unit = Unit {
            message_id: format!("dead-letter:{id}"),
            payload: payload.clone(),
            // A replay's own ledger partition: its dead letter's id.
            sent_ms: -id,
            ..Unit::default()
        };
        let mut b = BatchBuilder::new();
        let reason = match decoder.decode(&payload, &mut b) {
            Err(reason) => Some(("input", reason, None)),
            Ok(()) => {
                let batch = b.finish();
                let (c, out) = tokio::task::spawn_blocking(move || {
                    let out = chain.run(&batch);
                    (chain, out)
                })
                .await?;
                chain = c;
                let out = out?;
                let keys = mapping.keys(&out.batch);
                let load = LoadTime::now();
                for cells in out.batch.iter() {
                    copy::write_row(&mut unit.rows, &mapping, &out.batch, &keys, cells, &load);
                    unit.row_count += 1;
                }
                out.rejected.first().map(|r| ("transform", r.reason.clone(), Some(r.clone())))
            }
        };
        if let Some((stage, reason, rejection)) = &reason {
            unit.dead.push(DeadLetter {
                record_index: 0,
                stage,
                step: rejection.as_ref().map(|r| r.step as i32),
                plugin: rejection.as_ref().map(|r| r.plugin.clone()),
                plugin_digest: rejection.as_ref().map(|r| r.digest.clone()),
                reason: reason.clone(),
                received_count: 1,
            });
        }
        let report = sink.commit(vec![unit], "[]").await?;
        let result = match &reason {
            None => {
                loaded += 1;
                format!("loaded {} rows", report.rows)
            }
            Some((_, why, _)) => {
                failed += 1;
                format!("failed again: {why}")
            }
        };
        client
            .execute(
                "UPDATE etl.dead_letters SET replayed_at = now(), replay_result = $2 WHERE id = $1",
                &[&id, &result],
            )
            .await?;
        println!("dead letter {id}: {result}");
    }
    Ok((loaded, failed))
}
