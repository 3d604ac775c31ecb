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
    /// Read as plain tables first, then each as an [`Op`]: an op's own
    /// errors (a wrong type, an unknown field) can then name which op it
    /// is, where the parser would only point at the start of the list.
    #[serde(default)]
    op: Vec<toml::Value>,
}

/// The line of the `index`-th `[[op]]` header, if the ops are written as
/// tables (not as an inline array).
fn op_line(text: &str, index: usize) -> Option<usize> {
    text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with("[[op]]")).nth(index).map(|(n, _)| n + 1)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
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
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let msg = one_line(e.message());
        fail(match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        })
    })?;
    if file.op.is_empty() {
        return Err(fail("no [[op]] entries".into()));
    }
    let mut ops = Vec::with_capacity(file.op.len());
    for (i, table) in file.op.into_iter().enumerate() {
        let at = op_line(text, i).map(|l| format!(" (line {l})")).unwrap_or_default();
        let op: Op = table
            .try_into()
            .map_err(|e: toml::de::Error| fail(format!("op {}{at}: {}", i + 1, one_line(e.message()))))?;
        op.validate().map_err(|e| fail(format!("op {}{at} ({}): {e}", i + 1, op.name())))?;
        ops.push(op);
    }
    let graph = OpGraph { ops };
    if graph.validate().is_err() {
        // Each op is in range, but consecutive color ops multiply: name the
        // run that crossed the limit, from the blur before it to the op
        // that tipped it over.
        let prefix = |n: usize| OpGraph { ops: graph.ops[..n].to_vec() }.validate().err().map(|e| (n, e));
        let (end, e) = (1..=graph.ops.len()).find_map(prefix).expect("the whole graph fails");
        let blur = |op: &Op| matches!(op, Op::Blur { sigma } if *sigma > 0.0);
        let start = graph.ops[..end].iter().rposition(blur).map_or(0, |i| i + 1).min(end - 1);
        let lines = match (op_line(text, start), op_line(text, end - 1)) {
            (Some(a), Some(b)) if a != b => format!(" (lines {a}-{b})"),
            (Some(a), _) => format!(" (line {a})"),
            _ => String::new(),
        };
        let ops = if start + 1 == end { format!("op {end}") } else { format!("ops {}-{end}", start + 1) };
        return Err(fail(format!("{ops}{lines}: {e}")));
    }
    Ok(graph)
}
