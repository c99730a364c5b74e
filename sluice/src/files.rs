//! Reading pipeline files from disk.

use std::path::{Path, PathBuf};

use sluice_core::pipeline::{self, Pipeline, Problem};

/// A pipeline file, parsed: the pipeline, or every problem found in it.
pub type Parsed = Result<Pipeline, Vec<Problem>>;

/// Parses one pipeline file (`.toml` or `.json`, by extension).
pub fn read_pipeline(path: &Path) -> anyhow::Result<Parsed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("json") => pipeline::parse_json(&text),
        _ => pipeline::parse_toml(&text),
    })
}

/// Parses every `*.toml` / `*.json` file of `dir`, sorted by name.
pub fn read_pipeline_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Parsed)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read pipelines.dir {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "json")))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| read_pipeline(&p).map(|r| (p, r))).collect()
}

/// The 1-based line of a TOML pipeline file where `field` (a problem's path, such as
/// `steps[1].probe.run[0]`) is written, as far as it can be told from the text: the line of
/// its key within its `[[steps]]` table, else the table's header. `None` for a field it
/// cannot place (a whole-document problem, or a key that is not written at all and has no
/// table to point at).
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    if field.is_empty() {
        return None;
    }
    let mut segments = field.split('.');
    let first = segments.next()?;
    let key_after = segments.next().map(|k| k.split('[').next().unwrap_or(k));
    let lines: Vec<&str> = text.lines().collect();
    let is_key = |line: &str, key: &str| {
        line.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    match first.split_once('[') {
        Some(("steps", rest)) => {
            let index: usize = rest.trim_end_matches(']').parse().ok()?;
            let header = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim() == "[[steps]]")
                .nth(index)
                .map(|(i, _)| i)?;
            let end = lines
                .iter()
                .enumerate()
                .skip(header + 1)
                .find(|(_, l)| l.trim_start().starts_with('['))
                .map_or(lines.len(), |(i, _)| i);
            let found = key_after.and_then(|key| (header + 1..end).find(|&i| is_key(lines[i], key)));
            Some(found.unwrap_or(header) + 1)
        }
        _ => {
            let top = first.split('[').next().unwrap_or(first);
            let end = lines.iter().position(|l| l.trim_start().starts_with('[')).unwrap_or(lines.len());
            (0..end).find(|&i| is_key(lines[i], top)).map(|i| i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "id = \"x\"\nname = \"X\"\n\n[[steps]]\nname = \"a\"\nkind = \"command\"\n\n[[steps]]\nname = \"b\"\nkind = \"gate\"\ninterval = \"1ms\"\nprobe = { run = [] }\n";

    #[test]
    fn problems_are_placed_on_the_line_of_their_key_or_table() {
        assert_eq!(line_of(TEXT, "id"), Some(1));
        assert_eq!(line_of(TEXT, "steps[1].interval"), Some(11));
        assert_eq!(line_of(TEXT, "steps[1].probe.run"), Some(12));
        assert_eq!(line_of(TEXT, "steps[0].run"), Some(4), "a missing key points at its table");
        assert_eq!(line_of(TEXT, "steps[5].name"), None);
        assert_eq!(line_of(TEXT, ""), None);
        assert_eq!(line_of(TEXT, "description"), None);
    }
}
