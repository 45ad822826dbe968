//! Production's throughput with a candidate running in shadow, as a ratio
//! to without, measured in the same run: the logins chain (flatten,
//! app-version, mask sha256) on 2 worker threads (as `[batch] workers = 2`
//! has it), each running batches of 500 Fetch records as fast as it can;
//! the shadow is the host's own (`host::shadow`: the bounded queue, the
//! candidate's thread at nice 10, `diff::compare`, the summary stored in
//! PostgreSQL every second), its candidate the same chain masking with
//! SHA-512. Rounds with and without the shadow alternate.
//!
//! `cargo bench -p tests --bench shadow` (PostgreSQL at DATABASE_URL or the
//! tests' server, migrated first).

use host::batch::{self, Batch, BatchBuilder};
use host::config;
use host::reload::Generation;
use host::shadow::{Offer, Setup, Tap};
use host::status::Panel;
use host::transform::{Engine, Loaded, TransformChain};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WORKERS: usize = 2;
const BATCH: usize = 500;
const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_secs(3);

fn main() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let plugins = vec![PathBuf::from(env!("PLUGIN_DIR"))];
    let engine = Arc::new(Engine::new(None, plugins).expect("engine"));
    // The tests' server unless DATABASE_URL says another; migrated here.
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(host::migrate::run(&url)).expect("migrations apply");
    drop(runtime);
    let file = ws.join("pipelines/logins.toml");
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "algorithm = \"sha256\" }\n",
        "algorithm = \"sha256\" }\nshadow = { params = { fields = { ip = \"masked_ip\", device_id = \"masked_device_id\" }, algorithm = \"sha512\" } }\n",
        1,
    );
    let text = text.replace("name = \"logins\"", &format!("name = \"bench_shadow_{}\"", std::process::id()));
    let pipeline = config::validate(&file, config::parse_str(&file, &text, |_| None).unwrap()).expect("valid");
    let loaded = Loaded::load(&engine, &pipeline).expect("plugins");
    let lineage = host::transform::lineage(loaded.plugins.iter());
    let batches = Arc::new(make_batches(&ws, BATCH, 20_000));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let panel = Panel::detached(&pipeline.name);
    let generation = Arc::new(Generation { number: 1, pipeline: pipeline.clone(), loaded: loaded.clone() });
    let (_keep, generations) = tokio::sync::watch::channel(generation);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tap = runtime.block_on(async {
        let setup = Setup {
            engine: engine.clone(),
            panel: panel.clone(),
            pool: host::sink::pool(&url, 1).expect("a pool"),
            generations,
            requests: None,
            stop: stopped,
        };
        host::shadow::start(setup).await
    });
    assert!(tap.active(), "the candidate runs: {:?}", panel.shadow());

    println!(
        "production: logins chain, {WORKERS} workers, batches of {BATCH}; candidate in shadow: the same with SHA-512 masks"
    );
    println!("{:>5} | {:>16} | {:>16} | {:>5}", "round", "without rec/s", "with rec/s", "ratio");
    println!("{:->5}-+-{:->16}-+-{:->16}-+-{:->5}", "", "", "", "");
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let without = throughput(&engine, &pipeline, &loaded, &batches, None, &lineage);
        let with = throughput(&engine, &pipeline, &loaded, &batches, Some(tap.clone()), &lineage);
        ratios.push(with / without);
        println!("{round:>5} | {without:>16.0} | {with:>16.0} | {:>5.2}", with / without);
    }
    ratios.sort_by(f64::total_cmp);
    std::thread::sleep(Duration::from_millis(1500));
    let view = panel.shadow().expect("a view");
    println!(
        "median ratio {:.2}; the candidate compared {} batches ({} records), skipped {}; CPU production {:.1} s, candidate {:.1} s (while both ran)",
        ratios[ROUNDS / 2],
        view.batches,
        view.records,
        view.skipped,
        view.production_cpu_s,
        view.candidate_cpu_s
    );
    stop.send_replace(true);
}

/// Records per second of `WORKERS` threads, each with its own chain, over
/// `ROUND_TIME`; each batch offered to `tap` when there is one.
fn throughput(
    engine: &Arc<Engine>,
    pipeline: &config::Pipeline,
    loaded: &Loaded,
    batches: &Arc<Vec<Batch>>,
    tap: Option<Arc<Tap>>,
    lineage: &str,
) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut chain = TransformChain::instantiate(engine, pipeline, loaded).expect("chain");
            let (batches, done, over, tap, lineage) =
                (batches.clone(), done.clone(), over.clone(), tap.clone(), lineage.to_string());
            std::thread::spawn(move || {
                for b in batches.iter().cycle().skip(w * 7) {
                    if over.load(Ordering::Relaxed) {
                        break;
                    }
                    let start = host::shadow::thread_cpu();
                    let out = chain.run(b).expect("runs");
                    let cpu = host::shadow::thread_cpu().saturating_sub(start);
                    done.fetch_add(b.records.len(), Ordering::Relaxed);
                    if let Some(tap) = tap.as_ref().filter(|t| t.active()) {
                        let labels = (0..b.records.len()).map(|i| format!("message {i}")).collect();
                        let offer = Offer {
                            lineage: lineage.clone(),
                            batch: b.clone(),
                            production: out,
                            production_cpu: cpu,
                            labels,
                        };
                        tap.offer(offer);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(ROUND_TIME);
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    over.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / secs
}

fn make_batches(ws: &Path, size: usize, total: usize) -> Vec<Batch> {
    let text = std::fs::read_to_string(ws.join("tests/data/fetch_login_queue_bodies.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("user_id")).collect();
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for line in lines.iter().cycle().take(total) {
        batch::json::decode(line.as_bytes(), &mut b).unwrap();
        if b.len() == size {
            out.push(std::mem::take(&mut b).finish());
        }
    }
    out
}
