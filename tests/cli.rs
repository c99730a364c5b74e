//! The CLI of the real binary against `sluice up` (API, scheduler and a worker on queues
//! `default` and `cli`) over a private Redis: standalone jobs and queue figures, `--json`
//! output that parses, a refused operation that exits 1 naming its problem code, and shell
//! completion scripts. Also the CLI against a stand-in API served over https, and
//! `sluice schedule next`, which needs no API.

mod common;

use std::process::Output;

use axum::Json;
use axum::extract::Path;
use axum::http::HeaderMap;
use common::{Setup, cli, sluice, stderr, stdout, wait_for_api};
use serde_json::{Value, json};
use sluice_testkit::{TlsServer, free_port};
use sluice_testkit::process::Child;

/// A running `sluice up` and the URL of its API. The processes live as long as this.
struct Up {
    setup: Setup,
    _up: Child,
    url: String,
}

impl Up {
    /// Runs the CLI with `args`; fails the test unless it exits 0.
    fn ok(&self, args: &[&str]) -> Output {
        let out = cli(&self.url, args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "sluice {args:?}\nstdout: {}\nstderr: {}\nlog: {}",
            stdout(&out),
            stderr(&out),
            self.setup.log_tail("up", 20)
        );
        out
    }

    /// Runs the CLI with `args` and `--json` (before a `--`); the printed JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.insert(args.iter().position(|a| *a == "--").unwrap_or(args.len()), "--json");
        let out = self.ok(&args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("sluice {args:?} printed no JSON ({e}): {}", stdout(&out)))
    }
}

