//! Runs asked for by hand (`POST /pipelines/NAME/run`): a reconcile
//! pipeline starts a pass, a queue pipeline drains what waits. Each run has
//! an id, a state and the counts of what happened while it ran.

use super::Summary;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::Notify;

/// Where a run on demand is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Asked for, not yet taken by the pipeline.
    Queued,
    Running,
    Done,
    /// The pipeline stopped (or failed) before the run ended.
    Interrupted(String),
}

impl RunState {
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Interrupted(_) => "interrupted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: u64,
    pub state: RunState,
    pub requested: SystemTime,
    pub finished: Option<SystemTime>,
    /// The pipeline's counts when the run started, and what it did since.
    baseline: Summary,
    pub counts: Summary,
}

/// The most runs remembered per pipeline.
const KEPT: usize = 100;

/// A pipeline's runs on demand.
#[derive(Default)]
pub struct Runs {
    list: Mutex<(u64, VecDeque<RunRecord>)>,
    wake: Notify,
}

impl Runs {
    /// Asks for a run; its id.
    pub fn request(&self) -> u64 {
        let mut list = self.list.lock().expect("not poisoned");
        list.0 += 1;
        let id = list.0;
        if list.1.len() == KEPT {
            list.1.pop_front();
        }
        let record = RunRecord {
            id,
            state: RunState::Queued,
            requested: SystemTime::now(),
            finished: None,
            baseline: Summary::default(),
            counts: Summary::default(),
        };
        list.1.push_back(record);
        drop(list);
        self.wake.notify_one();
        id
    }

    /// Resolves once a run was asked for since the last [`Runs::start`]
    /// (at once if one waits already).
    pub async fn requested(&self) {
        loop {
            if self.waiting() {
                return;
            }
            self.wake.notified().await;
        }
    }

    fn waiting(&self) -> bool {
        self.list.lock().expect("not poisoned").1.iter().any(|r| r.state == RunState::Queued)
    }

    /// Starts the runs asked for (with the pipeline's counts `now`); their
    /// ids.
    pub fn start(&self, now: &Summary) -> Vec<u64> {
        let mut list = self.list.lock().expect("not poisoned");
        let mut ids = Vec::new();
        for r in list.1.iter_mut().filter(|r| r.state == RunState::Queued) {
            r.state = RunState::Running;
            r.baseline = now.clone();
            ids.push(r.id);
        }
        ids
    }

    /// Ends runs `ids` (with the pipeline's counts `now`): done, or
    /// interrupted with why.
    pub fn end(&self, ids: &[u64], now: &Summary, interrupted: Option<&str>) {
        let mut list = self.list.lock().expect("not poisoned");
        for r in list.1.iter_mut().filter(|r| ids.contains(&r.id)) {
            // One that never started did nothing.
            if r.state == RunState::Running {
                r.counts = now.since(&r.baseline);
            }
            r.finished = Some(SystemTime::now());
            r.state = match interrupted {
                Some(why) => RunState::Interrupted(why.to_string()),
                None => RunState::Done,
            };
        }
    }

    /// Ends every run not ended: the pipeline stopped.
    pub fn interrupt_all(&self, now: &Summary, why: &str) {
        let ids: Vec<u64> = {
            let list = self.list.lock().expect("not poisoned");
            list.1.iter().filter(|r| matches!(r.state, RunState::Queued | RunState::Running)).map(|r| r.id).collect()
        };
        self.end(&ids, now, Some(why));
    }

    /// Run `id`, with what it did so far while it runs.
    pub fn get(&self, id: u64, now: &Summary) -> Option<RunRecord> {
        let list = self.list.lock().expect("not poisoned");
        let mut r = list.1.iter().find(|r| r.id == id)?.clone();
        if r.state == RunState::Running {
            r.counts = now.since(&r.baseline);
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_counts_what_happened_between_its_start_and_end() {
        let runs = Runs::default();
        let id = runs.request();
        assert_eq!(runs.get(id, &Summary::default()).unwrap().state, RunState::Queued);
        let before = Summary { rows: 10, ..Summary::default() };
        assert_eq!(runs.start(&before), vec![id]);
        assert!(runs.start(&before).is_empty(), "a run starts once");
        let during = Summary { rows: 15, ..Summary::default() };
        assert_eq!(runs.get(id, &during).unwrap().counts.rows, 5);
        runs.end(&[id], &Summary { rows: 30, objects: 2, ..Summary::default() }, None);
        let r = runs.get(id, &Summary { rows: 99, ..Summary::default() }).unwrap();
        assert_eq!((r.state, r.counts.rows, r.counts.objects), (RunState::Done, 20, 2));
    }

    #[tokio::test]
    async fn requested_resolves_for_a_run_asked_before_or_after() {
        let runs = std::sync::Arc::new(Runs::default());
        runs.request();
        runs.requested().await;
        runs.start(&Summary::default());
        let r = runs.clone();
        let waiter = tokio::spawn(async move { r.requested().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        runs.request();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }
}
