//! Live swap: while `host run` runs, the pipeline file and every step's
//! plugin are looked at every `[reload] interval_ms`. A changed version is a
//! candidate: compiled, checked against the WIT world and any pinned digest,
//! configured, and run on the pipeline's own test cases. Only a candidate
//! that passes all of that is published; workers take it between batches,
//! so a batch runs entirely on one version. A refused candidate is logged
//! with its reason and not tried again until a file changes once more; the
//! running version keeps going.
//!
//! A candidate in shadow (`crate::shadow`) is promoted through the same
//! path: asked for by a [`Request`], checked as any new version (its
//! plugins loaded, configured and run on the test cases), then published.
//! The file still names the old step: a promotion lasts until the file
//! changes (then the file's version is checked and taken, and the shadow
//! module promotes the same candidate again if its decision stands).

use crate::config::{self, Pipeline};
use crate::status::Panel;
use crate::transform::{Engine, Loaded, TransformChain, digest_of, plugin_files, remote, short};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// A pipeline version and its loaded plugins: what workers build their
/// chains from.
pub struct Generation {
    /// 1 for the version `host run` started with.
    pub number: u64,
    pub pipeline: Pipeline,
    pub loaded: Loaded,
}

/// What a version is made of: the pipeline file's revision and, for each
/// step, its plugin file's digest or its S3 object's ETag (or why neither
/// could be read).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fingerprint {
    pipeline: String,
    plugins: Vec<String>,
}

/// A decision the watcher carries out between two looks at the files.
pub enum Request {
    /// Swap in the candidate whose fingerprint is `candidate` (see
    /// [`chain_fingerprint`]); the reply says what changed, or why not.
    Promote { candidate: String, reply: oneshot::Sender<Result<String, String>> },
}

/// The fingerprint of a chain: each step's plugin name and digest, params
/// and grants, as `sha256:...`. Two chains with the same one write the same
/// rows.
pub fn chain_fingerprint(pipeline: &Pipeline, loaded: &Loaded) -> String {
    let steps: Vec<serde_json::Value> = pipeline
        .steps
        .iter()
        .zip(&loaded.plugins)
        .map(|(s, p)| {
            serde_json::json!({
                "plugin": p.name, "digest": p.digest, "params": s.params,
                "grants": {"clock": s.grants.clock, "env": s.grants.env, "secrets": s.grants.secrets},
            })
        })
        .collect();
    digest_of(serde_json::Value::Array(steps).to_string().as_bytes())
}

/// Watches one pipeline; see the module docs.
pub struct Watcher {
    engine: Arc<Engine>,
    path: PathBuf,
    /// `None`: the files are not looked at (only requests are served).
    interval: Option<Duration>,
    requests: mpsc::Receiver<Request>,
    /// Handed to the shadow module; kept so `requests` never closes.
    requester: mpsc::Sender<Request>,
    text: String,
    current: Fingerprint,
    generation: Arc<Generation>,
    refused: HashSet<Fingerprint>,
    /// Digest by file, valid while its modification time and size hold.
    digests: HashMap<PathBuf, (SystemTime, u64, String)>,
    tx: watch::Sender<Arc<Generation>>,
    /// Counts the swaps and refusals, and shows the versions in use.
    panel: Arc<Panel>,
}

impl Watcher {
    /// A watcher of `first` (as started from the file's `text`); workers
    /// subscribe to the returned sender.
    pub fn new(
        engine: Arc<Engine>,
        first: Arc<Generation>,
        text: String,
        interval: Option<Duration>,
        panel: Arc<Panel>,
    ) -> Self {
        let path = first.pipeline.file.clone();
        let (requester, requests) = mpsc::channel(4);
        // The revision the first version came from: a file changed since it
        // was read is a new version at the first look.
        let current = Fingerprint { pipeline: first.pipeline.revision.clone(), plugins: Vec::new() };
        panel.set_revision(&current.pipeline);
        let (tx, _) = watch::channel(first.clone());
        let mut w = Watcher {
            engine,
            path,
            interval,
            requests,
            requester,
            text,
            current,
            generation: first,
            refused: HashSet::new(),
            digests: HashMap::new(),
            tx,
            panel,
        };
        w.current.plugins = w.markers(&w.generation.pipeline.clone());
        w
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.tx.subscribe()
    }

    /// Where to ask for promotions.
    pub fn requester(&self) -> mpsc::Sender<Request> {
        self.requester.clone()
    }

    /// Looks for new versions and serves requests until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let interval = self.interval;
            let look = async move {
                match interval {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            let request = tokio::select! {
                () = look => None,
                r = self.requests.recv() => r,
                _ = stop.changed() => return,
            };
            if *stop.borrow() {
                return;
            }
            self = tokio::task::spawn_blocking(move || {
                match request {
                    None => self.poll(),
                    Some(Request::Promote { candidate, reply }) => {
                        let _ = reply.send(self.promote(&candidate));
                    }
                }
                self
            })
            .await
            .expect("the watcher does not panic");
        }
    }

