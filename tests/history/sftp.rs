//! The SFTP side of a history: files on a real `sshd` appear, grow,
//! change, become unreadable and come back, are deleted and renamed, while
//! the SFTP pipeline (copy into a versioned bucket, then reconcile) runs,
//! and is SIGKILLed mid-pass. After quiescence (every file readable again,
//! passes until one changes nothing) the table must hold each server file's
//! content once, and `etl.sftp_files` one row per server file, its size.

use crate::sshd::Sshd;
use crate::{common, services};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// File names the histories use (`s0.csv` ...).
const FILES: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A new content for file `file` (a new file, or a changed one).
    Write {
        file: usize,
        rows: usize,
    },
    /// Rows added at the end of a file.
    Grow {
        file: usize,
        rows: usize,
    },
    Unreadable {
        file: usize,
    },
    Readable {
        file: usize,
    },
    Delete {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    /// `host run --once` of the SFTP pipeline.
    Pass,
    /// `host run`, SIGKILLed after `after_ms`.
    PassKilled {
        after_ms: u64,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write { file, rows } => write!(f, "sftp: write s{file} ({rows} rows)"),
            Op::Grow { file, rows } => write!(f, "sftp: s{file} grows by {rows} rows"),
            Op::Unreadable { file } => write!(f, "sftp: s{file} becomes unreadable"),
            Op::Readable { file } => write!(f, "sftp: s{file} is readable again"),
            Op::Delete { file } => write!(f, "sftp: delete s{file}"),
            Op::Rename { from, to } => write!(f, "sftp: rename s{from} to s{to}"),
            Op::Pass => write!(f, "sftp: pass"),
            Op::PassKilled { after_ms } => write!(f, "sftp: pass, SIGKILL after {after_ms} ms"),
        }
    }
}

/// The server's files in the model: each one's lines and whether it can be read.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub files: BTreeMap<usize, (Vec<String>, bool)>,
    generation: u32,
}

impl Model {
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { file, rows } => {
                self.generation += 1;
                let g = self.generation;
                let lines = (1..=*rows).map(|i| format!("{i},s{file}-g{g}-r{i}")).collect();
                self.files.insert(*file, (lines, true));
            }
            Op::Grow { file, rows } => {
                self.generation += 1;
                let g = self.generation;
                let lines = &mut self.files.get_mut(file).expect("grows a file there").0;
                let first = lines.len() + 1;
                lines.extend((first..first + rows).map(|i| format!("{i},s{file}-g{g}-r{i}")));
            }
            Op::Unreadable { file } => self.files.get_mut(file).expect("a file there").1 = false,
            Op::Readable { file } => self.files.get_mut(file).expect("a file there").1 = true,
            Op::Delete { file } => {
                self.files.remove(file);
            }
            Op::Rename { from, to } => {
                let f = self.files.remove(from).expect("renames a file there");
                self.files.insert(*to, f);
            }
            Op::Pass | Op::PassKilled { .. } => {}
        }
    }

    /// Every file's rows, sorted: (name, id, body).
    pub fn expected(&self) -> Vec<(String, i32, String)> {
        let mut rows: Vec<_> = self
            .files
            .iter()
            .flat_map(|(f, (lines, _))| {
                lines.iter().map(move |l| {
                    let (id, body) = l.split_once(',').expect("id,body");
                    (format!("s{f}.csv"), id.parse().expect("an id"), body.to_string())
                })
            })
            .collect();
        rows.sort();
        rows
    }
}

/// A history of `len` SFTP operations drawn from `seed`.
pub fn history(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed ^ SALT);
    let mut model = Model::default();
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let there: Vec<usize> = model.files.keys().copied().collect();
        let absent: Vec<usize> = (0..FILES).filter(|f| !model.files.contains_key(f)).collect();
        let any = |rng: &mut StdRng, v: &[usize]| v[rng.random_range(0..v.len())];
        let op = match rng.random_range(0..100) {
            0..30 => Op::Write { file: rng.random_range(0..FILES), rows: rng.random_range(1..=6) },
            30..40 if !there.is_empty() => Op::Grow { file: any(&mut rng, &there), rows: rng.random_range(1..=4) },
            40..47 if !there.is_empty() => Op::Unreadable { file: any(&mut rng, &there) },
            47..55 if !there.is_empty() => Op::Readable { file: any(&mut rng, &there) },
            55..62 if !there.is_empty() => Op::Delete { file: any(&mut rng, &there) },
            62..68 if !there.is_empty() && !absent.is_empty() => {
                Op::Rename { from: any(&mut rng, &there), to: any(&mut rng, &absent) }
            }
            68..90 => Op::Pass,
            90..100 => Op::PassKilled { after_ms: rng.random_range(100..2000) },
            _ => continue,
        };
        model.apply(&op);
        ops.push(op);
    }
    ops
}

/// A salt, so that a seed's SFTP history is not drawn like its S3 one.
const SALT: u64 = 0x5f7f_11e5;

