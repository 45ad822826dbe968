//! The model: what a history of operations should leave in the tables,
//! and the histories themselves, drawn from a seed. Generation looks only
//! at the model (which keys live, the versioning state, the events made so
//! far), never at the real system, so a seed always gives the same list.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;

/// Keys the histories use (`h/f0.csv` ...): few, so that they collide.
pub const KEYS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

/// One step of a history.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A new content for key `key`: `rows` rows (the key's next generation).
    Put {
        key: usize,
        rows: usize,
    },
    Delete {
        key: usize,
    },
    SetVersioning(Versioning),
    /// The reconcile pipeline, `host run --once`.
    Reconcile,
    /// The reconcile pipeline with its database slowed, SIGKILLed after `after_ms`.
    ReconcileKilled {
        after_ms: u64,
    },
    /// The reconcile pipeline with the first S3 answer over `after_bytes` cut.
    ReconcileS3Cut {
        after_bytes: u64,
    },
    /// The reconcile pipeline with its database refused from `at_ms` for `for_ms`.
    ReconcileDbDown {
        at_ms: u64,
        for_ms: u64,
    },
    /// The event of the `n`th put or delete reaches the queue (maybe late,
    /// maybe out of order).
    Deliver {
        event: usize,
    },
    /// An event delivered before arrives again.
    Redeliver {
        event: usize,
    },
    /// The notifications pipeline, `host run --once`.
    Notifications,
    /// The notifications pipeline with its database slowed, SIGKILLed after `after_ms`.
    NotificationsKilled {
        after_ms: u64,
    },
    /// `host backfill` of the notifications pipeline.
    Backfill,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, rows } => write!(f, "put f{key} ({rows} rows)"),
            Op::Delete { key } => write!(f, "delete f{key}"),
            Op::SetVersioning(v) => write!(f, "versioning {v:?}"),
            Op::Reconcile => write!(f, "reconcile pass"),
            Op::ReconcileKilled { after_ms } => write!(f, "reconcile pass, SIGKILL after {after_ms} ms"),
            Op::ReconcileS3Cut { after_bytes } => write!(f, "reconcile pass, an S3 answer cut after {after_bytes} B"),
            Op::ReconcileDbDown { at_ms, for_ms } => {
                write!(f, "reconcile pass, PostgreSQL refused from {at_ms} ms for {for_ms} ms")
            }
            Op::Deliver { event } => write!(f, "deliver event {event}"),
            Op::Redeliver { event } => write!(f, "deliver event {event} again"),
            Op::Notifications => write!(f, "notifications run"),
            Op::NotificationsKilled { after_ms } => write!(f, "notifications run, SIGKILL after {after_ms} ms"),
            Op::Backfill => write!(f, "backfill"),
        }
    }
}

/// What the bucket holds in the model: each live key's content (its
/// generation and row count), every content each key ever had, and the
/// events made so far (put or delete, by key).
#[derive(Debug, Clone)]
pub struct Model {
    pub versioning: Versioning,
    pub live: BTreeMap<usize, (u32, usize)>,
    pub ever: BTreeMap<usize, Vec<(u32, usize)>>,
    generation: u32,
    pub events: usize,
    pub delivered: Vec<bool>,
}

impl Model {
    pub fn new(versioning: Versioning) -> Model {
        Model {
            versioning,
            live: BTreeMap::new(),
            ever: BTreeMap::new(),
            generation: 0,
            events: 0,
            delivered: Vec::new(),
        }
    }

    /// Moves the model by one operation; the new generation of a put.
    pub fn apply(&mut self, op: &Op) -> Option<u32> {
        match op {
            Op::Put { key, rows } => {
                self.generation += 1;
                self.live.insert(*key, (self.generation, *rows));
                self.ever.entry(*key).or_default().push((self.generation, *rows));
                self.events += 1;
                self.delivered.push(false);
                return Some(self.generation);
            }
            Op::Delete { key } => {
                self.live.remove(key);
                self.events += 1;
                self.delivered.push(false);
            }
            Op::SetVersioning(v) => self.versioning = *v,
            Op::Deliver { event } | Op::Redeliver { event } => self.delivered[*event] = true,
            _ => {}
        }
        None
    }
}

/// The rows of content `generation` of key `key`: `(id, body)`.
pub fn rows(key: usize, generation: u32, count: usize) -> Vec<(i32, String)> {
    (1..=count).map(|i| (i as i32, format!("f{key}-g{generation}-r{i}"))).collect()
}

/// The CSV text of those rows (headerless: id, body).
pub fn csv(key: usize, generation: u32, count: usize) -> String {
    rows(key, generation, count).iter().map(|(id, body)| format!("{id},{body}\n")).collect()
}

/// A history of `len` operations drawn from `seed`, and the versioning the
/// bucket starts with.
pub fn history(seed: u64, len: usize) -> (Versioning, Vec<Op>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = if rng.random_bool(0.5) { Versioning::Enabled } else { Versioning::Unversioned };
    let mut model = Model::new(start);
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let op = draw(&mut rng, &model);
        model.apply(&op);
        ops.push(op);
    }
    (start, ops)
}

fn draw(rng: &mut StdRng, m: &Model) -> Op {
    let undelivered: Vec<usize> = (0..m.events).filter(|&e| !m.delivered[e]).collect();
    let delivered: Vec<usize> = (0..m.events).filter(|&e| m.delivered[e]).collect();
    loop {
        let op = match rng.random_range(0..100) {
            0..25 => {
                let rows = if rng.random_bool(0.25) { rng.random_range(20..=40) } else { rng.random_range(1..=8) };
                Op::Put { key: rng.random_range(0..KEYS), rows }
            }
            25..31 if !m.live.is_empty() => {
                let keys: Vec<usize> = m.live.keys().copied().collect();
                Op::Delete { key: keys[rng.random_range(0..keys.len())] }
            }
            31..35 => Op::SetVersioning(match m.versioning {
                Versioning::Enabled => Versioning::Suspended,
                _ => Versioning::Enabled,
            }),
            35..44 => Op::Reconcile,
            44..49 => Op::ReconcileKilled { after_ms: rng.random_range(100..2500) },
            49..53 => Op::ReconcileS3Cut { after_bytes: rng.random_range(100..3000) },
            53..56 => Op::ReconcileDbDown { at_ms: rng.random_range(0..1500), for_ms: rng.random_range(500..3000) },
            56..72 if !undelivered.is_empty() => {
                // Mostly the oldest (in order), else any (late, out of order).
                let i = if rng.random_bool(0.5) { 0 } else { rng.random_range(0..undelivered.len()) };
                Op::Deliver { event: undelivered[i] }
            }
            72..76 if !delivered.is_empty() => Op::Redeliver { event: delivered[rng.random_range(0..delivered.len())] },
            76..87 => Op::Notifications,
            87..92 => Op::NotificationsKilled { after_ms: rng.random_range(100..2500) },
            92..96 => Op::Backfill,
            _ => continue,
        };
        return op;
    }
}
