//! A step's store state: a WASI context that grants nothing by default, the
//! memory limiter, the captured stderr, and the host imports.
//!
//! Must not grant anything a step's `grants` do not name.

use super::digest;
use super::wit::{self, Algorithm};
use crate::config::{Grants, Limits};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How much of a plugin's stderr is kept (its panic message).
const STDERR_CAPACITY: usize = 4096;

/// Per-store state of one step instance.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    /// Secret name -> key bytes, for the granted secrets only.
    secrets: Arc<HashMap<String, Vec<u8>>>,
    /// The plugin's stderr (bounded), read after a trap.
    pub stderr: MemoryOutputPipe,
}

impl StepState {
    /// A fresh state: no files, no network, no environment except the
    /// granted variables, clocks frozen at zero unless granted.
    pub fn new(limits: &Limits, grants: &Grants, secrets: Arc<HashMap<String, Vec<u8>>>) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone());
        for name in &grants.env {
            if let Ok(v) = std::env::var(name) {
                b.env(name, v);
            }
        }
        if !grants.clock {
            b.wall_clock(FrozenClock);
            b.monotonic_clock(FrozenClock);
        }
        StepState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { cap: limits.max_memory_bytes, refused: false },
            secrets,
            stderr,
        }
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit::etl::transform::host::Host for StepState {
    fn hex_digests(
        &mut self,
        algorithm: Algorithm,
        secret: Option<String>,
        data: Vec<u8>,
        ends: Vec<u32>,
    ) -> Result<Vec<u8>, String> {
        let key = match (&algorithm, secret) {
            (Algorithm::HmacSha256, Some(name)) => match self.secrets.get(&name) {
                Some(k) => Some(k.as_slice()),
                None => return Err(format!("secret `{name}` is not granted to this step")),
            },
            _ => None,
        };
        digest::hex_digests(algorithm, key, &data, &ends)
    }
}

impl wit::etl::transform::types::Host for StepState {}

/// Caps linear memory; remembers a refusal so a trap can be reported as
/// memory exhaustion rather than a bare `unreachable`.
pub struct MemoryLimiter {
    cap: usize,
    pub refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = desired <= self.cap;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A clock that always reads zero: time is not granted.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
