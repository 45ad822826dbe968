//! The logins chain (flatten, app-version, mask sha256) in WebAssembly, under
//! the sandbox limits (epoch deadline, memory cap), against the same plugin
//! logic compiled natively, at batches of 1, 100 and 1,000 records; the same
//! for a `filter` -> `convert` chain and for `mask` alone on records of 30
//! fields, each also with every step given whole records
//! (`HOST_PROJECTION=off`); then how
//! fast the sandbox stops a runaway plugin; last, start-up with and without
//! the compiled-component cache.
//!
//! `cargo bench -p tests --bench transform` (or `cargo xtask bench`). Prints
//! a table; figures are medians of several rounds on one thread.
//! `BENCH_SECTION=chains` prints only the two chains' WebAssembly /
//! native tables. `BENCH_SECTION=polyglot` prints only the Rust / Python / JavaScript
//! table.

use host::batch::{self, Batch, BatchBuilder};
use host::config;
use host::transform::{Engine, TransformChain};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(400);

fn main() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let plugins = vec![PathBuf::from(env!("PLUGIN_DIR")), PathBuf::from(env!("TEST_PLUGIN_DIR"))];
    let engine = Arc::new(Engine::new(None, plugins.clone()).expect("engine"));
    // Every step given whole records, though some declare their fields:
    // the chains' figures without projection, in the same run.
    let whole = Arc::new(Engine::new(None, plugins).expect("engine").with_projection(false));
    let lines = fetch_lines(&ws);
    if let Some(size) = std::env::var("PROFILE_WASM").ok().and_then(|s| s.parse().ok()) {
        // For `perf record`: only the WASM chain, at batches of `size`.
        let pipeline = config::load(&ws.join("pipelines/logins.toml")).expect("pipeline");
        let mut chain = TransformChain::build(&engine, &pipeline).expect("chain");
        let batches = make_batches(&lines, size, 20_000);
        let r = rate(&batches, || (), |_, b| chain.run(b).expect("runs").batch.records.len());
        println!("wasm rec/s at {size}: {r:.0}");
        return;
    }
    if std::env::var("BENCH_SECTION").is_ok_and(|s| s == "polyglot") {
        // `BENCH_SECTION=polyglot`: only the languages' table.
        polyglot(&engine, &lines);
        return;
    }
    println!("logins chain: flatten -> app-version -> mask (sha256 x2); {} distinct Fetch records", lines.len());
    chain_header();
    for size in [1usize, 100, 1000] {
        let batches = make_batches(&lines, size, 20_000usize.max(size));
        let native = rate(&batches, || native_chain(), |c, b| c.run(b));
        let pipeline = config::load(&ws.join("pipelines/logins.toml")).expect("pipeline");
        let mut rates = [&engine, &whole].map(|e| {
            let mut chain = TransformChain::build(e, &pipeline).expect("chain");
            rate(&batches, || (), |_, b| chain.run(b).expect("runs").batch.records.len())
        });
        chain_row(size, native, &mut rates);
    }
    filter_convert(&engine, &whole, &lines);
    wide_mask(&engine, &whole, &lines);
    if std::env::var("BENCH_SECTION").is_ok_and(|s| s == "chains") {
        // `BENCH_SECTION=chains`: only the two chains' tables.
        return;
    }
    polyglot(&engine, &lines);
    metrics_cost(&ws, &engine, &lines);
    decode_rate(&lines);
    sandbox_stops(&engine);
    cold_start(&ws);
}

