//! The wasmtime engine, the linker, the epoch ticker, the compiled-component
//! cache, and loading plugins from `.wasm` files.
//!
//! Must not run batches: steps and chains do.

use super::sandbox::StepState;
use super::wit;
use crate::config::{Grants, Limits};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};

/// Interval of the epoch ticker: the resolution of the per-call time budget.
pub const TICK: Duration = Duration::from_millis(10);

/// Compiles plugins and makes stores for them. Clone-cheap parts inside.
pub struct Engine {
    pub(super) engine: wasmtime::Engine,
    pub(super) linker: Arc<Linker<StepState>>,
    /// Where compiled components are kept across runs, if anywhere.
    cache: Option<super::cache::Cache>,
    /// Folders searched for plugins before the pipeline's own and the
    /// defaults (from `--plugin-path` and `$HOST_PLUGIN_PATH`).
    plugin_path: Vec<PathBuf>,
    /// Where S3 plugins come from.
    remote: super::remote::Remote,
    /// Whether steps that declare their fields get only those
    /// (`HOST_PROJECTION=off` gives every step whole records).
    projection: bool,
}

/// A plugin that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{name}` not found; looked for {file} in: {searched}")]
    NotFound { name: String, file: String, searched: String },
    #[error("plugin `{name}`: cannot read {path}: {error}")]
    Read { name: String, path: PathBuf, error: std::io::Error },
    #[error("plugin `{name}`: {path} is not a valid WebAssembly component: {reason}")]
    Compile { name: String, path: PathBuf, reason: String },
    #[error("plugin `{name}`: {path} does not fit the etl:transform/plugin@0.1.0 world: {reason}")]
    World { name: String, path: PathBuf, reason: String },
    #[error("plugin `{name}`: {path} has digest {actual}, but the step pins {expected}")]
    Digest { name: String, path: PathBuf, expected: String, actual: String },
    #[error("wasmtime engine: {0}")]
    Engine(String),
}

/// A compiled, pre-linked plugin. Immutable: a new version is a new `Plugin`.
pub struct Plugin {
    /// The name a pipeline uses.
    pub name: String,
    pub path: PathBuf,
    /// `sha256:` and the hex digest of the `.wasm` bytes.
    pub digest: String,
    pub size: u64,
    pub description: wit::Description,
    /// Whether it exports `fields` (the `projecting-plugin` world): its
    /// configured steps may declare the fields they use.
    pub projecting: bool,
    pub(super) pre: wit::PluginPre<StepState>,
}

impl Plugin {
    /// The WIT world it was built for.
    pub fn world(&self) -> &'static str {
        if self.projecting { "etl:transform/projecting-plugin@0.1.0" } else { "etl:transform/plugin@0.1.0" }
    }
}

impl Engine {
    /// An engine with epoch interruption and a ticker thread; `cache_dir`
    /// keeps compiled components between runs.
    pub fn new(cache_dir: Option<PathBuf>, plugin_path: Vec<PathBuf>) -> Result<Self, PluginError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if std::env::var_os("HOST_PERF_MAP").is_some() {
            // Names guest functions in `perf` profiles (/tmp/perf-PID.map).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Engine(e.to_string()))?;
        never_block(&mut linker).map_err(|e| PluginError::Engine(e.to_string()))?;
        wit::Plugin::add_to_linker::<_, HasSelf<StepState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        // An unusable (or untrusted) cache only costs compile time.
        let cache = cache_dir.as_deref().and_then(super::cache::Cache::open);
        let projection = std::env::var("HOST_PROJECTION").map_or(true, |v| v != "off");
        Ok(Engine { engine, linker: Arc::new(linker), cache, plugin_path, remote: Default::default(), projection })
    }

    /// This engine with projection on or off (see [`Engine::projection`]).
    pub fn with_projection(mut self, on: bool) -> Self {
        self.projection = on;
        self
    }

    /// Whether a step that declares the fields it uses gets only those
    /// (on unless `HOST_PROJECTION=off`: for comparing, and for ruling it
    /// out when a plugin's output looks wrong).
    pub fn projection(&self) -> bool {
        self.projection
    }

    /// Where S3 plugins come from (`host run` shares its S3 client here).
    pub fn remote(&self) -> &super::remote::Remote {
        &self.remote
    }

