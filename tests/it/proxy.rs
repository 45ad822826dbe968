//! A TCP proxy on loopback for fault tests, put in front of PostgreSQL or
//! the AWS endpoint: it passes bytes through, or refuses (new connections
//! closed at once, open ones cut), delays every answer, or cuts the first
//! connection that forwards a number of bytes towards the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Pass,
    /// New connections are closed at once; open ones are cut.
    Refuse,
    /// Each chunk towards the client waits this long first.
    Delay(Duration),
    /// The first connection to forward more than this many bytes towards
    /// the client is cut (then the proxy passes again).
    CutAfter(u64),
    /// Connections whose requests hold these bytes are cut (every time).
    CutRequestsWith(&'static str),
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    /// Chunks read from clients so far (about one per request of a
    /// request-response protocol).
    chunks_up: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `target` (`host:port`), passing.
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::channel(Mode::Pass).0);
        let target: Arc<str> = target.into();
        let shared = mode.clone();
        let chunks_up = Arc::new(AtomicU64::new(0));
        let counted = chunks_up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if *shared.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, target.clone(), shared.clone(), counted.clone()));
            }
        });
        Proxy { port, mode, chunks_up, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Chunks read from clients so far.
    pub fn chunks_up(&self) -> u64 {
        self.chunks_up.load(Ordering::Relaxed)
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url(&self, url: &str, target: &str) -> String {
        url.replacen(target, &format!("127.0.0.1:{}", self.port), 1)
    }
}

async fn connection(client: TcpStream, target: Arc<str>, mode: Arc<watch::Sender<Mode>>, up: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(&*target).await else { return };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone(), Some(up));
    let down = pump(sr, cw, mode, None);
    // Either direction ending (or a cut) ends both.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<watch::Sender<Mode>>,
    // Counts the chunks going up; `None` towards the client.
    up: Option<Arc<AtomicU64>>,
) {
    let towards_client = up.is_none();
    let mut mode = shared.subscribe();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = mode.wait_for(|m| *m == Mode::Refuse) => return,
        };
        if let Some(up) = &up {
            up.fetch_add(1, Ordering::Relaxed);
        }
        let current = *mode.borrow();
        match current {
            Mode::Refuse => return,
            Mode::Delay(d) if towards_client => tokio::time::sleep(d).await,
            Mode::CutAfter(limit) if towards_client && sent + n as u64 > limit => {
                shared.send_replace(Mode::Pass);
                return;
            }
            Mode::CutRequestsWith(p) if !towards_client && buf[..n].windows(p.len()).any(|w| w == p.as_bytes()) => {
                return;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        sent += n as u64;
    }
}
