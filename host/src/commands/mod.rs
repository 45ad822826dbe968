//! What the CLI subcommands do; `main.rs` only parses arguments.

pub mod check;
pub mod dead_letters;
pub mod lineage;
pub mod logs;
pub mod plugins;
pub mod run;
pub mod scaffold;
pub mod test;

use crate::config::{self, Pipeline};
use crate::transform::{Engine, TransformChain};
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