/// `filter` (device type in a set, locale present) then `convert` (text to
/// float, epoch milliseconds and a strftime pattern to timestamps) on the
/// Fetch records with three fields added, in WebAssembly against the same
/// two plugins compiled natively. Rates are input records per second (the
/// filter drops some).
fn filter_convert(engine: &Arc<Engine>, whole: &Arc<Engine>, lines: &[String]) {
    const FILTER: &str =
        r#"{"all":[{"field":"device_type","in":["android","ios"]},{"field":"locale","is_null":false}]}"#;
    const CONVERT: &str = r#"{"fields":{"amount":{"to":"float","default":0.0},"seen":{"to":"timestamp","format":"epoch-millis"},"created":{"to":"timestamp","format":"%Y-%m-%d %H:%M:%S"}}}"#;
    let text = format!(
        "[[transforms]]\nuses = \"filter\"\nparams = {}\n\n[[transforms]]\nuses = \"convert\"\nparams = {}\n",
        toml_of(FILTER),
        toml_of(CONVERT)
    );
    let path = Path::new("filter-convert.toml");
    let pipeline = config::validate(path, config::parse_str(path, &text, |_| None).expect("parses")).expect("valid");
    let lines: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let extra = format!(
                r#","amount":"{}.50","seen":{},"created":"2023-02-01 08:{:02}:00"}}"#,
                i % 90,
                1_675_238_400_000i64 + i as i64 * 1000,
                i % 60
            );
            l.trim_end().trim_end_matches('}').to_string() + &extra
        })
        .collect();
    println!("\nfilter -> convert (a float, two timestamps) on the same records with three fields added");
    chain_header();
    for size in [1usize, 100, 1000] {
        let batches = make_batches(&lines, size, 20_000usize.max(size));
        let native = rate(
            &batches,
            || -> (filter::Filter, convert::Convert) {
                (plugin_sdk::configure(FILTER).unwrap(), plugin_sdk::configure(CONVERT).unwrap())
            },
            |(f, c), b| {
                let (batch, _) = plugin_sdk::run_columns(f, b.to_columns());
                let _ = plugin_sdk::run_columns(c, batch);
                b.records.len()
            },
        );
        let mut rates = [engine, whole].map(|e| {
            let mut chain = TransformChain::build(e, &pipeline).expect("chain");
            rate(
                &batches,
                || (),
                |_, b| {
                    chain.run(b).expect("runs");
                    b.records.len()
                },
            )
        });
        chain_row(size, native, &mut rates);
    }
}

/// `mask` alone (sha256 of two fields into renamed ones) on the Fetch
/// records with 24 text fields added (30 in all): what projection saves
/// grows with the fields a step does not read.
fn wide_mask(engine: &Arc<Engine>, whole: &Arc<Engine>, lines: &[String]) {
    const MASK: &str = r#"{"fields":{"ip":"masked_ip","device_id":"masked_device_id"},"algorithm":"sha256"}"#;
    let text = format!("[[transforms]]\nuses = \"mask\"\nparams = {}\n", toml_of(MASK));
    let path = Path::new("wide-mask.toml");
    let pipeline = config::validate(path, config::parse_str(path, &text, |_| None).expect("parses")).expect("valid");
    let lines: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let extra: String = (0..24).map(|f| format!(r#","attr_{f}":"value {f} of record {i}""#)).collect();
            l.trim_end().trim_end_matches('}').to_string() + &extra + "}"
        })
        .collect();
    println!("\nmask alone on the same records with 24 text fields added (30 in all)");
    chain_header();
    for size in [1usize, 100, 1000] {
        let batches = make_batches(&lines, size, 20_000usize.max(size));
        let native = rate(
            &batches,
            || -> mask::Mask { plugin_sdk::configure(MASK).unwrap() },
            |m, b| plugin_sdk::run_columns(m, b.to_columns()).0.records.len(),
        );
        let mut rates = [engine, whole].map(|e| {
            let mut chain = TransformChain::build(e, &pipeline).expect("chain");
            rate(&batches, || (), |_, b| chain.run(b).expect("runs").batch.records.len())
        });
        chain_row(size, native, &mut rates);
    }
}

