//! Configuration layering on the real binary: defaults < file < `SLUICE_…` environment <
//! flags, read back with `sluice config show --json`; unknown keys refused in the file and
//! in the environment, naming the key.

mod common;

use common::{sluice, stderr, stdout};
use serde_json::Value;

fn show(config: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args = vec!["config", "show", "--json", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = sluice(&args, env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[test]
fn each_layer_overrides_the_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "[redis]\nurl = \"redis://from-file:6379\"\n\n[worker]\nconcurrency = 3\n").unwrap();

    let c = show(&file, &[], &[]);
    assert_eq!(c["api"]["listen"], "127.0.0.1:7070", "a default");
    assert_eq!(c["redis"]["url"], "redis://from-file:6379", "the file over the default");
    assert_eq!(c["worker"]["concurrency"], 3);
    assert_eq!(c["worker"]["shutdown_timeout"], "30s");

    let env = [("SLUICE_REDIS__URL", "redis://from-env:6379"), ("SLUICE_WORKER__CONCURRENCY", "5")];
    let c = show(&file, &[], &env);
    assert_eq!(c["redis"]["url"], "redis://from-env:6379", "the environment over the file");
    assert_eq!(c["worker"]["concurrency"], 5);

    let c = show(&file, &["--redis-url", "redis://from-flag:6379"], &env);
    assert_eq!(c["redis"]["url"], "redis://from-flag:6379", "a flag over the environment");
}

#[test]
fn unknown_keys_are_refused_in_the_file_and_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "[worker]\nconcurency = 3\n").unwrap();
    let out = sluice(&["config", "show", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("concurency"), "{}", stderr(&out));

    std::fs::write(&file, "").unwrap();
    let out = sluice(&["config", "show", "--config", file.to_str().unwrap()], &[("SLUICE_WORKER__COLOUR", "blue")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
}

#[test]
fn secrets_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(
        &file,
        "[[auth.tokens]]\nsubject = \"ops\"\nrole = \"admin\"\ntoken = \"ops-secret-never-shown-0123\"\n",
    )
    .unwrap();
    let out = sluice(&["config", "show", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("ops-secret"), "{}", stdout(&out));
    assert!(stdout(&out).contains("<redacted>"), "{}", stdout(&out));
}

#[test]
fn validate_passes_the_shipped_config_and_reports_every_problem_of_broken_files() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sluice.toml");
    let out = sluice(&["validate", "--config", shipped], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("are valid"), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[pipelines]\ndir = \"pipelines\"\n").unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    std::fs::write(pipelines.join("a-syntax.toml"), "id = \"a\"\n[[steps]\nname = \"x\"\n").unwrap();
    std::fs::write(
        pipelines.join("b-fields.toml"),
        "id = \"b\"\n\n[[steps]]\nname = \"build\"\nkind = \"command\"\n\n[[steps]]\nname = \"ci\"\nkind = \"gate\"\ninterval = \"1ms\"\nprobe = { run = [] }\nmax_polls = 5\n",
    )
    .unwrap();
    std::fs::write(
        pipelines.join("schedules.toml"),
        "[[schedules]]\nname = \"nightly\"\npipeline = \"b\"\ncron = \"0 25 * * *\"\n",
    )
    .unwrap();
    std::fs::write(pipelines.join("c-kind.json"), r#"{"id": "c", "steps": [{"name": "x", "kind": "teleport"}]}"#).unwrap();
    let out = sluice(&["validate", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("is not valid TOML").count(), 1, "each problem once:\n{err}");
    for expected in [
        "a-syntax.toml: (file): is not valid TOML (line 2)",
        "b-fields.toml:3: steps[0].run: is required",
        "b-fields.toml:10: steps[1].interval: must be at least 1s",
        "b-fields.toml:11: steps[1].probe.run: must not be empty",
        "c-kind.json: steps[0].kind: unknown kind `teleport`",
        "schedules.toml:4: schedules[0].cron:",
        "6 problem(s) found",
    ] {
        assert!(err.contains(expected), "`{expected}` not in:\n{err}");
    }
}