    /// Swaps in the running generation's candidate, if its fingerprint is
    /// `fingerprint` and it passes the checks of any new version; says what
    /// changed.
    pub fn promote(&mut self, fingerprint: &str) -> Result<String, String> {
        let Some(candidate) = self.generation.pipeline.candidate() else {
            return Err("no candidate runs in shadow now".into());
        };
        let loaded = Loaded::load(&self.engine, &candidate).map_err(|e| e.to_string())?;
        let found = chain_fingerprint(&candidate, &loaded);
        if found != fingerprint {
            return Err(format!("the candidate in shadow is {} now, not {}", short(&found), short(fingerprint)));
        }
        let mut chain = TransformChain::instantiate(&self.engine, &candidate, &loaded).map_err(|e| e.to_string())?;
        crate::cases::first_failure(&candidate, &mut chain)?;
        let changes = format!("promoted: {}", self.describe_changes(&candidate, &loaded));
        self.current.plugins = self.markers(&candidate);
        self.publish(candidate, loaded, &changes);
        Ok(changes)
    }

    /// Makes `pipeline` the version workers take from their next batch.
    fn publish(&mut self, pipeline: Pipeline, loaded: Loaded, changes: &str) {
        let number = self.generation.number + 1;
        self.generation = Arc::new(Generation { number, pipeline, loaded });
        self.panel.set_revision(&self.current.pipeline);
        self.panel.event(true, changes);
        self.panel.set_plugins(self.generation.loaded.versions());
        tracing::info!(pipeline = %self.generation.pipeline.name, generation = number, changes = %changes, "new version checked and in use from the next batch");
        self.tx.send_replace(self.generation.clone());
    }

    /// One look: publishes a new generation, refuses a candidate, or finds
    /// nothing new.
    pub fn poll(&mut self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            // Being replaced, say: look again next time.
            Err(_) => return,
        };
        let pipeline_digest = config::revision(text.as_bytes());
        let candidate = if pipeline_digest == self.current.pipeline {
            Ok(self.generation.pipeline.clone())
        } else {
            self.parse(&text)
        };
        let plugins = match &candidate {
            Ok(p) => self.markers(p),
            Err(_) => Vec::new(),
        };
        let seen = Fingerprint { pipeline: pipeline_digest, plugins };
        if seen == self.current || self.refused.contains(&seen) {
            return;
        }
        match candidate.and_then(|p| self.check(p)) {
            Ok((pipeline, loaded)) => {
                let changes = self.describe_changes(&pipeline, &loaded);
                self.current = seen;
                self.text = text;
                self.publish(pipeline, loaded, &changes);
            }
            Err(reason) => {
                self.panel.event(false, &reason);
                tracing::error!(pipeline = %self.generation.pipeline.name, reason = %reason, "new version refused; the running version goes on");
                self.refused.insert(seen);
            }
        }
    }

    /// The changed pipeline file, if only its steps and tests changed: the
    /// rest (source, sink, batching, input) needs a restart.
    fn parse(&self, text: &str) -> Result<Pipeline, String> {
        let table = |t: &str| -> Option<toml::Table> {
            let mut t: toml::Table = toml::from_str(t).ok()?;
            for live in ["transforms", "tests", "plugin_path", "reload", "shadow"] {
                t.remove(live);
            }
            Some(t)
        };
        let config = config::parse_str(&self.path, text, |name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
        let pipeline = config::validate(&self.path, config).map_err(|e| e.to_string())?;
        if table(text) != table(&self.text) {
            return Err(format!(
                "{}: only [[transforms]], [[tests]], plugin_path, [reload] and [shadow] change while running; restart the host for the rest",
                self.path.display()
            ));
        }
        Ok(pipeline)
    }

    /// Loads, configures and tests a candidate.
    fn check(&self, pipeline: Pipeline) -> Result<(Pipeline, Loaded), String> {
        let loaded = Loaded::load(&self.engine, &pipeline).map_err(|e| e.to_string())?;
        let mut chain = TransformChain::instantiate(&self.engine, &pipeline, &loaded).map_err(|e| e.to_string())?;
        crate::cases::first_failure(&pipeline, &mut chain)?;
        Ok((pipeline, loaded))
    }

    /// Each step's marker: what changes when its plugin does. Plugins kept
    /// in S3 are the `plugins` part of the pipeline's source: asking for
    /// their ETags is its health.
    fn markers(&mut self, pipeline: &Pipeline) -> Vec<String> {
        let (mut asked, mut failed) = (false, None);
        let markers = plugin_files(&self.engine, pipeline)
            .into_iter()
            .map(|f| match f {
                Err(e) => format!("missing: {e}"),
                Ok(f) if remote::is_s3(&f) => {
                    asked = true;
                    self.engine.remote().etag(&f.to_string_lossy()).map_or_else(
                        |e| {
                            let marker = format!("missing: {e}");
                            failed = Some(e);
                            marker
                        },
                        |t| format!("etag {t}"),
                    )
                }
                Ok(f) => self.digest(&f),
            })
            .collect();
        match failed {
            Some(why) => self.panel.source_error("plugins", "other", &why, false),
            None if asked => self.panel.source_ok("plugins"),
            None => {}
        }
        markers
    }

    fn digest(&mut self, file: &PathBuf) -> String {
        let Ok(meta) = std::fs::metadata(file) else { return "missing".into() };
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if let Some((at, len, digest)) = self.digests.get(file)
            && (*at, *len) == stamp
        {
            return digest.clone();
        }
        let Ok(bytes) = std::fs::read(file) else { return "missing".into() };
        let digest = digest_of(&bytes);
        self.digests.insert(file.clone(), (stamp.0, stamp.1, digest.clone()));
        digest
    }

    /// What the new version changes, step by step.
    fn describe_changes(&self, pipeline: &Pipeline, loaded: &Loaded) -> String {
        changes((&self.generation.pipeline, &self.generation.loaded), (pipeline, loaded))
    }
}

