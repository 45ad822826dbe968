//! `host run`: receive messages, batch them, transform, load, and only then
//! acknowledge. Several receive loops feed one batcher; each worker owns its
//! plugin instances (a `TransformChain`) and loads through the shared sink.
//!
//! Delivery: a message is deleted only after the transaction holding all its
//! rows and dead letters committed; the ledger in that transaction makes a
//! redelivered message add nothing. A batch that could not commit is left
//! alone: its messages come back after their visibility timeout.

use crate::batch::BatchBuilder;
use crate::config::{Pipeline, Source, SqsSourceConfig};
pub use crate::files::run_files;
use crate::input::Decoder;
use crate::mapping::{LoadTime, Mapping};
use crate::reload::{Generation, Watcher};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{PostgresSink, Unit, copy};
use crate::source::{Message, SqsSource};
use crate::transform::{ChainOutput, Engine, Loaded, TransformChain};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, watch};

/// How `run` ends.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Stop once the queue stays empty for `idle` and nothing is in work.
    pub once: bool,
    pub idle: Duration,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub messages: usize,
    pub rows: usize,
    pub dead_letters: usize,
    pub duplicates: usize,
    pub batches: usize,
    pub failed_batches: usize,
    /// New plugin or pipeline versions taken while running, and refused.
    pub swaps: usize,
    pub refused_versions: usize,
    /// S3 objects loaded (completely), and files whose rows were removed
    /// because their object is gone (reconcile).
    pub objects: usize,
    pub objects_removed: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages {}, rows {}, dead letters {}, duplicates skipped {}, batches {}, failed batches {}, \
             versions swapped in {}, refused {}, objects loaded {}, removed {}, elapsed {:.1} s",
            self.messages,
            self.rows,
            self.dead_letters,
            self.duplicates,
            self.batches,
            self.failed_batches,
            self.swaps,
            self.refused_versions,
            self.objects,
            self.objects_removed,
            self.elapsed.as_secs_f64()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: `host run` needs a [source] and a [sink]")]
    Incomplete(String),
    #[error(transparent)]
    Source(#[from] crate::source::SqsError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Chain(#[from] crate::transform::ChainError),
    #[error("{0}")]
    Stopped(String),
}

/// Everything a worker needs, shared.
struct Shared {
    engine: Arc<Engine>,
    pipeline: Pipeline,
    sqs: SqsSourceConfig,
    source: SqsSource,
    sink: PostgresSink,
    mapping: Mapping,
    decoder: Decoder,
    summary: std::sync::Mutex<Summary>,
    /// Batches dispatched and not finished.
    in_flight: AtomicUsize,
    /// Receives that came back empty, so far: `--once` stops only after
    /// one did since the last activity (a slow endpoint is not an empty queue).
    empty_receives: AtomicUsize,
    /// Set when a worker meets an error that must stop the run.
    fatal: std::sync::Mutex<Option<String>>,
}

