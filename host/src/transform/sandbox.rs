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
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How much of a plugin's stderr is kept: its last bytes (a panic message
/// is written last).
const STDERR_CAPACITY: usize = 4096;

/// Linear memories, tables and instances one store may create: a
/// component has a few of each; thousands are an attack on the host.
const MAX_MEMORIES: usize = 32;
const MAX_TABLES: usize = 64;
const MAX_INSTANCES: usize = 64;

/// Per-store state of one step instance.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    /// Secret name -> key bytes, for the granted secrets only.
    secrets: Arc<HashMap<String, Vec<u8>>>,
    /// The plugin's stderr (its last bytes), read after a trap.
    pub stderr: StderrTail,
}

impl StepState {
    /// A fresh state: no files, no network, no environment except the
    /// granted variables, clocks frozen at zero unless granted.
    pub fn new(limits: &Limits, grants: &Grants, secrets: Arc<HashMap<String, Vec<u8>>>) -> Self {
        let stderr = StderrTail::default();
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
            limiter: MemoryLimiter { cap: limits.max_memory_bytes, total: 0, refused: false },
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
        // The answer is allocated here, on the host: its size is bounded
        // by what the step may hold, whatever list the guest sends.
        let width = match algorithm {
            Algorithm::Sha512 => 128,
            Algorithm::Sha256 | Algorithm::HmacSha256 => 64,
        };
        let answer = ends.len().saturating_mul(width);
        if answer > self.limiter.cap {
            return Err(format!(
                "{} inputs ask for {} MiB of digests, more than the step's memory cap ({} MiB)",
                ends.len(),
                answer >> 20,
                self.limiter.cap >> 20
            ));
        }
        digest::hex_digests(algorithm, key, &data, &ends)
    }
}

impl wit::etl::transform::types::Host for StepState {}

/// Caps the linear memory of a store, all its memories together;
/// remembers a refusal so a trap can be reported as memory exhaustion
/// rather than a bare `unreachable`.
pub struct MemoryLimiter {
    cap: usize,
    /// Bytes of all the store's memories so far (memories never shrink).
    total: usize,
    pub refused: bool,
}

impl MemoryLimiter {
    /// Bytes of the store's memories and tables: its peak, as they never
    /// shrink.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// What one table element costs the host, as the cap counts it.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total.saturating_add(desired.saturating_sub(current));
        let ok = total <= self.cap;
        if ok {
            self.total = total;
        }
        self.refused |= !ok;
        Ok(ok)
    }

    /// Tables live in host memory (wasmtime keeps one pointer per element):
    /// their growth counts against the same cap as the linear memories, so
    /// a plugin cannot grow past its `max_memory_mb` through tables.
    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES);
        let total = self.total.saturating_add(bytes);
        let ok = desired <= 1_000_000 && total <= self.cap;
        if ok {
            self.total = total;
        }
        self.refused |= !ok;
        Ok(ok)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

/// A plugin's stderr: keeps the last [`STDERR_CAPACITY`] bytes and never
/// refuses a write (a plugin that logs must not fail its calls once some
/// buffer is full). Clone-cheap; clones share the bytes.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

impl StderrTail {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("not poisoned").iter().copied().collect()
    }

    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().expect("not poisoned");
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_CAPACITY)..];
        let over = (tail.len() + bytes.len()).saturating_sub(STDERR_CAPACITY);
        tail.drain(..over);
        tail.extend(bytes);
    }
}

impl wasmtime_wasi::cli::IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_memory_cap_counts_every_memory_of_the_store() {
        let mut l = MemoryLimiter { cap: 100, total: 0, refused: false };
        assert!(l.memory_growing(0, 40, None).unwrap());
        assert!(l.memory_growing(0, 40, None).unwrap());
        assert!(l.memory_growing(40, 60, None).unwrap());
        assert!(!l.memory_growing(0, 1, None).unwrap(), "a new memory past the cap of all of them");
        assert!(l.refused);
        assert_eq!(l.memories(), MAX_MEMORIES);
    }

    #[test]
    fn tables_count_against_the_same_cap_as_memories() {
        let mut l = MemoryLimiter { cap: 1000, total: 0, refused: false };
        assert!(l.memory_growing(0, 600, None).unwrap());
        assert!(l.table_growing(0, 40, None).unwrap(), "40 elements fit beside 600 bytes");
        assert_eq!(l.total, 600 + 40 * TABLE_ELEMENT_BYTES);
        assert!(!l.table_growing(40, 100, None).unwrap(), "60 more elements do not");
        assert!(l.refused);
    }

    #[test]
    fn stderr_keeps_its_last_bytes_and_never_refuses() {
        let tail = StderrTail::default();
        for i in 0..1000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let kept = tail.contents();
        assert_eq!(kept.len(), STDERR_CAPACITY);
        assert!(String::from_utf8_lossy(&kept).ends_with("line 999\n"));
        tail.push(&vec![b'x'; 3 * STDERR_CAPACITY]);
        assert_eq!(tail.contents(), vec![b'x'; STDERR_CAPACITY]);
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
