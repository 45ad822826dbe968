//! A plugin that misbehaves on purpose, for the sandbox tests.
//!
//! `mode` picks the misbehaviour: `loop` (spins forever), `alloc` (asks for
//! `alloc_mb`, 1 GiB by default), `panic`, `wrong-shape` (too few outcomes),
//! `bad-span` (text outside the arena), `configure-fails`, `read-env`,
//! `read-file`, `clock` (tries the host's environment, files and clock and
//! reports what it saw in field `seen`), `sleep` (the WASI sleep, for 10 s),
//! `sleep-in-configure`, `deep` (a field of `depth` nested arrays),
//! `log` (a kilobyte to stderr per record), `digest-flood` (asks the host
//! for the digests of 4 million empty inputs), `projected` (declares that it
//! reads only field `bad` and writes `seen`, and reports in `seen` how many
//! fields it was given), `undeclared` (declares the same, and emits a field
//! `sneaky` it did not declare). With `trigger` set, only records
//! whose field of that name is `true` set it off; the others pass unchanged.

use plugin_sdk::{Cell, Input, OutputBuilder, Projection, Span, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub mode: Mode,
    pub trigger: Option<String>,
    #[serde(default = "gib")]
    pub alloc_mb: usize,
    #[serde(default = "million")]
    pub depth: u32,
}

fn million() -> u32 {
    1_000_000
}

fn gib() -> usize {
    1024
}

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Loop,
    Alloc,
    Panic,
    WrongShape,
    BadSpan,
    ConfigureFails,
    ReadEnv,
    ReadFile,
    Clock,
    Sleep,
    SleepInConfigure,
    Deep,
    Log,
    DigestFlood,
    Projected,
    Undeclared,
}

pub struct Hostile {
    p: Params,
}

impl Transform for Hostile {
    type Params = Params;
    const SUMMARY: &'static str = "Misbehaves on purpose (sandbox tests)";

    fn new(p: Params) -> Result<Self, String> {
        if p.mode == Mode::ConfigureFails {
            return Err("configure failed on purpose".into());
        }
        if p.mode == Mode::SleepInConfigure {
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        Ok(Hostile { p })
    }

    fn fields(&self) -> Option<Projection> {
        let projected = matches!(self.p.mode, Mode::Projected | Mode::Undeclared);
        projected.then(|| Projection { reads: vec!["bad".into()], writes: vec!["seen".into()] })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let trigger = self.p.trigger.as_deref().map(|t| out.find_key(t));
        let mut fired = false;
        for record in input.records() {
            let hit = match trigger {
                None => true,
                Some(None) => false,
                Some(Some(k)) => {
                    matches!(record.get(k).map(|c| c.value), Some(Value::Boolean(true)))
                }
            };
            out.copy(record);
            if hit && !fired {
                fired = true;
                if self.p.mode == Mode::Projected {
                    self.seen(out, format!("fields={}", record.fields().count()));
                }
                if self.misbehave(out) {
                    return; // wrong shape: outcomes missing
                }
            }
            out.emit();
        }
    }
}

impl Hostile {
    /// Returns true when the batch should end early.
    fn misbehave(&self, out: &mut OutputBuilder) -> bool {
        match self.p.mode {
            Mode::Loop => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut v: Vec<u8> = Vec::with_capacity(self.p.alloc_mb << 20);
                v.resize(self.p.alloc_mb << 20, 1);
                std::hint::black_box(&v);
                false
            }
            Mode::Panic => panic!("hostile plugin panics on purpose"),
            Mode::WrongShape => true,
            Mode::BadSpan => {
                let key = out.key("bad");
                out.push(Cell { key, value: Value::Text(Span { offset: u32::MAX - 4, len: 4 }) });
                false
            }
            Mode::ConfigureFails | Mode::SleepInConfigure | Mode::Projected => false,
            Mode::Undeclared => {
                let key = out.key("sneaky");
                out.push(Cell { key, value: Value::Boolean(true) });
                false
            }
            Mode::Sleep => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                false
            }
            Mode::Deep => {
                let key = out.key("deep");
                let depth = self.p.depth;
                out.push(Cell { key, value: Value::Array(depth - 1) });
                for inner in (0..depth - 1).rev() {
                    out.push(Cell { key: plugin_sdk::NO_KEY, value: Value::Array(inner) });
                }
                false
            }
            Mode::Log => {
                eprintln!("{}", "l".repeat(1024));
                false
            }
            Mode::DigestFlood => {
                let ends = vec![0u32; 4 << 20];
                let r = plugin_sdk::hex_digests(plugin_sdk::Algorithm::Sha512, None, &[], &ends);
                self.seen(out, format!("digests={}", r.map_or_else(|_| "refused".into(), |d| d.len().to_string())))
            }
            Mode::ReadEnv => self.seen(out, format!("env={}", std::env::vars().count())),
            Mode::ReadFile => {
                let r = std::fs::read_to_string("/etc/passwd").map(|s| s.len());
                self.seen(out, format!("file={}", r.is_ok()))
            }
            Mode::Clock => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                self.seen(out, format!("clock={}", now.map(|d| d.as_secs()).unwrap_or(0)))
            }
        }
    }

    fn seen(&self, out: &mut OutputBuilder, what: String) -> bool {
        let key = out.key("seen");
        out.push_text(key, &what);
        false
    }
}

plugin_sdk::plugin!(Hostile);
