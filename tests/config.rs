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
