//! The ETL host: pipelines move records from a source through sandboxed
//! WebAssembly transforms into PostgreSQL. `main.rs` is only the CLI over
//! this library; `commands` is the CLI's work, and nothing below it imports
//! it.

pub mod admin;
pub mod aws;
pub mod backoff;
pub mod batch;
pub mod cases;
pub mod commands;
pub mod config;
pub mod diff;
pub mod flow;
pub mod input;
pub mod mapping;
pub mod migrate;
pub mod queue;
pub mod reload;
pub mod report;
pub mod run;
pub mod shadow;
pub mod sink;
pub mod source;
pub mod status;
pub mod transform;

pub use report::report;
