//! Reading pipeline files, and the schedules defined in files, from disk.
//!
//! A pipeline file may carry `[[schedules]]` tables beside its steps (they fire that
//! pipeline unless they name another), and `pipelines.dir` may hold a `schedules.toml` of
//! `[[schedules]]` tables alone (each naming its pipeline). A file's schedules are read apart
//! from its pipeline, so a problem in one does not keep the other from loading.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_core::pipeline::{self, Pipeline, Problem};
use sluice_core::schedule::{self, ScheduleSpec};

/// A pipeline file, parsed: the pipeline, or every problem found in it.
pub type Parsed = Result<Pipeline, Vec<Problem>>;

/// A file's schedules, parsed: every one, or every problem found in them.
pub type ParsedSchedules = Result<Vec<ScheduleSpec>, Vec<Problem>>;

/// The file of `pipelines.dir` that holds schedules only.
pub const SCHEDULES_FILE: &str = "schedules.toml";

/// The top-level key of schedule tables.
const SCHEDULES_KEY: &str = "schedules";

fn read(path: &Path) -> anyhow::Result<Result<Value, Vec<Problem>>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let json = path.extension().and_then(|e| e.to_str()) == Some("json");
    Ok(pipeline::parse_text(&text, json))
}

fn is_schedules_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()) == Some(SCHEDULES_FILE)
}

/// Parses one pipeline file (`.toml` or `.json`, by extension); its `schedules` are left to
/// [`read_schedules`].
pub fn read_pipeline(path: &Path) -> anyhow::Result<Parsed> {
    Ok(read(path)?.and_then(|mut value| {
        if let Some(map) = value.as_object_mut() {
            map.remove(SCHEDULES_KEY);
        }
        pipeline::from_value(&value)
    }))
}

/// The `*.toml` / `*.json` files of `dir`, sorted by name.
fn dir_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read pipelines.dir {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "json")))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Parses every pipeline file of `dir` (every `*.toml` / `*.json` but [`SCHEDULES_FILE`]),
/// sorted by name.
pub fn read_pipeline_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Parsed)>> {
    dir_files(dir)?
        .into_iter()
        .filter(|p| !is_schedules_file(p))
        .map(|p| read_pipeline(&p).map(|r| (p, r)))
        .collect()
}

/// Parses the `[[schedules]]` tables of one file: a pipeline file (whose pipeline they fire
/// unless they name another) or a [`SCHEDULES_FILE`] (which holds nothing else).
pub fn read_schedules(path: &Path) -> anyhow::Result<ParsedSchedules> {
    let value = match read(path)? {
        Ok(v) => v,
        Err(problems) => return Ok(Err(problems)),
    };
    let mut problems = Vec::new();
    let default_pipeline = if is_schedules_file(path) {
        for key in value.as_object().into_iter().flat_map(|m| m.keys()).filter(|k| *k != SCHEDULES_KEY) {
            problems.push(Problem::new(key.clone(), format!("unknown field; {SCHEDULES_FILE} holds `[[schedules]]` tables only")));
        }
        None
    } else {
        value.get("id").and_then(Value::as_str)
    };
    let tables = match value.get(SCHEDULES_KEY) {
        None => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => {
            problems.push(Problem::new(SCHEDULES_KEY, "must be an array of tables (`[[schedules]]`)"));
            &[][..]
        }
    };
    let mut specs = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        match schedule::parse_spec(table, &format!("{SCHEDULES_KEY}[{i}]"), default_pipeline) {
            Ok(spec) => specs.push(spec),
            Err(mut p) => problems.append(&mut p),
        }
    }
    Ok(if problems.is_empty() { Ok(specs) } else { Err(problems) })
}

