//! After quiescence: the tables against the model, and `etl.files` against
//! the bucket.

use crate::model::{self, Model};
use crate::services;
use crate::world::World;
use std::collections::BTreeMap;

/// A table's rows, sorted: (source_file, id, body).
pub type Rows = Vec<(String, i32, String)>;

pub async fn table(schema: &str, table: &str) -> Rows {
    let sql = format!("SELECT source_file, id, body FROM {schema}.{table} ORDER BY 1, 2, 3");
    let rows = services::pg().await.query(&sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// What is wrong, one line each; empty when the system agrees with the model.
pub async fn all(world: &World, m: &Model) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = expected_live(world, m);
    // Reconcile: the table is the bucket, exactly.
    let r = table(&world.schema, "r").await;
    if r != expected {
        problems.push(format!("reconcile table: {}", diff(&expected, &r)));
    }
    // Notifications (no delete events are loaded): each live key's latest
    // content; a deleted key's rows, if any, are one whole content it had.
    let n = table(&world.schema, "n").await;
    let mut by_file: BTreeMap<String, Rows> = BTreeMap::new();
    for row in n {
        by_file.entry(row.0.clone()).or_default().push(row);
    }
    for (key, (generation, count)) in &m.live {
        let want = content(world, *key, *generation, *count);
        let got = by_file.remove(&world.uri(*key)).unwrap_or_default();
        if got != want {
            problems.push(format!("notifications table, f{key}: {}", diff(&want, &got)));
        }
    }
    for (file, got) in by_file {
        let key = (0..model::KEYS).find(|k| world.uri(*k) == file);
        let whole =
            key.is_some_and(|k| m.ever.get(&k).into_iter().flatten().any(|&(g, c)| content(world, k, g, c) == got));
        if !whole {
            problems
                .push(format!("notifications table: {file} holds {} rows that are no whole version of it", got.len()));
        }
    }
    problems.extend(files(world).await);
    problems
}

/// The rows of every live key's latest content.
fn expected_live(world: &World, m: &Model) -> Rows {
    let mut rows: Rows = m.live.iter().flat_map(|(k, (g, c))| content(world, *k, *g, *c)).collect();
    rows.sort();
    rows
}

fn content(world: &World, key: usize, generation: u32, count: usize) -> Rows {
    let mut rows: Rows =
        model::rows(key, generation, count).into_iter().map(|(id, body)| (world.uri(key), id, body)).collect();
    rows.sort();
    rows
}

/// `etl.files` of both pipelines against the bucket: reconcile records
/// each live key once, its current version, done, and nothing else; the
/// notifications pipeline has each live key's current version done; neither
/// leaves a version part-loaded.
async fn files(world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let current = world.current_versions().await;
    let db = services::pg().await;
    for table in ["r", "n"] {
        let pipeline = world.pipeline_name(table);
        let rows = db
            .query("SELECT key, version, done FROM etl.files WHERE pipeline = $1 ORDER BY key, version", &[&pipeline])
            .await
            .unwrap();
        let recorded: Vec<(String, String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        for (key, version, done) in &recorded {
            if !done {
                problems.push(format!("etl.files ({table}): {key} version {version} is left part-loaded"));
            }
        }
        // A version is recorded by its id, or by its ETag where it has no
        // id (or a pass could not ask whether the bucket keeps versions).
        let is = |(k, v, _): &(String, String, bool), (key, id, etag): &(String, Option<String>, String)| {
            k == key && (id.as_ref() == Some(v) || v == etag)
        };
        for current in &current {
            if !recorded.iter().any(|r| r.2 && is(r, current)) {
                problems
                    .push(format!("etl.files ({table}): {}'s current version is not recorded as loaded", current.0));
            }
        }
        if table == "r" {
            let same = recorded.len() == current.len() && recorded.iter().zip(&current).all(|(r, c)| is(r, c));
            if !same {
                problems.push(format!("etl.files (r) holds {recorded:?}, the bucket {current:?}"));
            }
        }
    }
    problems
}

/// A short account of how `got` differs from `want`.
fn diff(want: &Rows, got: &Rows) -> String {
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).collect();
    let mut dup = got.clone();
    dup.dedup();
    let duplicated = got.len() - dup.len();
    let show = |v: &[&(String, i32, String)]| v.iter().take(4).map(|r| r.2.clone()).collect::<Vec<_>>().join(", ");
    format!(
        "{} rows, {} expected; missing {} [{}]; extra {} [{}]; duplicated {}",
        got.len(),
        want.len(),
        missing.len(),
        show(&missing),
        extra.len(),
        show(&extra),
        duplicated
    )
}
