//! TOML grade presets: an ordered list of `[[op]]` tables.
//!
//! ```toml
//! name = "warm"
//! [[op]]
//! type = "exposure"
//! stops = 0.25
//! [[op]]
//! type = "blur"
//! sigma = 2.0
//! ```

use std::path::Path;

use serde::Deserialize;

use super::{Op, OpGraph};
use crate::error::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetFile {
    #[allow(dead_code)]
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    op: Vec<Op>,
}

/// Reads a preset file into a validated op graph.
///
/// # Errors
/// [`Error::Preset`] naming the file, the line and the reason (unknown op,
/// wrong type, out-of-range value).
pub fn load_preset(path: &Path) -> Result<OpGraph> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Preset { path: path.to_owned(), reason: e.to_string() })?;
    parse_preset(&text, path)
}

/// Parses preset text; `path` is only used to name it in errors.
///
/// # Errors
/// As [`load_preset`].
pub fn parse_preset(text: &str, path: &Path) -> Result<OpGraph> {
    let fail = |reason: String| Error::Preset { path: path.to_owned(), reason };
    let file: PresetFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        fail(match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        })
    })?;
    if file.op.is_empty() {
        return Err(fail("no [[op]] entries".into()));
    }
    let graph = OpGraph { ops: file.op };
    for (i, op) in graph.ops.iter().enumerate() {
        op.validate().map_err(|e| fail(format!("op {} ({}): {e}", i + 1, op.name())))?;
    }
    Ok(graph)
}
