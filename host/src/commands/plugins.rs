//! `host plugins inspect FILE.wasm`: what a plugin is before any pipeline
//! uses it.
//!
//! Must not need a pipeline, AWS or a database.

use super::EngineOptions;
use std::path::Path;

/// What `inspect` prints, one `key: value` per line.
pub fn inspect(file: &Path, opts: &EngineOptions) -> anyhow::Result<String> {
    let engine = opts.engine()?;
    let name = file.file_stem().map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let plugin = engine.load(&name, file, None)?;
    let d = &plugin.description;
    let mut out = format!(
        "file: {}\nworld: {}\nname: {}\nversion: {}\nsummary: {}\ndigest: {}\nsize: {} bytes\n",
        file.display(),
        plugin.world(),
        d.name,
        d.version,
        d.summary,
        plugin.digest,
        plugin.size
    );
    match &d.params_schema {
        Some(schema) => {
            let pretty = serde_json::from_str::<serde_json::Value>(schema)
                .map_or_else(|_| schema.clone(), |v| serde_json::to_string_pretty(&v).unwrap_or_default());
            out.push_str(&format!("params schema:\n{pretty}\n"));
        }
        None => out.push_str("params schema: none declared\n"),
    }
    Ok(out)
}
