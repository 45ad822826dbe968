//! The shadows and decisions in PostgreSQL (`etl.shadows`,
//! `etl.shadow_decisions`, migration V18): what a running host adds to a
//! candidate's summary, the decision that stands for it, and what
//! `host shadow report`, `promote` and `discard` read and write.
//!
//! Must not hold values beyond what a [`Summary`] holds.

use crate::diff::Summary;
use tokio_postgres::GenericClient;

/// What a running host adds to a candidate's row since it last did.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    pub summary: Summary,
    pub batches: u64,
    pub skipped: u64,
    pub trapped: u64,
    pub production_cpu_s: f64,
    pub candidate_cpu_s: f64,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.batches == 0 && self.skipped == 0 && self.trapped == 0
    }

    pub fn absorb(&mut self, other: &Delta) {
        self.summary.absorb(&other.summary);
        self.batches += other.batches;
        self.skipped += other.skipped;
        self.trapped += other.trapped;
        self.production_cpu_s += other.production_cpu_s;
        self.candidate_cpu_s += other.candidate_cpu_s;
    }
}

/// A candidate's row: what it changed so far, over every host that ran it.
#[derive(Debug, Clone)]
pub struct Shadow {
    pub candidate: String,
    pub changes: String,
    pub state: String,
    pub totals: Delta,
    pub started_at: String,
    pub updated_at: String,
}

/// A decision on a candidate and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: i64,
    pub candidate: String,
    pub action: String,
    pub decided_by: String,
    pub decided_at: String,
    /// `None`: not carried out yet; `done` or `refused`.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub settled_at: Option<String>,
}

const SHADOW_COLUMNS: &str = "candidate, changes, state, summary::text, batches, skipped, trapped, production_cpu_s, \
     candidate_cpu_s, started_at::text, updated_at::text";

fn shadow_of(r: &tokio_postgres::Row) -> Shadow {
    let summary: String = r.get(3);
    Shadow {
        candidate: r.get(0),
        changes: r.get(1),
        state: r.get(2),
        totals: Delta {
            summary: serde_json::from_str(&summary).unwrap_or_default(),
            batches: r.get::<_, i64>(4) as u64,
            skipped: r.get::<_, i64>(5) as u64,
            trapped: r.get::<_, i64>(6) as u64,
            production_cpu_s: r.get(7),
            candidate_cpu_s: r.get(8),
        },
        started_at: r.get(9),
        updated_at: r.get(10),
    }
}

/// Adds `delta` to the candidate's row (made if new) in one transaction
/// (the summary's sample and columns are merged here, so several hosts
/// add up); gives the row as it is now.
pub async fn add(
    client: &mut deadpool_postgres::Object,
    pipeline: &str,
    candidate: &str,
    changes: &str,
    delta: &Delta,
) -> Result<Shadow, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO etl.shadows (pipeline, candidate, changes, summary) VALUES ($1, $2, $3, $4::text::jsonb) \
         ON CONFLICT (pipeline, candidate) DO NOTHING",
        &[&pipeline, &candidate, &changes, &json(&Summary::default())],
    )
    .await?;
    let row = tx
        .query_one(
            &format!("SELECT {SHADOW_COLUMNS} FROM etl.shadows WHERE pipeline = $1 AND candidate = $2 FOR UPDATE"),
            &[&pipeline, &candidate],
        )
        .await?;
    let mut shadow = shadow_of(&row);
    shadow.totals.absorb(delta);
    let t = &shadow.totals;
    tx.execute(
        "UPDATE etl.shadows SET summary = $3::text::jsonb, batches = $4, skipped = $5, trapped = $6, production_cpu_s = $7, \
         candidate_cpu_s = $8, changes = $9, updated_at = now() WHERE pipeline = $1 AND candidate = $2",
        &[
            &pipeline,
            &candidate,
            &json(&t.summary),
            &(t.batches as i64),
            &(t.skipped as i64),
            &(t.trapped as i64),
            &t.production_cpu_s,
            &t.candidate_cpu_s,
            &changes,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(shadow)
}

fn json(summary: &Summary) -> String {
    serde_json::to_string(summary).expect("plain data")
}

/// The pipeline's candidates, the most recently updated first.
pub async fn shadows(client: &impl GenericClient, pipeline: &str) -> Result<Vec<Shadow>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {SHADOW_COLUMNS} FROM etl.shadows WHERE pipeline = $1 ORDER BY updated_at DESC"),
            &[&pipeline],
        )
        .await?;
    Ok(rows.iter().map(shadow_of).collect())
}