/// Runs `pipeline` until `shutdown` resolves (or, with `once`, the queue
/// stays empty).
pub async fn run(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &aws_config::SdkConfig,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let name = pipeline.file.display().to_string();
    let (Some(Source::Sqs(sqs)), Some(sink_config)) = (pipeline.source.clone(), pipeline.sink.clone()) else {
        if let (Some(Source::S3(_)), Some(_)) = (&pipeline.source, &pipeline.sink) {
            return crate::files::run_files(pipeline, engine, database_url, aws, opts, shutdown).await;
        }
        return Err(RunError::Incomplete(name));
    };
    let source = SqsSource::with_config(aws, &sqs.queue).await?;
    let pool = crate::sink::pool(database_url, pipeline.workers + 1)?;
    let sealer = crate::sink::dead_letter::Sealer::from_env().map_err(RunError::Stopped)?;
    if sealer.is_none() {
        tracing::warn!(pipeline = %pipeline.name, "HOST_DEAD_LETTER_KEY is not set: dead-letter payloads are stored unencrypted (in etl.dead_letter_payloads, no PUBLIC access)");
    }
    let sink = PostgresSink::new(pool, &pipeline.name, &format!("sqs:{}", sqs.queue), &sink_config, sealer);
    let versions = Versions::start(&engine, &pipeline).await?;
    let shared = Arc::new(Shared {
        engine,
        mapping: Mapping::new(&sink_config),
        decoder: Decoder::new(&pipeline),
        pipeline,
        sqs,
        source,
        sink,
        summary: Default::default(),
        in_flight: AtomicUsize::new(0),
        empty_receives: AtomicUsize::new(0),
        fatal: Default::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (chains, generations, watching) = versions.watch(stop_rx.clone());
    // Small: messages wait here without their visibility being extended.
    let (msg_tx, mut msg_rx) = mpsc::channel::<Message>(10 * shared.sqs.receivers);
    let receivers: Vec<_> = (0..shared.sqs.receivers)
        .map(|_| tokio::spawn(receive_loop(shared.clone(), msg_tx.clone(), stop_rx.clone(), opts)))
        .collect();
    drop(msg_tx);
    let pruning = tokio::spawn(prune_ledger(shared.clone(), stop_rx.clone()));
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let batch_rx = Arc::new(Mutex::new(batch_rx));
    let workers: Vec<_> = chains
        .into_iter()
        .map(|c| tokio::spawn(worker(shared.clone(), c, generations.clone(), batch_rx.clone())))
        .collect();

    let leftover = batch_loop(&shared, &mut msg_rx, &batch_tx, opts, shutdown).await;
    // Stop receiving; release what was received but not dispatched.
    let _ = stop_tx.send(true);
    for r in receivers {
        let _ = r.await;
    }
    let mut unsent = leftover;
    while let Ok(m) = msg_rx.try_recv() {
        unsent.push(m);
    }
    if !unsent.is_empty() {
        release(&shared, unsent).await;
    }
    drop(batch_tx);
    for w in workers {
        let _ = w.await;
    }
    let _ = pruning.await;
    let mut summary = shared.summary.lock().expect("not poisoned").clone();
    watching.finish(&mut summary).await;
    summary.elapsed = started.elapsed();
    if let Some(why) = shared.fatal.lock().expect("not poisoned").take() {
        return Err(RunError::Stopped(why));
    }
    Ok(summary)
}

/// The workers' chains, and the versions they take between batches.
pub(crate) struct Versions {
    chains: Vec<TransformChain>,
    /// Holds the channel of the first (and, without a watcher, only) version.
    keep_first: watch::Sender<Arc<Generation>>,
    watcher: Option<Watcher>,
}

/// A running watcher of new versions, and what it counted.
pub(crate) struct Watching {
    task: Option<tokio::task::JoinHandle<()>>,
    counts: Option<Arc<crate::reload::Counts>>,
    _keep_first: watch::Sender<Arc<Generation>>,
}

impl Versions {
    /// Loads the pipeline's plugins and a chain per worker; watches the
    /// pipeline's file when it asks for live swaps.
    pub(crate) async fn start(engine: &Arc<Engine>, pipeline: &Pipeline) -> Result<Versions, RunError> {
        let (e, p) = (engine.clone(), pipeline.clone());
        let loaded = tokio::task::spawn_blocking(move || Loaded::load(&e, &p)).await.expect("no panic")?;
        let first = Arc::new(Generation { number: 1, pipeline: pipeline.clone(), loaded });
        let mut chains = Vec::new();
        for _ in 0..pipeline.workers {
            let (engine, first) = (engine.clone(), first.clone());
            let chain = tokio::task::spawn_blocking(move || {
                TransformChain::instantiate(&engine, &first.pipeline, &first.loaded)
            })
            .await
            .expect("no panic")?;
            chains.push(chain);
        }
        // Watch the file the pipeline came from (a pipeline built in memory has none).
        let text = pipeline.reload.and_then(|every| Some((every, std::fs::read_to_string(&pipeline.file).ok()?)));
        let watcher = match text {
            // Off the async threads: looking at S3 plugins blocks.
            Some((every, text)) => {
                let (engine, first) = (engine.clone(), first.clone());
                Some(
                    tokio::task::spawn_blocking(move || Watcher::new(engine, first, text, every))
                        .await
                        .expect("no panic"),
                )
            }
            None => None,
        };
        let (keep_first, _) = watch::channel(first);
        Ok(Versions { chains, keep_first, watcher })
    }

    /// Starts watching until `stop`; gives the chains and the channel of
    /// versions.
    pub(crate) fn watch(
        self,
        stop: watch::Receiver<bool>,
    ) -> (Vec<TransformChain>, watch::Receiver<Arc<Generation>>, Watching) {
        let generations = self.watcher.as_ref().map_or_else(|| self.keep_first.subscribe(), Watcher::subscribe);
        let counts = self.watcher.as_ref().map(Watcher::counts);
        let task = self.watcher.map(|w| tokio::spawn(w.run(stop)));
        (self.chains, generations, Watching { task, counts, _keep_first: self.keep_first })
    }
}

impl Watching {
    /// Waits for the watcher (told to stop) and adds its counts.
    pub(crate) async fn finish(self, summary: &mut Summary) {
        if let Some(t) = self.task {
            let _ = t.await;
        }
        if let Some(c) = self.counts {
            summary.swaps = c.swaps.load(Ordering::Relaxed);
            summary.refused_versions = c.refused.load(Ordering::Relaxed);
        }
    }
}

/// A new version, checked by the watcher, is taken between batches: each
/// batch runs on one version from start to end.
pub(crate) async fn take_new_version(
    engine: &Arc<Engine>,
    chain: TransformChain,
    generations: &mut watch::Receiver<Arc<Generation>>,
) -> TransformChain {
    if !generations.has_changed().unwrap_or(false) {
        return chain;
    }
    let next = generations.borrow_and_update().clone();
    let engine = engine.clone();
    let built = tokio::task::spawn_blocking(move || {
        TransformChain::instantiate(&engine, &next.pipeline, &next.loaded).map(|c| (c, next.number))
    })
    .await
    .expect("no panic");
    match built {
        Ok((c, number)) => {
            tracing::debug!(generation = number, "worker on the new version");
            c
        }
        Err(e) => {
            tracing::error!(error = %e, "could not instantiate the new version; this worker keeps the old one");
            chain
        }
    }
}

/// Keeps the ledger to what can still come back: once an hour, the rows of
/// messages sent before the queue's retention period (and a day more) go.
async fn prune_ledger(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    const DAY_MS: i64 = 86_400_000;
    loop {
        let retention = match shared.source.retention().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue's retention; the ledger is not pruned this time");
                Duration::MAX
            }
        };
        if retention != Duration::MAX {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let cutoff = now as i64 - retention.as_millis() as i64 - DAY_MS;
            match shared.sink.prune_ledger(cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pipeline = %shared.pipeline.name, rows = n, "ledger pruned past the queue's retention")
                }
                Err(e) => tracing::warn!(error = %e, "could not prune the ledger; trying again in an hour"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Receives until told to stop; pushes each message to the batcher.
async fn receive_loop(shared: Arc<Shared>, tx: mpsc::Sender<Message>, stop: watch::Receiver<bool>, opts: RunOptions) {
    let wait = if opts.once { shared.sqs.wait.min(Duration::from_secs(1)) } else { shared.sqs.wait };
    loop {
        if *stop.borrow() {
            return;
        }
        // Not cancelled by a stop: SQS may already have handed the messages
        // out, and a dropped answer would leave them invisible for a whole
        // visibility timeout. What comes back after a stop is released.
        let received = shared.source.receive(wait, shared.sqs.visibility).await;
        match received {
            Ok(messages) => {
                if messages.is_empty() {
                    shared.empty_receives.fetch_add(1, Ordering::SeqCst);
                }
                let mut messages = messages.into_iter();
                while !*stop.borrow() {
                    let Some(m) = messages.next() else { break };
                    if let Err(unsent) = tx.send(m).await {
                        release(&shared, std::iter::once(unsent.0).chain(messages).collect()).await;
                        return;
                    }
                }
                let rest: Vec<Message> = messages.collect();
                if !rest.is_empty() {
                    release(&shared, rest).await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "receive failed; retrying in 1 s");
                // Nothing to wait for either: `--once` may stop.
                shared.empty_receives.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Makes messages visible again at once (they were received, not loaded).
async fn release(shared: &Shared, messages: Vec<Message>) {
    let refs: Vec<&Message> = messages.iter().collect();
    if let Err(e) = shared.source.set_visibility(&refs, Duration::ZERO).await {
        tracing::warn!(error = %e, "could not release messages; they return after their visibility timeout");
    }
}

/// Groups messages into batches of `max_records` or `max_wait`; returns the
/// messages not dispatched when it stops.
async fn batch_loop(
    shared: &Arc<Shared>,
    rx: &mut mpsc::Receiver<Message>,
    tx: &mpsc::Sender<Batch>,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Vec<Message> {
    tokio::pin!(shutdown);
    let mut pending: Vec<Message> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut last_activity = Instant::now();
    let mut empty_before = shared.empty_receives.load(Ordering::SeqCst);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let full = pending.len() >= shared.pipeline.max_records;
        let due = deadline.is_some_and(|d| d <= tokio::time::Instant::now());
        if !pending.is_empty() && (full || due) {
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let messages = std::mem::take(&mut pending);
            // From now until the batch is acknowledged or given up.
            let keeper = keep_visible(shared.clone(), messages.clone());
            if tx.send(Batch { messages, keeper }).await.is_err() {
                return Vec::new();
            }
            deadline = None;
            last_activity = Instant::now();
            empty_before = shared.empty_receives.load(Ordering::SeqCst);
        }
        if shared.fatal.lock().expect("not poisoned").is_some() {
            return pending;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    if pending.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + shared.pipeline.max_wait);
                    }
                    pending.push(m);
                    last_activity = Instant::now();
                    empty_before = shared.empty_receives.load(Ordering::SeqCst);
                }
                None => return pending,
            },
            _ = tick.tick() => {
                if shared.in_flight.load(Ordering::SeqCst) > 0 {
                    last_activity = Instant::now();
                    empty_before = shared.empty_receives.load(Ordering::SeqCst);
                }
                let empty_since = shared.empty_receives.load(Ordering::SeqCst) > empty_before;
                if opts.once && pending.is_empty() && empty_since && last_activity.elapsed() >= opts.idle {
                    return pending;
                }
            }
            _ = &mut shutdown => return pending,
        }
    }
}

/// A batch of messages on its way to a worker, kept invisible to others.
struct Batch {
    messages: Vec<Message>,
    keeper: tokio::task::JoinHandle<()>,
}

async fn worker(
    shared: Arc<Shared>,
    mut chain: TransformChain,
    mut generations: watch::Receiver<Arc<Generation>>,
    rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
) {
    loop {
        let batch = { rx.lock().await.recv().await };
        let Some(Batch { messages, keeper }) = batch else { return };
        chain = take_new_version(&shared.engine, chain, &mut generations).await;
        chain = process(&shared, chain, messages, keeper).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One batch, start to acknowledgement. Gives the chain back.
async fn process(
    shared: &Arc<Shared>,
    chain: TransformChain,
    messages: Vec<Message>,
    keeper: tokio::task::JoinHandle<()>,
) -> TransformChain {
    let span = tracing::info_span!("batch", pipeline = %shared.pipeline.name, messages = messages.len());
    let _enter = span.enter();
    let (chain, prepared) = prepare(shared, chain, &messages).await;
    let result = match prepared {
        Ok((units, plugins)) => shared.sink.commit(units, &plugins).await.map_err(|e| (e.retryable(), e.to_string())),
        Err(e) => Err((true, e)),
    };
    keeper.abort();
    match result {
        Ok(report) => {
            let refs: Vec<&Message> = messages.iter().collect();
            match shared.source.delete(&refs).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(failed = n, "some deletes failed; those messages will come back and add nothing")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "delete failed; the messages will come back and add nothing")
                }
            }
            // Copies of one message delivered into the same batch count as
            // duplicates too.
            let distinct = messages.iter().map(|m| m.id.as_str()).collect::<std::collections::HashSet<_>>().len();
            let mut s = shared.summary.lock().expect("not poisoned");
            s.messages += distinct - report.duplicates;
            s.duplicates += report.duplicates + (messages.len() - distinct);
            s.rows += report.rows;
            s.dead_letters += report.dead_letters;
            s.batches += 1;
        }
        Err((retryable, why)) => {
            shared.summary.lock().expect("not poisoned").failed_batches += 1;
            if retryable {
                tracing::error!(error = %why, "batch not committed; its messages will be received again");
            } else {
                tracing::error!(error = %why, "stopping: the batch cannot be committed as configured");
                *shared.fatal.lock().expect("not poisoned") = Some(why);
            }
        }
    }
    chain
}

/// Extends the messages' visibility every half timeout while their batch is
/// in work.
fn keep_visible(shared: Arc<Shared>, messages: Vec<Message>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = shared.sqs.visibility / 2;
        loop {
            tokio::time::sleep(every).await;
            let refs: Vec<&Message> = messages.iter().collect();
            if let Err(e) = shared.source.set_visibility(&refs, shared.sqs.visibility).await {
                tracing::warn!(error = %e, "could not extend visibility");
            }
        }
    })
}