/// The real side: a server, a versioned bucket, a table and the pipeline.
pub struct World {
    sshd: Sshd,
    pub bucket: String,
    pub schema: String,
    pub name: String,
    dir: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl World {
    pub async fn new(seed: u64) -> World {
        let name = services::unique(&format!("hs{seed}"));
        let bucket = name.replace('_', "-");
        let schema = name.clone();
        let s3 = services::s3_at(services::endpoint()).await;
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let enabled = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(enabled).send().await.unwrap();
        let sql = format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id integer, body text, source_file text NOT NULL)"
        );
        services::pg().await.batch_execute(&sql).await.unwrap();
        let dir = common::workspace().join("target/history").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let sshd = Sshd::start();
        let pipeline = format!(
            "name = \"{name}\"\n[source.sftp]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
             private_key = \"{key}\"\nknown_hosts = \"{known}\"\ndir = \"{files}\"\nglob = \"*.csv\"\n\
             stable_s = 0\ncompare = \"digest\"\nmirror_deletes = true\nbucket = \"{bucket}\"\nprefix = \"in/\"\n\
             format = \"csv\"\ncsv = {{ header = false, columns = [\"id\", \"body\"] }}\nrows_per_commit = 3\n\
             [batch]\nmax_records = 3\n\
             [sink]\nschema = \"{schema}\"\ntable = \"t\"\nmode = \"append\"\n\
             [sink.columns]\nid = \"id\"\nbody = \"body\"\nsource_file = {{ generated = \"source-file\" }}\n",
            port = sshd.port,
            user = sshd.user,
            key = sshd.key.display(),
            known = sshd.known_hosts.display(),
            files = sshd.files.display(),
        );
        std::fs::write(dir.join("sftp.toml"), pipeline).unwrap();
        World { sshd, bucket, schema, name, log: dir.join("host.log"), dir }
    }

    fn path(&self, file: usize) -> std::path::PathBuf {
        self.sshd.files.join(format!("s{file}.csv"))
    }

    /// Carries out `op`; `model` is the model after it.
    pub async fn run(&self, op: &Op, model: &Model) {
        let write = |file: usize| {
            let lines = &model.files[&file].0;
            std::fs::write(self.path(file), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
            // Readable by the SFTP user (`nobody` when the tests run as root).
            self.sshd.chmod(&format!("s{file}.csv"), 0o644);
        };
        match op {
            Op::Write { file, .. } | Op::Grow { file, .. } => {
                let readable = model.files[file].1;
                write(*file);
                if !readable {
                    self.sshd.chmod(&format!("s{file}.csv"), 0o000);
                }
            }
            Op::Unreadable { file } => self.sshd.chmod(&format!("s{file}.csv"), 0o000),
            Op::Readable { file } => self.sshd.chmod(&format!("s{file}.csv"), 0o644),
            Op::Delete { file } => std::fs::remove_file(self.path(*file)).unwrap(),
            Op::Rename { from, to } => std::fs::rename(self.path(*from), self.path(*to)).unwrap(),
            Op::Pass => self.pass(None).await,
            Op::PassKilled { after_ms } => self.pass(Some(*after_ms)).await,
        }
    }

    /// One `host run --once`, or a `host run` killed after `kill_ms`.
    async fn pass(&self, kill_ms: Option<u64>) {
        let args: &[&str] = if kill_ms.is_none() { &["run", "--once"] } else { &["run"] };
        let mut child = crate::world::host(args, &self.dir.join("sftp.toml"), None, None, &self.log);
        let limit = Duration::from_millis(kill_ms.unwrap_or(120_000));
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Quiescence: every file readable, then passes until one changes nothing.
    pub async fn settle(&self, model: &Model) {
        for file in model.files.keys() {
            self.sshd.chmod(&format!("s{file}.csv"), 0o644);
        }
        let mut before = None;
        for _ in 0..3 {
            self.pass(None).await;
            let now = self.table().await;
            if before.as_ref() == Some(&now) {
                break;
            }
            before = Some(now);
        }
    }

    async fn table(&self) -> Vec<(String, i32, String)> {
        let sql = format!("SELECT source_file, id, body FROM {}.t ORDER BY 1, 2, 3", self.schema);
        let prefix = format!("s3://{}/in/", self.bucket);
        let rows = services::pg().await.query(&sql, &[]).await.unwrap();
        rows.iter()
            .map(|r| (r.get::<_, String>(0).trim_start_matches(&prefix).to_string(), r.get(1), r.get(2)))
            .collect()
    }

    /// What is wrong, one line each.
    pub async fn check(&self, model: &Model) -> Vec<String> {
        let mut problems = Vec::new();
        let (want, got) = (model.expected(), self.table().await);
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).map(|r| &r.2).take(4).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).map(|r| &r.2).take(4).collect();
            problems.push(format!(
                "sftp table: {} rows, {} expected; missing {missing:?}, extra {extra:?}",
                got.len(),
                want.len()
            ));
        }
        let db = services::pg().await;
        let rows = db
            .query("SELECT path, size FROM etl.sftp_files WHERE pipeline = $1 ORDER BY path", &[&self.name])
            .await
            .unwrap();
        let recorded: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0).rsplit('/').next().unwrap_or_default().to_string(), r.get(1)))
            .collect();
        let on_server: Vec<(String, i64)> = model
            .files
            .iter()
            .map(|(f, (lines, _))| (format!("s{f}.csv"), lines.iter().map(|l| l.len() as i64 + 1).sum()))
            .collect();
        if recorded != on_server {
            problems.push(format!("etl.sftp_files holds {recorded:?}, the server {on_server:?}"));
        }
        let part: i64 = db
            .query_one("SELECT count(*) FROM etl.files WHERE pipeline = $1 AND NOT done", &[&self.name])
            .await
            .unwrap()
            .get(0);
        if part > 0 {
            problems.push(format!("etl.files: {part} versions left part-loaded"));
        }
        problems
    }
}