const DECISION_COLUMNS: &str = "id, candidate, action, decided_by, decided_at::text, outcome, reason, settled_at::text";

fn decision_of(r: &tokio_postgres::Row) -> Decision {
    Decision {
        id: r.get(0),
        candidate: r.get(1),
        action: r.get(2),
        decided_by: r.get(3),
        decided_at: r.get(4),
        outcome: r.get(5),
        reason: r.get(6),
        settled_at: r.get(7),
    }
}

/// The last decision on a candidate, if any.
pub async fn standing(
    client: &impl GenericClient,
    pipeline: &str,
    candidate: &str,
) -> Result<Option<Decision>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {DECISION_COLUMNS} FROM etl.shadow_decisions WHERE pipeline = $1 AND candidate = $2 \
                 ORDER BY id DESC LIMIT 1"
            ),
            &[&pipeline, &candidate],
        )
        .await?;
    Ok(row.as_ref().map(decision_of))
}

/// Every decision on the pipeline's candidates, oldest first.
pub async fn decisions(client: &impl GenericClient, pipeline: &str) -> Result<Vec<Decision>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {DECISION_COLUMNS} FROM etl.shadow_decisions WHERE pipeline = $1 ORDER BY id"),
            &[&pipeline],
        )
        .await?;
    Ok(rows.iter().map(decision_of).collect())
}

/// Records a decision: pipeline, candidate, action (`promote` or
/// `discard`), by whom; returns its id.
pub const DECIDE_SQL: &str = "INSERT INTO etl.shadow_decisions (pipeline, candidate, action, decided_by) \
     VALUES ($1, $2, $3, $4) RETURNING id";

/// A decision's outcome and reason, by id.
pub const OUTCOME_SQL: &str = "SELECT outcome, reason FROM etl.shadow_decisions WHERE id = $1";

/// Records a decision (`promote` or `discard`) to be carried out; gives
/// its id.
pub async fn decide(
    client: &impl GenericClient,
    pipeline: &str,
    candidate: &str,
    action: &str,
    by: &str,
) -> Result<i64, tokio_postgres::Error> {
    let row = client.query_one(DECIDE_SQL, &[&pipeline, &candidate, &action, &by]).await?;
    Ok(row.get(0))
}

/// Records what came of decision `id` (`done`, or `refused` and why) if no
/// host did yet, and the candidate's state after a decision carried out.
pub async fn settle(
    client: &impl GenericClient,
    pipeline: &str,
    decision: &Decision,
    outcome: Result<(), &str>,
) -> Result<(), tokio_postgres::Error> {
    let (label, reason) = match outcome {
        Ok(()) => ("done", None),
        Err(why) => ("refused", Some(why)),
    };
    client
        .execute(
            "UPDATE etl.shadow_decisions SET outcome = $2, reason = $3, settled_at = now() \
             WHERE id = $1 AND outcome IS NULL",
            &[&decision.id, &label, &reason],
        )
        .await?;
    if outcome.is_ok() {
        let state = if decision.action == "promote" { "promoted" } else { "discarded" };
        client
            .execute(
                "UPDATE etl.shadows SET state = $3 WHERE pipeline = $1 AND candidate = $2",
                &[&pipeline, &decision.candidate, &state],
            )
            .await?;
    }
    Ok(())
}

/// A decision by id.
pub async fn decision(client: &impl GenericClient, id: i64) -> Result<Option<Decision>, tokio_postgres::Error> {
    let row =
        client.query_opt(&format!("SELECT {DECISION_COLUMNS} FROM etl.shadow_decisions WHERE id = $1"), &[&id]).await?;
    Ok(row.as_ref().map(decision_of))
}
