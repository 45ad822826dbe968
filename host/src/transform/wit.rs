//! Host bindings of `wit/transform.wit` (world `plugin`).

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
});

pub use etl::transform::host::Algorithm;
pub use etl::transform::types::{Cell, Outcome, Span, Value};

/// The key of an array element's cell.
pub const NO_KEY: u32 = u32::MAX;
