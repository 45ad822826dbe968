//! The ETL host: pipelines move records from a source through sandboxed
//! WebAssembly transforms into PostgreSQL. `main.rs` is only the CLI over
//! this library.

pub mod batch;
pub mod commands;
pub mod config;
pub mod files;
pub mod input;
pub mod mapping;
pub mod migrate;
pub mod reload;
pub mod run;
pub mod sink;
pub mod source;
pub mod transform;