async fn up() -> Up {
    let port = free_port();
    let setup = Setup::new("queues = [\"default\", \"cli\"]\nconcurrency = 2");
    setup.append(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n"));
    let up = setup.spawn("up", "up");
    let url = format!("http://127.0.0.1:{port}");
    wait_for_api(&url).await;
    Up { setup, _up: up, url }
}

/// The counts of `queue` in the JSON of `sluice queue stats QUEUE --json`.
fn counts(queue: &Value) -> [u64; 5] {
    ["ready", "delayed", "running", "completed", "failed"]
        .map(|k| queue[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {queue}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_jobs_show_in_the_queue_stats_and_a_refused_cancel_exits_1() {
    let up = up().await;
    // `held` has no worker: its jobs stay where they are.
    for _ in 0..2 {
        let enqueued = up.json(&["job", "enqueue", "--queue", "held", "--", "true"]);
        assert_eq!(enqueued["job"]["status"], "pending", "{enqueued}");
    }
    let delayed = up.ok(&["job", "enqueue", "--queue", "held", "--kind", "noop", "--delay", "1h"]);
    assert!(stdout(&delayed).starts_with("enqueued job job_"), "{}", stdout(&delayed));

    // `cli` has a worker: `--wait` follows the job until it completes.
    let done = up.json(&["job", "enqueue", "--queue", "cli", "--wait", "--", "sh", "-c", "echo hello"]);
    assert_eq!((done["status"].as_str(), done["attempts"].as_u64()), (Some("completed"), Some(1)), "{done}");
    let failing = cli(&up.url, &["job", "enqueue", "--queue", "cli", "--max-attempts", "1", "--wait", "--", "false"], &[]);
    assert_eq!(failing.status.code(), Some(1), "a job that fails exits 1: {}", stderr(&failing));
    assert!(stdout(&failing).contains("status failed"), "{}", stdout(&failing));

    let held = up.json(&["queue", "stats", "held"]);
    assert_eq!(counts(&held), [2, 1, 0, 0, 0], "{held}");
    assert_eq!(held["paused"], false);
    let served = up.json(&["queue", "stats", "cli"]);
    assert_eq!(counts(&served), [0, 0, 0, 1, 1], "{served}");
    assert_eq!(served["workers"].as_array().map(Vec::len), Some(1), "the worker of `up` serves `cli`: {served}");
    let all = up.json(&["queue", "stats"]);
    let names: Vec<&str> = all["items"].as_array().unwrap().iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(names, ["cli", "held"], "{all}");
    let table = stdout(&up.ok(&["queue", "stats"]));
    assert!(table.starts_with("QUEUE") && table.lines().count() == 3, "{table}");

    let paused = up.json(&["queue", "pause", "held"]);
    assert_eq!(paused["paused"], true);
    assert_eq!(up.json(&["queue", "resume", "held"])["paused"], false);

    // Only pending jobs can be cancelled: the completed one is refused.
    let id = done["id"].as_str().unwrap();
    let refused = cli(&up.url, &["job", "cancel", id], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("JOB_NOT_PENDING (409)"), "{}", stderr(&refused));
    let bad_name = cli(&up.url, &["queue", "pause", "a/b"], &[]);
    assert_eq!(bad_name.status.code(), Some(1), "{}", stderr(&bad_name));
    assert!(stderr(&bad_name).contains("BAD_REQUEST (400)"), "{}", stderr(&bad_name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_json_output_parses_and_resuming_a_completed_execution_is_refused() {
    let up = up().await;
    let file = up.setup.dir.path().join("hello.toml");
    std::fs::write(&file, "id = \"hello\"\n[[steps]]\nname = \"only\"\nkind = \"noop\"\n").expect("pipeline file");
    up.ok(&["pipeline", "apply", file.to_str().expect("a UTF-8 path")]);

    let finished = up.json(&["exec", "start", "hello", "--wait"]);
    assert_eq!(finished["status"], "completed", "{finished}");
    let id = finished["id"].as_str().unwrap();
    let got = up.json(&["exec", "get", id]);
    assert_eq!((got["id"].as_str(), got["status"].as_str()), (Some(id), Some("completed")));
    let list = up.json(&["exec", "list", "--status", "completed"]);
    assert_eq!(list["items"][0]["id"], id, "{list}");
    assert!(list["next_cursor"].is_null(), "{list}");

    let refused = cli(&up.url, &["exec", "resume", id], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("EXECUTION_NOT_PAUSED (409)"), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty(), "a refusal prints nothing on stdout: {}", stdout(&refused));
}

/// `--api https://…` works: the CLI verifies the API's certificate, trusts it once
/// `SSL_CERT_FILE` names it, and says why when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_api_whose_certificate_it_trusts() {
    let api = axum::Router::new().route(
        "/v1/jobs/{id}",
        axum::routing::get(|Path(id): Path<String>, headers: HeaderMap| async move {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            Json(json!({"id": id, "status": "completed", "authorization": token}))
        }),
    );
    let server = TlsServer::start(api).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("api-cert.pem");
    std::fs::write(&ca, server.cert_pem()).expect("write the certificate");
    let url = server.url("");
    let args = ["job", "get", "job_1", "--api", url.as_str(), "--token", "cli-secret", "--json"];

    let out = sluice(&args, &[("SSL_CERT_FILE", ca.to_str().expect("a UTF-8 path"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(job, json!({"id": "job_1", "status": "completed", "authorization": "Bearer cli-secret"}));

    let refused = sluice(&args, &[("SSL_CERT_FILE", "/dev/null")]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let why = format!(
        "error: cannot reach the sluice API: {url}: the API's TLS certificate was refused (invalid peer certificate: UnknownIssuer)"
    );
    assert!(stderr(&refused).starts_with(&why), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty(), "{}", stdout(&refused));
}

#[test]
fn completion_scripts_cover_the_commands() {
    for (shell, marker) in [("bash", "_sluice()"), ("zsh", "#compdef sluice"), ("fish", "complete -c sluice")] {
        let out = sluice(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["enqueue", "stats", "pause", "schedule", "completions"] {
            assert!(script.contains(command), "{shell} completes `{command}`");
        }
    }
    let unknown = sluice(&["completions", "tcsh"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    // `validate` prints a line per pipeline file into a pipe whose reader is already gone.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sluice.toml");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "--config", config])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the CLI");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "no panic message: {err}");
    assert_eq!(out.status.code(), Some(141), "the exit a shell expects from a closed pipe: {err}");
}

/// `sluice schedule next ARGS` with an API address where nothing answers (the command needs
/// none): its exit code, stdout and stderr.
fn schedule_next(args: &[&str]) -> (Option<i32>, String, String) {
    let out = sluice(&[&["schedule", "next"], args].concat(), &[("SLUICE_API_URL", "http://127.0.0.1:9")]);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// The UTC column of a `schedule next` table.
fn utc_column(table: &str) -> Vec<&str> {
    table.lines().skip(1).filter_map(|line| line.split_whitespace().next()).collect()
}

#[test]
fn schedule_next_prints_cron_fire_times_in_utc_and_local_time() {
    // Friday 2026-03-06 10:00 in New York; its clocks go forward on Sunday March 8.
    let args = ["0 9 * * 1-5", "--tz", "America/New_York", "--count", "3", "--from", "2026-03-06T15:00:00Z"];
    let (code, out, err) = schedule_next(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "UTC                    LOCAL (America/New_York)\n\
         2026-03-09T13:00:00Z   2026-03-09T09:00:00-04:00 EDT\n\
         2026-03-10T13:00:00Z   2026-03-10T09:00:00-04:00 EDT\n\
         2026-03-11T13:00:00Z   2026-03-11T09:00:00-04:00 EDT\n"
    );
    let (code, out, err) = schedule_next(&[&args[..], &["--json"]].concat());
    assert_eq!(code, Some(0), "{err}");
    let printed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(printed["cadence"], json!({"cron": "0 9 * * 1-5", "timezone": "America/New_York"}));
    assert_eq!(
        printed["items"][0],
        json!({"utc": "2026-03-09T13:00:00Z", "local": "2026-03-09T09:00:00-04:00", "abbreviation": "EDT"})
    );
    assert_eq!(printed["items"].as_array().map(Vec::len), Some(3));
}

#[test]
fn schedule_next_counts_from_now_by_default() {
    let cadence = sluice_core::Cadence::cron("0 9 * * 1-5", "America/New_York").expect("valid");
    let expected = || {
        let mut at = cadence.next_after(jiff::Timestamp::now().as_millisecond());
        let mut out = Vec::new();
        while let Some(t) = at.filter(|_| out.len() < 3) {
            out.push(jiff::Timestamp::from_millisecond(t).expect("in range").to_string());
            at = cadence.next_after_fire(t);
        }
        out
    };
    let before = expected();
    let (code, out, err) = schedule_next(&["0 9 * * 1-5", "--tz", "America/New_York", "--count", "3"]);
    let after = expected();
    assert_eq!(code, Some(0), "{err}");
    let printed = utc_column(&out);
    assert_eq!(printed.len(), 3, "{out}");
    assert!(printed == before || printed == after, "printed {printed:?}, expected {before:?} or {after:?}");
}

#[test]
fn schedule_next_prints_interval_fire_times_inside_the_window() {
    // Monday 2026-01-12 10:00 in Berlin; the window is Monday to Friday 22:00-05:59.
    let (code, out, err) = schedule_next(&[
        "6h", "--every", "--weekdays", "1,2,3,4,5", "--hours", "22-6", "--tz", "Europe/Berlin", "--count", "4", "--from",
        "2026-01-12T09:00:00Z",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        utc_column(&out),
        ["2026-01-12T21:00:00Z", "2026-01-13T03:00:00Z", "2026-01-13T21:00:00Z", "2026-01-14T03:00:00Z"]
    );
    assert!(out.contains("2026-01-12T22:00:00+01:00 CET"), "{out}");
}

#[test]
fn schedule_next_refuses_bad_input_with_the_problem_or_as_usage() {
    let (code, out, err) = schedule_next(&["0 9 * *", "--tz", "Europe/Berln"]);
    assert_eq!(code, Some(1), "a refused cadence exits 1");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "error: cron: `0 9 * *` has 4 fields; a cron expression has 5: minute hour day-of-month month day-of-week\n\
         error: timezone: `Europe/Berln` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)\n"
    );
    let (code, _, err) = schedule_next(&["30s", "--every"]);
    assert_eq!((code, err.as_str()), (Some(1), "error: every: must be at least 1m\n"));
    let (code, _, err) = schedule_next(&["1h", "--every", "--weekdays", "0", "--hours", "25-3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("error: weekdays: `0` is not a weekday") && err.contains("error: hours: `25-3`"), "{err}");
    // Usage errors: a window without --every, a --from that is not an instant, a count of 0.
    for args in [&["@daily", "--hours", "9-17"][..], &["@daily", "--from", "yesterday"], &["@daily", "--count", "0"]] {
        let (code, _, err) = schedule_next(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
}