/// Parses the schedules of every file of `dir` (pipeline files and [`SCHEDULES_FILE`]),
/// sorted by file name. A name defined twice is a problem of the second file.
pub fn read_schedule_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, ParsedSchedules)>> {
    let mut seen = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for path in dir_files(dir)? {
        let parsed = read_schedules(&path)?.and_then(|specs| {
            let mut problems = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                if let Some(first) = seen.insert(spec.name.clone(), path.clone()) {
                    let message = format!("`{}` is the name of a schedule of {} too; names are unique", spec.name, first.display());
                    problems.push(Problem::new(format!("{SCHEDULES_KEY}[{i}].name"), message));
                }
            }
            if problems.is_empty() { Ok(specs) } else { Err(problems) }
        });
        out.push((path, parsed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const RELEASE: &str = r#"
id = "release"
[[steps]]
name = "build"
kind = "noop"

[[schedules]]
name = "nightly"
cron = "0 2 * * *"
timezone = "Europe/Berlin"

[[schedules]]
name = "other"
pipeline = "cleanup"
every = "6h"
"#;

    #[test]
    fn a_pipeline_file_carries_schedules_of_its_pipeline_beside_its_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "release.toml", RELEASE);
        let pipeline = read_pipeline(&path).unwrap().unwrap();
        assert_eq!((pipeline.id.as_str(), pipeline.steps.len()), ("release", 1));
        let specs = read_schedules(&path).unwrap().unwrap();
        let found: Vec<(&str, &str)> = specs.iter().map(|s| (s.name.as_str(), s.pipeline.as_str())).collect();
        assert_eq!(found, [("nightly", "release"), ("other", "cleanup")]);
    }

    #[test]
    fn a_schedules_file_holds_schedules_only_and_problems_name_their_table() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "release.toml", RELEASE);
        write(
            dir.path(),
            SCHEDULES_FILE,
            "steps = 1\n[[schedules]]\nname = \"a\"\npipeline = \"release\"\nevery = \"1h\"\n\n[[schedules]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\n",
        );
        let pipelines = read_pipeline_dir(dir.path()).unwrap();
        assert_eq!(pipelines.len(), 1, "the schedules file is not a pipeline");
        let schedules = read_schedule_dir(dir.path()).unwrap();
        assert_eq!(schedules.len(), 2);
        assert_eq!(schedules[0].1.as_ref().unwrap().len(), 2);
        let problems = schedules[1].1.as_ref().unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["steps", "schedules[1].pipeline"]);
    }

    #[test]
    fn a_name_defined_in_two_files_is_a_problem_of_the_second() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "release.toml", RELEASE);
        write(dir.path(), SCHEDULES_FILE, "[[schedules]]\nname = \"nightly\"\npipeline = \"release\"\nevery = \"1h\"\n");
        let schedules = read_schedule_dir(dir.path()).unwrap();
        assert!(schedules[0].1.is_ok());
        let problems = schedules[1].1.as_ref().unwrap_err();
        assert_eq!(problems[0].field, "schedules[0].name");
        assert!(problems[0].message.contains("release.toml"), "{}", problems[0].message);
    }
}

/// The 1-based line of a TOML pipeline file where `field` (a problem's path, such as
/// `steps[1].probe.run[0]`, `schedules[0].cron`) is written, as far as it can be told from
/// the text: the line of its key within its `[[steps]]` (or `[[schedules]]`) table, else the
/// table's header. `None` for a field it
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
        Some((table, rest)) => {
            // `1]`, or `1]["a b"]` for a key that is not a plain name.
            let index: usize = rest.split(']').next()?.parse().ok()?;
            let header_text = format!("[[{table}]]");
            let header = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim() == header_text)
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
mod line_tests {
    use super::line_of;

    const TEXT: &str = "id = \"x\"\nname = \"X\"\n\n[[steps]]\nname = \"a\"\nkind = \"command\"\n\n[[steps]]\nname = \"b\"\nkind = \"gate\"\ninterval = \"1ms\"\nprobe = { run = [] }\n";

    #[test]
    fn problems_are_placed_on_the_line_of_their_key_or_table() {
        assert_eq!(line_of(TEXT, "id"), Some(1));
        assert_eq!(line_of(TEXT, "steps[1].interval"), Some(11));
        assert_eq!(line_of(TEXT, "steps[1].probe.run"), Some(12));
        assert_eq!(line_of(TEXT, "steps[0].run"), Some(4), "a missing key points at its table");
        assert_eq!(line_of(TEXT, r#"steps[1]["a b"]"#), Some(8), "a quoted key points at its table");
        assert_eq!(line_of(TEXT, "steps[5].name"), None);
        assert_eq!(line_of(TEXT, ""), None);
        assert_eq!(line_of(TEXT, "description"), None);
        let with_schedule = format!("{TEXT}\n[[schedules]]\nname = \"n\"\ncron = \"bad\"\n");
        assert_eq!(line_of(&with_schedule, "schedules[0].cron"), Some(16));
    }
}