/// Decodes, transforms and encodes a batch into sink units.
async fn prepare(
    shared: &Arc<Shared>,
    chain: TransformChain,
    messages: &[Message],
) -> (TransformChain, Result<(Vec<Unit>, String), String>) {
    let mut units: Vec<Unit> =
        messages.iter().map(|m| Unit { message_id: m.id.clone(), sent_ms: m.sent_ms, ..Unit::default() }).collect();
    let mut builder = BatchBuilder::new();
    let mut record_message = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        if !seen.insert(m.id.as_str()) {
            // Delivered twice into this batch (SQS is at-least-once): the
            // copy contributes nothing, and both receipts are deleted.
            units[i].message_id.clear();
            continue;
        }
        if m.receive_count > shared.sqs.max_receives {
            let reason = format!("received {} times (max_receives = {})", m.receive_count, shared.sqs.max_receives);
            units[i].dead.push(dead("source", reason, m));
            continue;
        }
        match shared.decoder.decode_message(&m.body, Some(m), &mut builder) {
            Ok(()) => record_message.push(i),
            Err(reason) => units[i].dead.push(dead("input", reason, m)),
        }
    }
    let (chain, out) = run_chain(chain, builder.finish()).await;
    let out = match out {
        Ok(out) => out,
        Err(e) => return (chain, Err(e.to_string())),
    };
    let load = LoadTime::now();
    fill_units(&shared.mapping, &load, &out, &record_message, &mut units, |i| messages[i].receive_count as i32);
    // Every message keeps its body with the batch: the database may still
    // refuse its row, and then it becomes a dead letter that can be replayed.
    for (u, m) in units.iter_mut().zip(messages) {
        u.payload = m.body.clone();
    }
    units.retain(|u| !u.message_id.is_empty());
    let plugins: Vec<serde_json::Value> =
        chain.plugins().map(|p| serde_json::json!({"name": p.name, "digest": p.digest})).collect();
    (chain, Ok((units, serde_json::Value::Array(plugins).to_string())))
}