/// The chains' table: native, WebAssembly, and WebAssembly with every step
/// given whole records (`HOST_PROJECTION=off`).
fn chain_header() {
    println!(
        "{:>6} | {:>14} | {:>14} | {:>11} | {:>14} | {:>11}",
        "batch", "native rec/s", "wasm rec/s", "wasm/native", "whole rec/s", "whole/native"
    );
    println!("{:->6}-+-{:->14}-+-{:->14}-+-{:->11}-+-{:->14}-+-{:->11}", "", "", "", "", "", "");
}

fn chain_row(size: usize, native: f64, rates: &mut [f64; 2]) {
    let [wasm, whole] = *rates;
    println!(
        "{size:>6} | {native:>14.0} | {wasm:>14.0} | {:>11.2} | {whole:>14.0} | {:>11.2}",
        wasm / native,
        whole / native
    );
}

/// The logins chain's `mask` step alone (sha256 of two fields of six, into
/// renamed fields) as the Rust plugin and its Python and JavaScript ports
/// (`cargo xtask polyglot` builds those; a missing one is said and
/// skipped): records/s at batches of 100 and 1,000, the instance's memory
/// after them, and start-up (compile, and from the compiled cache).
fn polyglot(engine: &Arc<Engine>, lines: &[String]) {
    const MASK: &str = r#"fields = { ip = "masked_ip", device_id = "masked_device_id" }, algorithm = "sha256""#;
    let dir = PathBuf::from(env!("PLUGIN_DIR"));
    println!(
        "
mask (sha256 x2 of six fields) by language, in WebAssembly, the same records"
    );
    println!(
        "{:<11} | {:>12} | {:>12} | {:>9} | {:>9} | {:>10} | {:>10} | {:>8}",
        "plugin", "rec/s @100", "rec/s @1000", "vs Rust", "peak mem", "compile", "cached", ".wasm"
    );
    println!(
        "{:-<11}-+-{:->12}-+-{:->12}-+-{:->9}-+-{:->9}-+-{:->10}-+-{:->10}-+-{:->8}",
        "", "", "", "", "", "", "", ""
    );
    let mut rust_rate = None;
    for name in ["mask", "py-mask", "js-mask"] {
        let file = dir.join(format!("{name}.wasm"));
        if !file.is_file() {
            println!("{name:<11} | not built ({} is missing: cargo xtask polyglot)", file.display());
            continue;
        }
        // The limits its pipelines give each: the defaults (64 MiB, 1 s a
        // call), and 128 MiB for JavaScript (SpiderMonkey collects lazily).
        let cap = if name == "js-mask" { "max_memory_mb = 128\n" } else { "" };
        let body = format!("[[transforms]]\nuses = \"{name}\"\n{cap}params = {{ {MASK} }}\n");
        let path = Path::new("polyglot.toml");
        let pipeline =
            config::validate(path, config::parse_str(path, &body, |_| None).expect("parses")).expect("valid");
        let mut rates = Vec::new();
        let mut memory = 0;
        for size in [100usize, 1000] {
            let batches = make_batches(lines, size, 20_000);
            let mut chain = TransformChain::build(engine, &pipeline).expect("chain");
            rates.push(rate(&batches, || (), |_, b| chain.run(b).expect("runs").batch.records.len()));
            memory = memory.max(chain.memory_bytes()[0].unwrap_or(0));
        }
        let versus = match rust_rate {
            None => {
                rust_rate = Some(rates[1]);
                1.0
            }
            Some(r) => rates[1] / r,
        };
        let (compiled, cached) = start_up(&pipeline);
        println!(
            "{name:<11} | {:>12.0} | {:>12.0} | {:>9.3} | {:>5.1} MiB | {:>7.0} ms | {:>7.0} ms | {:>5.1} MB",
            rates[0],
            rates[1],
            versus,
            memory as f64 / 1048576.0,
            compiled.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            std::fs::metadata(&file).map_or(0, |m| m.len()) as f64 / 1e6
        );
    }
}

