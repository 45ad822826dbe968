//! Guest-side library for transform plugins.
//!
//! Owns the WIT bindings of the `etl:transform` world, a reader and a builder
//! for the batch layout, hashing through the host, and [`plugin!`], which
//! exports a [`Transform`] as a component. A plugin's logic stays a plain Rust
//! type, so `cargo test -p NAME` runs it natively; this crate must not contain
//! any plugin's logic.

mod digest;
pub mod json;
mod output;
mod read;

/// Generated from `wit/transform.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "plugin_sdk::bindings",
        export_macro_name: "__export_plugin",
    });
}

pub use digest::{Algorithm, hex_digests};
#[cfg(not(target_arch = "wasm32"))]
pub use digest::grant_native_secret;
pub use bindings::etl::transform::types::{Batch, Cell, Description, Outcome, Output, Span, Value};
pub use bindings::Guest;
pub use output::OutputBuilder;
pub use read::{Input, RecordRef, members};

/// The key of an array element's cell.
pub const NO_KEY: u32 = u32::MAX;

/// A transform plugin's logic.
pub trait Transform: Sized + 'static {
    /// The step's parameters, from the pipeline file. Use
    /// `#[serde(deny_unknown_fields)]` so a typo is an error.
    type Params: serde::de::DeserializeOwned;
    /// One line on what the plugin does.
    const SUMMARY: &'static str;
    /// A JSON Schema of `Params`, if the plugin has one.
    const PARAMS_SCHEMA: Option<&'static str> = None;

    /// Builds the transform from checked parameters; an error says which
    /// parameter is wrong and why.
    fn new(params: Self::Params) -> Result<Self, String>;

    /// Gives every input record exactly one outcome (emit, drop or reject),
    /// in order.
    fn transform(&mut self, input: &Input, out: &mut OutputBuilder);
}

/// Parses `params` (JSON text) and builds `T`.
pub fn configure<T: Transform>(params: &str) -> Result<T, String> {
    let params = serde_json::from_str(params).map_err(|e| {
        // serde_json appends a position in the host-made JSON text, which
        // means nothing to the author of the pipeline file.
        let msg = e.to_string();
        match msg.rsplit_once(" at line ") {
            Some((head, _)) => head.to_string(),
            None => msg,
        }
    })?;
    T::new(params)
}

/// Runs `t` over one batch.
pub fn run<T: Transform>(t: &mut T, batch: Batch) -> Output {
    let (input, mut out) = read::split(batch);
    t.transform(&input, &mut out);
    out.finish()
}

/// Every record rejected with `reason`.
pub fn reject_all(batch: Batch, reason: &str) -> Output {
    let (input, mut out) = read::split(batch);
    for _ in input.records() {
        out.reject(reason);
    }
    out.finish()
}

/// The description a plugin reports.
pub fn describe<T: Transform>(name: &str, version: &str) -> Description {
    Description {
        name: name.to_string(),
        version: version.to_string(),
        summary: T::SUMMARY.to_string(),
        params_schema: T::PARAMS_SCHEMA.map(str::to_string),
    }
}

/// Exports a [`Transform`] as the component's `transform` world. Does
/// nothing when compiled natively, so plugin crates link into tests and
/// benchmarks side by side.
#[macro_export]
macro_rules! plugin {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __plugin_export {
            use super::*;
            use std::cell::RefCell;

            struct Export;

            thread_local! {
                static STATE: RefCell<Option<$t>> = const { RefCell::new(None) };
            }

            impl $crate::Guest for Export {
                fn describe() -> $crate::Description {
                    $crate::describe::<$t>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                }
                fn configure(params: String) -> Result<(), String> {
                    let t = $crate::configure::<$t>(&params)?;
                    STATE.with(|s| *s.borrow_mut() = Some(t));
                    Ok(())
                }
                fn transform(input: $crate::Batch) -> $crate::Output {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(t) => $crate::run(t, input),
                        None => $crate::reject_all(input, "plugin was not configured"),
                    })
                }
            }

            $crate::bindings::__export_plugin!(Export with_types_in $crate::bindings);
        }
    };
}
