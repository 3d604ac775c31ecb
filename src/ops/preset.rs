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
    /// The span says where each op was written, whatever the layout.
    #[serde(default)]
    op: Vec<toml::Spanned<toml::Value>>,
}

/// Line numbers of byte offsets in a text, found by binary search over
/// where its lines start: a preset of thousands of ops is read in one pass.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Lines(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }

    /// The 1-based line holding byte `offset`.
    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// A parser's message on one line, in the preset's terms where serde's
/// would name Rust types (`internally tagged enum Op`, `i128`).
fn one_line(message: &str) -> String {
    let message = crate::error::one_line(message);
    if let Some(number) = message
        .strip_prefix("invalid type: integer ")
        .and_then(|m| m.strip_suffix(" as i128, expected any valid TOML value"))
    {
        return format!("integer {number} is out of range for TOML (-2^63 to 2^63 - 1)");
    }
    let terms = [
        ("expected internally tagged enum Op", "expected an op table: [[op]] with type = \"exposure\" and its values"),
        ("expected f64", "expected a number"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ];
    terms.iter().fold(message, |m, (serde, ours)| m.replace(serde, ours))
}

/// Reads a preset file into a validated op graph.
///
/// # Errors
/// [`Error::Preset`] naming the file, the line and the reason (unknown op,
/// wrong type, out-of-range value).
pub fn load_preset(path: &Path) -> Result<OpGraph> {
    use std::io::Read;
    let fail = |reason: String| Error::Preset { path: path.to_owned(), reason };
    // `-`: standard input (`make-grade | framepipe process ... --preset -`).
    if path == Path::new("-") {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(fail("standard input is a terminal: pipe a preset into it".into()));
        }
        let mut bytes = Vec::new();
        std::io::stdin().take(MAX_PRESET_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
        return parse_preset_bytes(bytes, path);
    }
    // Looked at before it is opened: a device (`/dev/zero`) or a folder is
    // refused; a pipe (`--preset <(make-grade)`) is read, up to the limit.
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.is_dir() {
        return Err(fail("a folder, not a preset file".into()));
    }
    if !meta.is_file() && !is_fifo(&meta) {
        return Err(fail("not a file (a device?)".into()));
    }
    if meta.len() > MAX_PRESET_BYTES {
        return Err(fail(format!("larger than {} KiB: not a preset", MAX_PRESET_BYTES >> 10)));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PRESET_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    parse_preset_bytes(bytes, path)
}

/// A preset read whole (up to one byte past the limit), checked and parsed.
fn parse_preset_bytes(bytes: Vec<u8>, path: &Path) -> Result<OpGraph> {
    let fail = |reason: String| Error::Preset { path: path.to_owned(), reason };
    if bytes.len() as u64 > MAX_PRESET_BYTES {
        return Err(fail(format!("larger than {} KiB: not a preset", MAX_PRESET_BYTES >> 10)));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    parse_preset(&text, path)
}

#[cfg(unix)]
fn is_fifo(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type())
}

#[cfg(not(unix))]
fn is_fifo(_: &std::fs::Metadata) -> bool {
    false
}

/// Largest preset file read: a grade of a thousand ops is some 50 KiB.
const MAX_PRESET_BYTES: u64 = 1 << 20;

/// Most ops a preset may hold. Every blur is a pass over the frame, and a
/// grade is a few ops: more than a thousand is a generated file gone wrong,
/// refused before it is parsed into gigabytes.
pub const MAX_PRESET_OPS: usize = 1000;

/// Parses preset text; `path` is only used to name it in errors.
///
/// # Errors
/// As [`load_preset`].
pub fn parse_preset(text: &str, path: &Path) -> Result<OpGraph> {
    let fail = |reason: String| Error::Preset { path: path.to_owned(), reason };
    let lines = Lines::new(text);
    let file: PresetFile = toml::from_str(text).map_err(|e| {
        // At the top level only `op` is an array: of op tables.
        let msg = one_line(e.message()).replace("expected a sequence", "expected [[op]] tables, one per op");
        fail(match e.span() {
            Some(span) => {
                // What the span covers, where it is a short piece of one
                // line (a duplicate key's name): the line alone may hold
                // several keys.
                let piece = text.get(span.clone()).map(str::trim).filter(|p| {
                    !p.is_empty() && p.len() <= 40 && !p.contains('\n') && !msg.contains(&format!("`{p}`"))
                });
                match piece {
                    // Quotes as written; control and invisible characters escaped.
                    Some(p) => {
                        let shown: String = p
                            .chars()
                            .map(|c| {
                                if matches!(c, '"' | '\'' | '\\') {
                                    c.to_string()
                                } else {
                                    c.escape_debug().to_string()
                                }
                            })
                            .collect();
                        format!("line {}: {msg} (`{shown}`)", lines.of(span.start))
                    }
                    None => format!("line {}: {msg}", lines.of(span.start)),
                }
            }
            None => msg,
        })
    })?;
    if file.op.is_empty() {
        return Err(fail("no [[op]] entries".into()));
    }
    if file.op.len() > MAX_PRESET_OPS {
        return Err(fail(format!("{} [[op]] entries, at most {MAX_PRESET_OPS}", file.op.len())));
    }
    let op_lines: Vec<usize> = file.op.iter().map(|op| lines.of(op.span().start)).collect();
    // Where each op's text is: from its span (a table's is its header
    // alone) to the next op's.
    let starts: Vec<usize> = file.op.iter().map(|op| op.span().start).chain([text.len()]).collect();
    let mut ops = Vec::with_capacity(file.op.len());
    for (i, table) in file.op.into_iter().enumerate() {
        let at = format!(" (line {})", op_lines[i]);
        let span = starts[i]..starts[i + 1].max(table.span().end);
        let value = table.into_inner();
        // The line a key of this op is set on, else the op's.
        let line_of =
            |key: &str| key_line(&text[span.clone()], key).map_or(op_lines[i], |at| lines.of(span.start + at));
        let op: Op = value.clone().try_into().map_err(|e: toml::de::Error| {
            let reason = match culprit(&value) {
                Some((key, why)) => {
                    let name = value.get("type").and_then(|t| t.as_str()).map(|n| format!(" ({n})"));
                    format!("op {} (line {}){}: {key}: {why}", i + 1, line_of(&key), name.unwrap_or_default())
                }
                // An unknown op name is the `type` line's.
                None if e.message().starts_with("unknown variant") => {
                    format!("op {} (line {}): {}", i + 1, line_of("type"), one_line(e.message()))
                }
                None => format!("op {}{at}: {}", i + 1, one_line(e.message())),
            };
            fail(reason)
        })?;
        // A matrix op of neither field would be the identity: its values
        // were left out, and an ungraded render is not what was asked for.
        if matches!(op, Op::Matrix { .. }) && value.get("matrix").is_none() && value.get("offset").is_none() {
            return Err(fail(format!("op {}{at} (matrix): needs matrix, offset, or both", i + 1)));
        }
        op.validate().map_err(|e| {
            let line = match &e {
                Error::InvalidValue { what, .. } => line_of(op.key_of(what)),
                _ => op_lines[i],
            };
            fail(format!("op {} (line {line}) ({}): {e}", i + 1, op.name()))
        })?;
        ops.push(op);
    }
    let graph = OpGraph { ops };
    if graph.validate().is_err() {
        // Each op is in range, but consecutive color ops multiply: name the
        // run that crossed the limit, from the blur before it (or the first
        // op, for the whole graph's gain) to the op that tipped it over.
        let prefix = |n: usize| OpGraph { ops: graph.ops[..n].to_vec() }.validate().err().map(|e| (n, e));
        let (end, e) = (1..=graph.ops.len()).find_map(prefix).expect("the whole graph fails");
        let blur = |op: &Op| matches!(op, Op::Blur { sigma } if *sigma > 0.0);
        // (Runs that multiply past the limit together, blurs between: from
        // the first op.)
        let whole = matches!(&e, Error::InvalidValue { what, .. } if what == super::WHOLE_GAIN);
        let start = if whole { 0 } else { graph.ops[..end].iter().rposition(blur).map_or(0, |i| i + 1).min(end - 1) };
        let lines = match (op_lines[start], op_lines[end - 1]) {
            (a, b) if a != b => format!(" (lines {a}-{b})"),
            (a, _) => format!(" (line {a})"),
        };
        let ops = if start + 1 == end { format!("op {end}") } else { format!("ops {}-{end}", start + 1) };
        return Err(fail(format!("{ops}{lines}: {e}")));
    }
    Ok(graph)
}

/// The key of an op table whose value is what its op cannot take, and
/// why: serde names the wrong type but not the field. Each key is tried
/// alone beside the op's `type`: one that is fine then fails only for the
/// fields left out (or not at all).
fn culprit(table: &toml::Value) -> Option<(String, String)> {
    let table = table.as_table()?;
    match table.get("type") {
        Some(toml::Value::String(_)) => {}
        Some(other) => {
            return Some((
                "type".into(),
                format!("{other} is not an op name (a string: exposure, matrix, contrast, saturation, blur)"),
            ));
        }
        None => return None,
    }
    let named = |entries: &[(&String, &toml::Value)]| {
        let alone: toml::Table = entries.iter().map(|(k, v)| ((*k).clone(), (*v).clone())).collect();
        match Op::deserialize(toml::Value::Table(alone)) {
            Err(e) if !e.message().starts_with("missing field") => Some(one_line(e.message())),
            _ => None,
        }
    };
    let kind = table.get_key_value("type")?;
    // An unknown op name: serde's own message says so, and lists them.
    if named(&[kind]).is_some() {
        return None;
    }
    table.iter().filter(|(key, _)| *key != "type").find_map(|entry| Some((entry.0.clone(), named(&[kind, entry])?)))
}

/// Byte offset, in an op's text, of the line that sets `key` (`key =`, in
/// a table or an inline table).
fn key_line(text: &str, key: &str) -> Option<usize> {
    let forms = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    let mut found: Vec<usize> = forms
        .iter()
        .flat_map(|form| {
            text.match_indices(form.as_str()).map(|(at, _)| at).filter(|&at| {
                // Where a key starts: the line's first word, or after `{`
                // or `,` in an inline table; not in a comment.
                let line = &text[text[..at].rfind('\n').map_or(0, |n| n + 1)..at];
                let before = line.trim_end().chars().next_back();
                let after = text[at + form.len()..].trim_start();
                let set =
                    before.is_none_or(|c| c == '{' || c == ',') && (after.starts_with('=') || after.starts_with('.'));
                // Or a sub-table of the op, `[op.key]` (or deeper).
                let table = line.trim_start().starts_with('[')
                    && before == Some('.')
                    && (after.starts_with(']') || after.starts_with('.'));
                !line.contains('#') && (set || table)
            })
        })
        .collect();
    found.sort_unstable();
    found.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse_preset(text, Path::new("p.toml")).unwrap_err().to_string()
    }

    #[test]
    fn a_sub_table_of_an_op_is_named_at_its_own_header() {
        let text = "[[op]]\ntype = \"blur\"\nsigma = 2.0\n\n[op.extra]\nx = 1\n";
        assert!(error(text).contains("op 1 (line 5) (blur): extra"), "{}", error(text));
    }

    #[test]
    fn errors_name_the_line_of_the_value_at_fault_whatever_the_layout() {
        // A multi-line string holding "[[op]]" is not a header; spaced
        // headers are headers.
        let text = "description = \"\"\"\n[[op]] was here\n\"\"\"\n[[op]]\ntype = \"exposure\"\nstops = 1.0\n[[ op ]]\ntype = \"blur\"\nsigma = -1.0\n";
        assert!(error(text).contains("op 2 (line 9) (blur)"), "{}", error(text));
        let inline = "op = [\n  { type = \"exposure\", stops = 1.0 },\n  { type = \"blur\", sigma = -1.0 },\n]\n";
        assert!(error(inline).contains("op 2 (line 3) (blur)"), "{}", error(inline));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_and_line() {
        let cases = [
            (
                "[[op]]\ntype = \"blur\"\nsigma = 1\n[[op]]\ntype = \"exposure\"\n\nstops = \"half\"\n",
                "op 2 (line 7) (exposure): stops: invalid type: string \"half\"",
            ),
            (
                "[[op]]\ntype = \"matrix\"\nmatrix = [1,0,0,0,1,0,0,0,1]\noffset = [0,0]\n",
                "op 1 (line 4) (matrix): offset: invalid length 2",
            ),
            ("[[op]]\ntype = \"matrix\"\n", "op 1 (line 1) (matrix): needs matrix, offset, or both"),
            (
                "[[op]]\ntype = \"matrix\"\nmatrx = [1,0,0,0,1,0,0,0,1]\n",
                "op 1 (line 3) (matrix): matrx: unknown field `matrx`",
            ),
            (
                "[[op]]\ntype = \"contrast\"\ncontrast = 1.2\npivot = true\n",
                "(line 4) (contrast): pivot: invalid type: boolean",
            ),
            ("[[op]]\ntype = 5\nstops = 1\n", "op 1 (line 2): type: 5 is not an op name"),
            ("[[op]]\ntype = \"exposure\"\nstopz = 1\n", "op 1 (line 3) (exposure): stopz: unknown field `stopz`"),
            (
                "op = [\n { type = \"blur\", sigma = 1 },\n { type = \"exposure\", stops = [1] },\n]\n",
                "op 2 (line 3) (exposure): stops: invalid type: array",
            ),
            // Not a field's fault: said as serde says it.
            ("[[op]]\ntype = \"blurr\"\nsigma = 1\n", "op 1 (line 2): unknown variant `blurr`"),
            ("[[op]]\ntype = \"blur\"\n", "op 1 (line 1): missing field `sigma`"),
            ("[[op]]\ntype = \"Exposure\"\nstops = 1\n", "op 1 (line 2): unknown variant `Exposure`"),
            // Quoted and dotted keys, a key in a comment first.
            ("[[op]]\ntype = \"exposure\"\n# stops = 2\n\"stops\" = \"x\"\n", "op 1 (line 4) (exposure): stops:"),
            ("[[op]]\ntype = \"exposure\"\n'stops' = \"x\"\n", "op 1 (line 3) (exposure): stops:"),
            ("[[op]]\ntype = \"exposure\"\nstops.x = 1\n", "op 1 (line 3) (exposure): stops: invalid type: table"),
            // A value out of range: the line of its key.
            (
                "[[op]]\ntype = \"exposure\"\nstops = 1\n[[op]]\ntype = \"blur\"\n\nsigma = -1\n",
                "op 2 (line 7) (blur): invalid sigma -1",
            ),
            ("[[op]]\ntype = \"exposure\"\nstops = inf\n", "op 1 (line 3) (exposure): invalid exposure inf"),
            // TOML's own errors: the line, and the key where it names one.
            ("[[op]]\ntype = \"exposure\"\nstops = 1\nstops = 2\n", "line 4: duplicate key (`stops`)"),
            ("[[op]]\ntype = \"exposure\"\nstops = 1\ntype = \"blur\"\n", "line 4: duplicate key (`type`)"),
            // Said in the preset's terms, not serde's Rust types.
            ("op = [1, 2]\n", "op 1 (line 1): invalid type: integer `1`, expected an op table: [[op]] with type"),
            ("[op]\ntype = \"blur\"\nsigma = 1\n", "line 1: invalid type: table, expected [[op]] tables, one per op"),
            ("op = \"blur\"\n", "expected [[op]] tables, one per op (`\"blur\"`)"),
            (
                "[[op]]\ntype = \"exposure\"\nstops = 99999999999999999999\n",
                "line 3: integer `99999999999999999999` is out of range for TOML (-2^63 to 2^63 - 1)",
            ),
            ("[[op]]\ntype = \"blur\"\nsigma = \"big\"\n", "sigma: invalid type: string \"big\", expected a number"),
        ];
        for (text, expected) in cases {
            assert!(error(text).contains(expected), "{text:?}: {}", error(text));
        }
    }

    #[test]
    fn lines_of_offsets() {
        let lines = Lines::new("ab\ncd\n\nx");
        let of = |o| lines.of(o);
        assert_eq!([of(0), of(2), of(3), of(6), of(7)], [1, 1, 2, 3, 4]);
    }
}
