//! The process's log lines on stderr: text for a person at a terminal,
//! JSON objects (one per line, with the span's fields: pipeline, batch,
//! object) for a collector. `RUST_LOG` filters (default: [`RUN`] for the
//! commands that run pipelines, `warn` for the others).
//!
//! Lines go through `tracing-indicatif`'s writer, so a warning printed
//! while `host backfill` shows its progress bar does not tear the bar.

use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// Text on a terminal, JSON otherwise.
    pub fn for_stderr() -> Format {
        if std::io::stderr().is_terminal() { Format::Text } else { Format::Json }
    }
}

/// The default filter of `host run` and `host backfill`: what an operator
/// reads (the start, the admin address, swaps accepted and refused, each
/// state change of a source or pipeline) at `info`; other crates' lines
/// only from `warn`.
pub const RUN: &str = "warn,host=info";

/// Installs the subscriber, filtering by `RUST_LOG` or else `default`;
/// call once.
///
/// tokio-postgres logs each statement's parameters at debug (record
/// values, message ids, payloads): its lines stop at `info` unless
/// `RUST_LOG` names `tokio_postgres` itself, so `RUST_LOG=debug` lets no
/// value into the log by the way.
pub fn init(format: Format, default: &str) {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    if !asked.contains("tokio_postgres") {
        filter = filter.add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    }
    // Bars only for spans that ask for one (`indicatif.pb_show`), such as
    // the backfill's.
    let bars = tracing_indicatif::IndicatifLayer::new();
    let writer = bars.get_stderr_writer();
    let lines = match format {
        Format::Text => {
            tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(writer).boxed()
        }
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(bars.with_filter(tracing_indicatif::filter::IndicatifFilter::new(false)))
        .init();
}