/// What `new` changes from `old`, step by step: each step inserted,
/// removed, replaced (another plugin, or another version of it) or given
/// other params; "pipeline file" when no step changed.
pub fn changes(old: (&Pipeline, &Loaded), new: (&Pipeline, &Loaded)) -> String {
    let seen = |(p, l): (&Pipeline, &Loaded)| -> Vec<(String, String, String)> {
        l.plugins
            .iter()
            .zip(&p.steps)
            .map(|(plugin, step)| (plugin.name.clone(), plugin.digest.clone(), step.params.clone()))
            .collect()
    };
    let changes = step_changes(&seen(old), &seen(new));
    if changes.is_empty() { "pipeline file".into() } else { changes.join(", ") }
}

/// The changes from the steps `old` to `new`, each (plugin name, digest,
/// params): steps equal in all three are kept; between two kept ones, the
/// old steps and the new ones pair up in order (a step replaced, or its
/// params changed) and what is left over was removed or inserted.
fn step_changes(old: &[(String, String, String)], new: &[(String, String, String)]) -> Vec<String> {
    // The longest common subsequence of equal steps (chains are short).
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut gone, mut came): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let flush = |gone: &mut Vec<usize>, came: &mut Vec<usize>, changes: &mut Vec<String>| {
        for k in 0..gone.len().max(came.len()) {
            match (gone.get(k), came.get(k)) {
                (Some(&o), Some(&c)) => {
                    let ((on, od, op), (cn, cd, cp)) = (&old[o], &new[c]);
                    let step = c + 1;
                    if on != cn {
                        changes.push(format!("step {step} {on} {} replaced by {cn} {}", short(od), short(cd)));
                    } else if od != cd && op != cp {
                        changes.push(format!("step {step} {cn} {} -> {}, params changed", short(od), short(cd)));
                    } else if od != cd {
                        changes.push(format!("step {step} {cn} {} -> {}", short(od), short(cd)));
                    } else {
                        changes.push(format!("step {step} {cn} params changed"));
                    }
                }
                (Some(&o), None) => changes.push(format!("step {} {} removed", o + 1, old[o].0)),
                (None, Some(&c)) => changes.push(format!("step {} {} {} inserted", c + 1, new[c].0, short(&new[c].1))),
                (None, None) => {}
            }
        }
        gone.clear();
        came.clear();
    };
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            flush(&mut gone, &mut came, &mut changes);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            came.push(j);
            j += 1;
        } else {
            gone.push(i);
            i += 1;
        }
    }
    flush(&mut gone, &mut came, &mut changes);
    changes
}

#[cfg(test)]
mod change_tests {
    use super::step_changes;

    fn steps(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        list.iter().map(|(n, d, p)| (n.to_string(), d.to_string(), p.to_string())).collect()
    }

    #[test]
    fn a_change_reads_as_what_happened_to_each_step() {
        let old = steps(&[("flatten", "sha256:aaaa", "{}"), ("mask", "sha256:bbbb", "{\"a\":1}")]);
        let inserted = steps(&[
            ("flatten", "sha256:aaaa", "{}"),
            ("filter", "sha256:cccc", "{}"),
            ("mask", "sha256:bbbb", "{\"a\":1}"),
        ]);
        assert_eq!(step_changes(&old, &inserted), ["step 2 filter sha256:cccc inserted"]);
        assert_eq!(step_changes(&inserted, &old), ["step 2 filter removed"]);
        let params = steps(&[("flatten", "sha256:aaaa", "{}"), ("mask", "sha256:bbbb", "{\"a\":2}")]);
        assert_eq!(step_changes(&old, &params), ["step 2 mask params changed"]);
        let version = steps(&[("flatten", "sha256:dddd", "{}"), ("mask", "sha256:bbbb", "{\"a\":1}")]);
        assert_eq!(step_changes(&old, &version), ["step 1 flatten sha256:aaaa -> sha256:dddd"]);
        let other = steps(&[("convert", "sha256:eeee", "{}"), ("mask", "sha256:bbbb", "{\"a\":1}")]);
        assert_eq!(step_changes(&old, &other), ["step 1 flatten sha256:aaaa replaced by convert sha256:eeee"]);
        assert!(step_changes(&old, &old).is_empty());
    }
}
