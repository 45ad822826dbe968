//! The transform engine: the only module that talks to wasmtime.
//!
//! Owns compiling and caching components ([`Engine`]), sandboxed instances
//! under memory and time limits ([`StepRunner`]), and running a pipeline's
//! steps in order ([`TransformChain`]). It must not know where records come
//! from or where rows go.
//!
//! Ownership is laid out for live swaps: a [`Plugin`] is an immutable,
//! compiled version (shared by `Arc`); a [`StepRunner`] owns the instance it
//! made from one; a [`TransformChain`] owns its runners. Swapping a plugin is
//! building a new chain and replacing the old one between batches.

mod cache;
mod chain;
pub mod choice;
mod digest;
mod engine;
mod params;
pub mod remote;
mod sandbox;
mod step;
pub mod wit;

pub use chain::{ChainError, ChainOutput, Loaded, Rejection, TransformChain, lineage, plugin_files};
pub use engine::{BLOCKED, Engine, Plugin, PluginError, TICK, digest_of, resolve, short};
pub use step::{CallFailure, StepError, StepOutput, StepRunner};