    /// The default cache folder: `$HOST_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/etl-host`, else `~/.cache/etl-host`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        env("HOST_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("etl-host")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/etl-host")))
    }

    /// Loads, compiles (or takes from the cache), links and describes the
    /// plugin at `path`; refuses it if `pin` names another digest.
    pub fn load(&self, name: &str, path: &Path, pin: Option<&str>) -> Result<Arc<Plugin>, PluginError> {
        let read = |error| PluginError::Read { name: name.into(), path: path.into(), error };
        let bytes = if super::remote::is_s3(path) {
            self.remote.fetch(&path.to_string_lossy()).map_err(|e| read(std::io::Error::other(e)))?
        } else {
            std::fs::read(path).map_err(read)?
        };
        self.load_bytes(name, path, &bytes, pin)
    }

    /// [`Engine::load`] of bytes already read from `origin`.
    pub fn load_bytes(
        &self,
        name: &str,
        origin: &Path,
        bytes: &[u8],
        pin: Option<&str>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let (path, digest) = (origin, digest_of(bytes));
        if let Some(expected) = pin.filter(|p| *p != digest) {
            let (name, path, expected) = (name.into(), path.into(), expected.into());
            return Err(PluginError::Digest { name, path, expected, actual: digest });
        }
        let component = self.compile(bytes, &digest).map_err(|reason| PluginError::Compile {
            name: name.into(),
            path: path.into(),
            reason,
        })?;
        let world =
            |e: wasmtime::Error| PluginError::World { name: name.into(), path: path.into(), reason: one_line(&e) };
        let pre = self.linker.instantiate_pre(&component).map_err(world)?;
        let pre = wit::PluginPre::new(pre).map_err(world)?;
        let mut store = self.store(&Limits::probe(), &Grants::default(), Default::default());
        let raw = pre.instance_pre().instantiate(&mut store).map_err(world)?;
        let description =
            wit::Plugin::new(&mut store, &raw).and_then(|i| i.call_describe(&mut store)).map_err(world)?;
        // `fields`, if exported, must have the projecting-plugin world's type.
        let projecting = match raw.get_func(&mut store, "fields") {
            None => false,
            Some(f) => {
                f.typed::<(), (Option<wit::Projection>,)>(&store).map_err(world)?;
                true
            }
        };
        Ok(Arc::new(Plugin {
            name: name.into(),
            path: path.into(),
            digest,
            size: bytes.len() as u64,
            description,
            projecting,
            pre,
        }))
    }

    /// A store for one instance, with its limits armed.
    pub(super) fn store(
        &self,
        limits: &Limits,
        grants: &Grants,
        secrets: Arc<std::collections::HashMap<String, Vec<u8>>>,
    ) -> wasmtime::Store<StepState> {
        let mut store = wasmtime::Store::new(&self.engine, StepState::new(limits, grants, secrets));
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(limits.max_call));
        store
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, String> {
        let Some(cache) = &self.cache else {
            return Component::new(&self.engine, bytes).map_err(|e| one_line(&e));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let name = format!("{}-{:016x}.cwasm", digest.trim_start_matches("sha256:"), h.finish());
        if let Some(file) = cache.get(&name) {
            // SAFETY: the cache folder is the host's own (this user's, no
            // one else may write it: `Cache::open`), the file a plain file
            // of this user's, written only by `Cache::put` below for this
            // engine configuration, named by the digest of its source and
            // the engine's compatibility hash.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &file) } {
                return Ok(c);
            }
            let _ = std::fs::remove_file(&file);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| one_line(&e))?;
        if let Ok(serialized) = component.serialize() {
            cache.put(&name, &serialized);
        }
        Ok(component)
    }
}

/// `sha256:` and the hex SHA-256 of `bytes`: a plugin version's identity.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// `sha256:` and the first 12 hex digits.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// An error chain on one line (wasmtime's messages may span several).
fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Epoch ticks for a time budget (at least one). The deadline falls one
/// tick short of the budget, so a call is stopped between `budget - 2 TICK`
/// and `budget - TICK` after it starts (plus the ticker's scheduling delay).
pub(super) fn ticks(budget: Duration) -> u64 {
    (budget.as_millis() / TICK.as_millis()).saturating_sub(1).max(1) as u64
}

impl Limits {
    /// Limits for calling `describe` on a freshly loaded plugin.
    fn probe() -> Limits {
        Limits { max_memory_bytes: 64 << 20, max_call: Duration::from_secs(1) }
    }
}

/// Finds the `.wasm` file for `uses`: an S3 object (`s3://bucket/key`,
/// kept as it is), a path (has `/` or ends in `.wasm`, relative to the
/// pipeline's folder), or a name looked up as `NAME.wasm` in `search`.
pub fn resolve(uses: &str, pipeline_dir: &Path, search: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if uses.starts_with("s3://") {
        return Ok(PathBuf::from(uses));
    }
    if uses.contains('/') || uses.ends_with(".wasm") {
        return Ok(pipeline_dir.join(uses));
    }
    let file = format!("{uses}.wasm");
    for dir in search {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let searched = search.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    Err(PluginError::NotFound { name: uses.into(), file, searched })
}

impl Engine {
    /// The plugin search path for a pipeline: the engine's folders
    /// (`--plugin-path`), `$HOST_PLUGIN_PATH` (colon-separated), the
    /// pipeline's own `plugin_path`, `./target/plugins`, and `plugins` beside
    /// the folder holding the `host` binary (`target/release/../plugins`).
    pub fn search_path(&self, pipeline_path: &[PathBuf]) -> Vec<PathBuf> {
        let mut dirs = self.plugin_path.clone();
        dirs.extend(default_search_path(pipeline_path));
        dirs
    }
}

fn default_search_path(pipeline_path: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("HOST_PLUGIN_PATH")
        .map(|v| v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default();
    dirs.extend(pipeline_path.iter().cloned());
    dirs.push(PathBuf::from("target/plugins"));
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(|p| p.join("plugins"))) {
        dirs.push(dir);
    }
    dirs
}

/// Why a call that waited on `wasi:io/poll` was stopped.
pub const BLOCKED: &str = "waited on wasi:io/poll (a sleep, or a wait for I/O): plugins may not block";

/// Replaces WASI's two ways of waiting (`poll` and `pollable.block`) with
/// ones that stop the call: a host thread blocked in a sleep is not
/// reached by the epoch deadline, so a plugin that sleeps would hold its
/// worker (or the reload watcher, in `describe` and `configure`) past
/// `max_call_ms`. Nothing a transform does needs to wait: it has no I/O,
/// and its stdout and stderr never block.
fn never_block(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap("poll", |_, (_,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
        Err(wasmtime::format_err!("{BLOCKED}"))
    })?;
    poll.func_wrap("[method]pollable.block", |_, (_,): (Resource<DynPollable>,)| -> wasmtime::Result<()> {
        Err(wasmtime::format_err!("{BLOCKED}"))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