/// Start-up of a one-step chain in a fresh engine: compiling (once), and
/// from the compiled cache (median of three).
fn start_up(pipeline: &config::Pipeline) -> (Duration, Duration) {
    let cache = std::env::temp_dir().join(format!("bench-cache-polyglot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let compiled = start_once(pipeline, Some(cache.clone()));
    let mut cached: Vec<Duration> = (0..3).map(|_| start_once(pipeline, Some(cache.clone()))).collect();
    cached.sort();
    let _ = std::fs::remove_dir_all(&cache);
    (compiled, cached[1])
}

/// One start of `pipeline`'s chain in a fresh engine (find, load, link,
/// instantiate, configure), compiling unless `cache` holds the components.
fn start_once(pipeline: &config::Pipeline, cache: Option<PathBuf>) -> Duration {
    let t = Instant::now();
    let engine = Arc::new(Engine::new(cache, vec![PathBuf::from(env!("PLUGIN_DIR"))]).expect("engine"));
    TransformChain::build(&engine, pipeline).expect("chain");
    t.elapsed()
}

/// A JSON object as a TOML inline table (keys quoted, the rest as JSON,
/// which TOML reads the same for strings, numbers, booleans and arrays).
fn toml_of(json: &str) -> String {
    fn value(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(m) => {
                let items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?} = {}", value(v))).collect();
                format!("{{ {} }}", items.join(", "))
            }
            serde_json::Value::Array(a) => format!("[{}]", a.iter().map(value).collect::<Vec<_>>().join(", ")),
            other => other.to_string(),
        }
    }
    value(&serde_json::from_str(json).unwrap())
}

/// The same WASM chain with its metrics off (no recorder: what `host run`
/// without `--admin` has) and on (a Prometheus recorder, as with
/// `--admin`), rounds interleaved in one run.
fn metrics_cost(ws: &Path, engine: &Arc<Engine>, lines: &[String]) {
    let pipeline = config::load(&ws.join("pipelines/logins.toml")).expect("pipeline");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    println!("\nmetrics: the WASM chain with its metrics off and on (a Prometheus recorder), interleaved");
    println!("{:>6} | {:>14} | {:>14} | {:>7}", "batch", "off rec/s", "on rec/s", "on/off");
    println!("{:->6}-+-{:->14}-+-{:->14}-+-{:->7}", "", "", "", "");
    for size in [1usize, 100, 1000] {
        let batches = make_batches(lines, size, 20_000usize.max(size));
        let mut off = TransformChain::build(engine, &pipeline).expect("chain");
        let mut on =
            metrics::with_local_recorder(&recorder, || TransformChain::build(engine, &pipeline).expect("chain"));
        let (mut offs, mut ons) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            offs.push(rate(&batches, || (), |_, b| off.run(b).expect("runs").batch.records.len()));
            ons.push(rate(&batches, || (), |_, b| on.run(b).expect("runs").batch.records.len()));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (off, on) = (median(offs), median(ons));
        println!("{size:>6} | {off:>14.0} | {on:>14.0} | {:>7.3}", on / off);
    }
    let calls = recorder.handle().render().lines().filter(|l| l.starts_with("etl_plugin_call_seconds_count")).count();
    assert!(calls > 0, "the recorder saw the plugin calls");
}

/// Start-up of the logins chain (find, load, link, instantiate, configure
/// its three plugins) in a fresh engine: compiling, against taking the
/// compiled components from the cache a previous start left.
fn cold_start(ws: &Path) {
    let pipeline = config::load(&ws.join("pipelines/logins.toml")).expect("pipeline");
    let cache = std::env::temp_dir().join(format!("bench-cache-{}", std::process::id()));
    let start = |cache: Option<PathBuf>| start_once(&pipeline, cache);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let compiled = median((0..5).map(|_| start(None)).collect());
    let _ = std::fs::remove_dir_all(&cache);
    let first = start(Some(cache.clone()));
    let cached = median((0..5).map(|_| start(Some(cache.clone()))).collect());
    let _ = std::fs::remove_dir_all(&cache);
    println!(
        "start-up of the logins chain: compiling {:.0} ms, first start with an empty cache {:.0} ms, \
         from the cache {:.0} ms ({:.1}x faster)",
        compiled.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        compiled.as_secs_f64() / cached.as_secs_f64()
    );
}

