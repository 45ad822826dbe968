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
mod params;
pub mod projection;
mod read;
pub mod record;

/// Generated from `wit/transform.wit`.
#[allow(clippy::too_many_arguments)] // the generated export glue of `fields`
pub mod bindings {
    wit_bindgen::generate!({
        world: "projecting-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "plugin_sdk::bindings",
        export_macro_name: "__export_plugin",
    });
}

pub use bindings::Guest;
pub use bindings::etl::transform::types::{Description, Projection};
#[cfg(not(target_arch = "wasm32"))]
pub use digest::grant_native_secret;
pub use digest::{Algorithm, hex_digests};
pub use output::OutputBuilder;
pub use params::Scalar;
pub use read::{Cells, Field, Input};
pub use record::{Batch, Cell, Columns, ColumnsRef, NO_KEY, Outcome, Output, Span, Value, fields, members};
pub use schemars;

/// A transform plugin's logic.
pub trait Transform: Sized + 'static {
    /// The step's parameters, from the pipeline file. Use
    /// `#[serde(deny_unknown_fields)]` so a typo is an error. Its JSON
    /// Schema (`#[derive(schemars::JsonSchema)]`, doc comments as
    /// descriptions) is carried in the component; the host checks a step's
    /// params against it before `configure`.
    type Params: serde::de::DeserializeOwned + schemars::JsonSchema;
    /// One line on what the plugin does.
    const SUMMARY: &'static str;

    /// Builds the transform from checked parameters; an error says which
    /// parameter is wrong and why.
    fn new(params: Self::Params) -> Result<Self, String>;

    /// Gives every input record exactly one outcome (emit, drop or reject),
    /// in order.
    fn transform(&mut self, input: &Input, out: &mut OutputBuilder);

    /// Whether this batch passes through unchanged, judged from the kinds
    /// of its cells alone (one byte each, see [`record::kind`]); if so,
    /// `transform` is not called and nothing is copied back. Must agree with
    /// what `transform` would do.
    fn unchanged(&self, _kinds: &[u8]) -> bool {
        false
    }

    /// The top-level fields this configured step reads and those it may
    /// add or replace besides, if it can say: the host then passes it
    /// records with only the fields it reads (less to copy in, decode and
    /// copy back) and keeps every other field as it was. Every record
    /// `transform` emits must then hold only fields of the two lists.
    /// `None` (the default): whole records.
    fn fields(&self) -> Option<Projection> {
        None
    }
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

/// Runs `t` over one batch: what the component does with it, the
/// `unchanged` shortcut included. The outcomes are `None` when the batch
/// passed unchanged (and is handed back as it came).
pub fn run_columns<T: Transform>(t: &mut T, batch: Columns) -> (Columns, Option<Vec<Outcome>>) {
    if t.unchanged(&batch.cell_kinds) {
        return (batch, None);
    }
    let (input, mut out) = read::split(batch);
    t.transform(&input, &mut out);
    let (columns, outcomes) = out.finish();
    (columns, Some(outcomes))
}

/// [`run_columns`] on a decoded batch, for tests, with the step's
/// [`Transform::fields`] applied as the host applies them (see
/// [`projection`]). Panics if the step emits a field it does not declare.
pub fn run<T: Transform>(t: &mut T, batch: Batch) -> Output {
    let n = batch.records.len();
    let input = batch.into_columns();
    let Some(p) = t.fields() else {
        let (columns, outcomes) = run_columns(t, input);
        return Output {
            batch: columns.into_batch_unchecked(),
            outcomes: outcomes.unwrap_or(vec![Outcome::Emit(1); n]),
        };
    };
    let declared = projection::Declared::new(&p.reads, &p.writes);
    let (projected, places) = projection::project(input.as_ref(), &declared);
    let (columns, outcomes) = run_columns(t, projected);
    let Some(outcomes) = outcomes else {
        return Output { batch: input.into_batch_unchecked(), outcomes: vec![Outcome::Emit(1); n] };
    };
    let merged = projection::merge(input.as_ref(), &places, columns.as_ref(), &outcomes, &declared)
        .unwrap_or_else(|e| panic!("the host would refuse this output: {e}"));
    Output { batch: merged.into_batch_unchecked(), outcomes }
}

/// The JSON Schema of `T`'s params, as JSON text.
pub fn params_schema<T: Transform>() -> String {
    serde_json::to_string(&schemars::schema_for!(T::Params)).expect("a schema is JSON")
}

/// The description a plugin reports.
pub fn describe<T: Transform>(name: &str, version: &str) -> Description {
    Description {
        name: name.to_string(),
        version: version.to_string(),
        summary: T::SUMMARY.to_string(),
        params_schema: Some(params_schema::<T>()),
    }
}

/// The glue between the WIT types and the record model; used by [`plugin!`].
#[doc(hidden)]
pub mod glue {
    use crate::bindings::etl::transform::types as wit;
    use crate::{Columns, Outcome, Transform};

    /// Decodes the host's batch without checking it again (the host checks
    /// every batch it holds).
    pub fn transform<T: Transform>(t: Option<&mut T>, b: wit::Batch) -> wit::Output {
        let n = b.records.len();
        let columns = Columns {
            keys: b.keys,
            text: b.text,
            cell_keys: b.cell_keys,
            cell_kinds: b.cell_kinds,
            cell_values: b.cell_values,
            records: b.records,
        };
        let (c, outcomes) = match t {
            Some(t) => match crate::run_columns(t, columns) {
                (c, Some(outcomes)) => (c, outcomes),
                (_, None) => return wit::Output::Unchanged,
            },
            None => (Columns::default(), vec![Outcome::Reject("plugin was not configured".into()); n]),
        };
        wit::Output::Changed(wit::Changed {
            batch: wit::Batch {
                keys: c.keys,
                text: c.text,
                cell_keys: c.cell_keys,
                cell_kinds: c.cell_kinds,
                cell_values: c.cell_values,
                records: c.records,
            },
            outcomes: outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Emit(n) => wit::Outcome::Emit(n),
                    Outcome::Drop => wit::Outcome::Drop,
                    Outcome::Reject(r) => wit::Outcome::Reject(r),
                })
                .collect(),
        })
    }
}

/// Exports a [`Transform`] as a component of the `projecting-plugin` world. Does
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
                fn fields() -> Option<$crate::Projection> {
                    STATE.with(|s| s.borrow().as_ref().and_then($crate::Transform::fields))
                }
                fn transform(
                    input: $crate::bindings::etl::transform::types::Batch,
                ) -> $crate::bindings::etl::transform::types::Output {
                    STATE.with(|s| $crate::glue::transform(s.borrow_mut().as_mut(), input))
                }
            }

            $crate::bindings::__export_plugin!(Export with_types_in $crate::bindings);
        }
    };
}