/// Runs `batch` through `chain` on a blocking thread; gives the chain back.
pub(crate) async fn run_chain(
    chain: TransformChain,
    batch: crate::batch::Batch,
) -> (TransformChain, Result<ChainOutput, crate::transform::StepError>) {
    tokio::task::spawn_blocking(move || {
        let mut chain = chain;
        let out = chain.run(&batch);
        (chain, out)
    })
    .await
    .expect("the chain does not panic")
}

/// Writes a chain's output into the units its records came from:
/// `record_unit[r]` is the unit of input record `r`; `received(u)` the
/// receive count of unit `u`'s message.
pub(crate) fn fill_units(
    mapping: &Mapping,
    load: &LoadTime,
    out: &ChainOutput,
    record_unit: &[usize],
    units: &mut [Unit],
    received: impl Fn(usize) -> i32,
) {
    let keys = mapping.keys(&out.batch);
    for (cells, &record) in out.batch.iter().zip(&out.origin) {
        let u = &mut units[record_unit[record as usize]];
        copy::write_row(&mut u.rows, mapping, &out.batch, &keys, cells, load);
        u.row_count += 1;
    }
    for r in &out.rejected {
        let i = record_unit[r.record as usize];
        units[i].dead.push(DeadLetter {
            record_index: 0,
            stage: "transform",
            step: Some(r.step as i32),
            plugin: Some(r.plugin.clone()),
            plugin_digest: Some(r.digest.clone()),
            reason: r.reason.clone(),
            received_count: received(i),
        });
    }
}

fn dead(stage: &'static str, reason: String, m: &Message) -> DeadLetter {
    DeadLetter {
        record_index: 0,
        stage,
        step: None,
        plugin: None,
        plugin_digest: None,
        reason,
        received_count: m.receive_count as i32,
    }
}
