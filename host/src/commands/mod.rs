//! What the CLI subcommands do; `main.rs` only parses arguments.

pub mod check;
pub mod dead_letters;
pub mod exit;
pub mod lineage;
pub mod logs;
pub mod plugins;
pub mod replay;
pub mod run;
pub mod scaffold;
pub mod shadow;
pub mod test;

use crate::config::{self, Pipeline};
use crate::transform::{Engine, TransformChain};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options every command that runs plugins shares.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Folder for compiled components; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Folders searched for plugins first.
    pub plugin_path: Vec<PathBuf>,
}

impl EngineOptions {
    pub fn engine(&self) -> anyhow::Result<Arc<Engine>> {
        Ok(Arc::new(Engine::new(self.cache_dir.clone(), self.plugin_path.clone())?))
    }
}

/// Loads a pipeline and builds its chain.
pub fn load(engine: &Arc<Engine>, path: &Path) -> anyhow::Result<(Pipeline, TransformChain)> {
    let pipeline = config::load(path)?;
    let chain = TransformChain::build(engine, &pipeline)?;
    Ok((pipeline, chain))
}

/// The pipeline files named: each file as it is, each folder's `*.toml`
/// files in name order.
pub fn pipeline_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{}: no pipeline files (*.toml) in this folder", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}