/// The 99 good Fetch bodies.
fn fetch_lines(ws: &Path) -> Vec<String> {
    std::fs::read_to_string(ws.join("tests/data/fetch_login_queue_bodies.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("user_id"))
        .map(str::to_string)
        .collect()
}

fn make_batches(lines: &[String], size: usize, total: usize) -> Vec<Batch> {
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

/// Median records/s over rounds of running every batch repeatedly.
fn rate<S>(batches: &[Batch], setup: impl Fn() -> S, mut run: impl FnMut(&mut S, &Batch) -> usize) -> f64 {
    let mut state = setup();
    let records: usize = batches.iter().map(|b| b.records.len()).sum();
    for b in batches.iter().take(50) {
        run(&mut state, b); // warm up
    }
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut done = 0usize;
        while start.elapsed() < ROUND_TIME {
            for b in batches {
                assert_eq!(run(&mut state, b), b.records.len());
            }
            done += records;
        }
        rates.push(done as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rates[ROUNDS / 2]
}

/// The three plugins' logic, compiled natively, on the SDK's batch type.
struct Native {
    flatten: flatten::Flatten,
    version: app_version::AppVersion,
    mask: mask::Mask,
}

fn native_chain() -> Native {
    Native {
        flatten: plugin_sdk::configure(r#"{"separator":"_"}"#).unwrap(),
        version: plugin_sdk::configure(r#"{"field":"app_version"}"#).unwrap(),
        mask: plugin_sdk::configure(
            r#"{"fields":{"ip":"masked_ip","device_id":"masked_device_id"},"algorithm":"sha256"}"#,
        )
        .unwrap(),
    }
}

impl Native {
    /// The three steps on the column form, as the components run them;
    /// encoding the input stands for the copy the host makes into columns.
    fn run(&mut self, b: &Batch) -> usize {
        let batch = b.to_columns();
        let (batch, _) = plugin_sdk::run_columns(&mut self.flatten, batch);
        let (batch, _) = plugin_sdk::run_columns(&mut self.version, batch);
        let (batch, _) = plugin_sdk::run_columns(&mut self.mask, batch);
        batch.records.len()
    }
}

fn decode_rate(lines: &[String]) {
    let total = 100_000;
    let start = Instant::now();
    let batches = make_batches(lines, 1000, total);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(batches.len(), total / 1000);
    println!("\nJSON decode into batches (host, native): {:.0} rec/s", total as f64 / secs);
}

/// Time for the sandbox to stop an endless loop (default budget 1 s) and to
/// refuse a 1 GiB allocation (default cap 64 MiB).
fn sandbox_stops(engine: &Arc<Engine>) {
    println!("\nsandbox:");
    for (mode, what) in [("loop", "endless loop stopped"), ("alloc", "1 GiB allocation refused")] {
        let body = format!("[[transforms]]\nuses = \"hostile\"\nparams = {{ mode = \"{mode}\" }}\n");
        let path = Path::new("bench.toml");
        let p = config::validate(path, config::parse_str(path, &body, |_| None).unwrap()).unwrap();
        let mut chain = TransformChain::build(engine, &p).unwrap();
        let mut b = BatchBuilder::new();
        batch::json::decode(br#"{"i":1}"#, &mut b).unwrap();
        let b = b.finish();
        let start = Instant::now();
        let out = chain.run(&b).unwrap();
        let took = start.elapsed();
        println!("  {what} after {:.0} ms: {}", took.as_secs_f64() * 1000.0, out.rejected[0]);
    }
}
