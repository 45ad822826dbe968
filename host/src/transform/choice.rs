//! Another version of a step, chosen on the command line (`--step
//! N=PATH|DIGEST` of `host replay` and `host dead-letters replay`): a
//! `.wasm` file, or a digest (`sha256:...`) looked up among the `.wasm`
//! files of the plugin search path and the pipeline's folder. The choice
//! rewrites the pipeline's step (its `uses`, and its pinned digest), so
//! the chain is loaded, checked and configured as any other: same params,
//! same limits and grants.
//!
//! Must not run plugins: the chain does.

use super::engine::{Engine, digest_of};
use crate::config::Pipeline;
use std::path::{Path, PathBuf};

/// `--step N=VALUE`: step `N` (1-based) runs `plugin`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepChoice {
    pub step: usize,
    pub plugin: Chosen,
}

/// What a step is replaced with.
#[derive(Debug, Clone, PartialEq)]
pub enum Chosen {
    /// A `.wasm` file.
    Path(PathBuf),
    /// `sha256:` and 64 hex digits: a `.wasm` found by its digest.
    Digest(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChoiceError {
    #[error("--step `{0}`: expected N=PATH or N=sha256:DIGEST (N the step's number, from 1)")]
    Form(String),
    #[error("--step {step}: out of range: {pipeline} has {steps} steps")]
    OutOfRange { step: usize, pipeline: String, steps: usize },
    #[error("--step {0} is given twice")]
    Twice(usize),
    #[error("--step {step}: no such file: {path}")]
    NoFile { step: usize, path: String },
    #[error("--step {step}: no plugin with digest {digest} in: {searched}")]
    NoDigest { step: usize, digest: String, searched: String },
}

impl std::str::FromStr for StepChoice {
    type Err = ChoiceError;

    fn from_str(text: &str) -> Result<Self, ChoiceError> {
        let form = || ChoiceError::Form(text.to_string());
        let (n, value) = text.split_once('=').ok_or_else(form)?;
        let step: usize = n.trim().parse().map_err(|_| form())?;
        let value = value.trim();
        if step == 0 || value.is_empty() {
            return Err(form());
        }
        let plugin = match value.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Chosen::Digest(format!("sha256:{}", hex.to_ascii_lowercase()))
            }
            Some(_) => return Err(form()),
            None => Chosen::Path(PathBuf::from(value)),
        };
        Ok(StepChoice { step, plugin })
    }
}

/// Rewrites `pipeline`'s steps as `choices` say: each chosen step uses the
/// file found (relative paths from the working folder), its digest pinned
/// when chosen by digest and unpinned otherwise.
pub fn apply(engine: &Engine, pipeline: &mut Pipeline, choices: &[StepChoice]) -> Result<(), ChoiceError> {
    let mut seen = Vec::new();
    for choice in choices {
        let steps = pipeline.steps.len();
        if choice.step > steps {
            return Err(ChoiceError::OutOfRange { step: choice.step, pipeline: pipeline.name.clone(), steps });
        }
        if seen.contains(&choice.step) {
            return Err(ChoiceError::Twice(choice.step));
        }
        seen.push(choice.step);
        let (file, digest) = match &choice.plugin {
            Chosen::Path(path) => {
                if !path.is_file() {
                    return Err(ChoiceError::NoFile { step: choice.step, path: path.display().to_string() });
                }
                (std::path::absolute(path).unwrap_or_else(|_| path.clone()), None)
            }
            Chosen::Digest(digest) => {
                let mut dirs = engine.search_path(&pipeline.plugin_path);
                dirs.push(pipeline.file.parent().unwrap_or(Path::new(".")).to_path_buf());
                match find_digest(&dirs, digest) {
                    Some(file) => (file, Some(digest.clone())),
                    None => {
                        let searched = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                        let (step, digest) = (choice.step, digest.clone());
                        return Err(ChoiceError::NoDigest { step, digest, searched });
                    }
                }
            }
        };
        let step = &mut pipeline.steps[choice.step - 1];
        step.uses = file.display().to_string();
        step.digest = digest;
    }
    Ok(())
}

/// The first `.wasm` file in `dirs` (not recursively) whose digest is
/// `digest`.
fn find_digest(dirs: &[PathBuf], digest: &str) -> Option<PathBuf> {
    dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.extension().is_some_and(|e| e == "wasm")
            && p.is_file()
            && std::fs::read(p).is_ok_and(|bytes| digest_of(&bytes) == digest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_or_say_what_they_should_be() {
        let c: StepChoice = "2=plugins/convert.wasm".parse().unwrap();
        assert_eq!(c, StepChoice { step: 2, plugin: Chosen::Path("plugins/convert.wasm".into()) });
        let hex = "AB".repeat(32);
        let c: StepChoice = format!("1=sha256:{hex}").parse().unwrap();
        assert_eq!(c.plugin, Chosen::Digest(format!("sha256:{}", hex.to_lowercase())));
        for bad in ["convert.wasm", "0=x.wasm", "x=y", "2=", "1=sha256:abc"] {
            assert_eq!(bad.parse::<StepChoice>(), Err(ChoiceError::Form(bad.into())), "{bad}");
        }
    }

    #[test]
    fn a_digest_is_found_among_the_wasm_files() {
        let dir = std::env::temp_dir().join(format!("choice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wasm"), b"one").unwrap();
        std::fs::write(dir.join("b.wasm"), b"two").unwrap();
        std::fs::write(dir.join("c.txt"), b"three").unwrap();
        assert_eq!(find_digest(std::slice::from_ref(&dir), &digest_of(b"two")), Some(dir.join("b.wasm")));
        assert_eq!(find_digest(std::slice::from_ref(&dir), &digest_of(b"three")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
