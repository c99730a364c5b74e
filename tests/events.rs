//! `sluice events` against the real binary (`sluice up` on a private Redis): it lists the
//! events kept as JSON lines or a table, filtered; `--follow` prints new events as they
//! happen, survives a restart of the API (reconnecting with the last position it saw, so
//! the events written meanwhile arrive once and nothing is printed twice), and exits 0 on
//! Ctrl-C. Stopping the API while a follower is connected does not hold up its shutdown.

mod common;

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Setup, expect_exit, start_executions, wait_all_terminal};
use serde_json::Value;
use sluice_store::engine::Engine;
use sluice_testkit::process::{Child, SIGINT, SIGTERM};
use sluice_testkit::{free_port, wait_until};

const PIPELINE: &str = "id = \"two\"\n[[steps]]\nname = \"build\"\nkind = \"noop\"\n\
                        [[steps]]\nname = \"ship\"\nkind = \"noop\"\n";

/// Longest wait for one line of the follower.
const PATIENCE: Duration = Duration::from_secs(30);

fn cli(api: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--api", api])
        .env_remove("SLUICE_TOKEN")
        .output()
        .expect("run the CLI")
}

fn stdout(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The events of `sluice events --json …`.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// The types of execution `id`'s own events, oldest first.
async fn history(engine: &Engine, id: &str) -> Vec<String> {
    engine
        .store()
        .execution_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Starts `sluice up` and waits until its API answers.
async fn up(setup: &Setup, url: &str) -> Child {
    let child = setup.spawn("up", "up");
    let healthz = format!("{url}/healthz");
    wait_until(Duration::from_secs(20), "the api to answer", || async {
        common::http_client().get(&healthz).send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    child
}

/// A running `sluice events --follow`, its output lines arriving on a channel.
struct Follower {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Follower {
    fn spawn(setup: &Setup, args: &[&str]) -> Follower {
        let stderr = std::fs::File::create(setup.log("follower")).expect("follower log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args)
            .env_remove("SLUICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = Child::from_std(
            cmd.spawn().expect("spawn the follower"),
            "sluice events --follow",
        );
        let out = child.inner_mut().stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Events until and including `execution.completed` of `id`.
    async fn until_completed(&mut self, setup: &Setup, id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no event within {PATIENCE:?}; follower:\n{}",
                        setup.log_tail("follower", 20)
                    )
                })
                .expect("the follower is still printing");
            let event: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let done =
                event["type"] == "execution.completed" && event["data"]["execution_id"] == id;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lists_what_is_kept_and_follows_across_a_restart_of_the_api() {
    let port = free_port();
    let setup = Setup::new("concurrency = 2");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&setup.config)
        .expect("config file");
    writeln!(
        config,
        "\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n"
    )
    .expect("append to the config");
    let url = format!("http://127.0.0.1:{port}");
    let mut api = up(&setup, &url).await;
    let engine = setup.engine().await;
    let first = start_executions(&engine, PIPELINE, 1).await.remove(0);
    wait_all_terminal(
        &engine,
        std::slice::from_ref(&first),
        Duration::from_secs(20),
    )
    .await;

    // Listing, from the oldest event kept: JSON lines, and a table filtered by type.
    let listed = json_lines(&stdout(&cli(
        &url,
        &["events", "--json", "--execution", &first],
    )));
    assert_eq!(types(&listed), history(&engine, &first).await);
    assert_eq!(listed.first().unwrap()["type"], "execution.started");
    assert_eq!(listed.last().unwrap()["type"], "execution.completed");
    let table = stdout(&cli(&url, &["events", "--type", "execution.step."]));
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("TIME (UTC)") && rows[0].contains("EXECUTION"),
        "{table}"
    );
    assert_eq!(
        rows.len(),
        5,
        "a header and two steps, started and completed: {table}"
    );
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains("execution.step.") && r.contains(&first)),
        "{table}"
    );
    let last = listed.last().unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(
        stdout(&cli(&url, &["events", "--json", "--after", &last])),
        "",
        "nothing after the last event"
    );
    let refused = cli(&url, &["events", "--after", "yesterday"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("BAD_REQUEST (400)"));

    // Following from the last event: a new execution arrives live.
    let mut follower = Follower::spawn(
        &setup,
        &[
            "events", "--follow", "--json", "--after", &last, "--api", &url,
        ],
    );
    let second = start_executions(&engine, PIPELINE, 1).await.remove(0);
    let live = follower.until_completed(&setup, &second).await;
    assert_eq!(
        types(&live),
        history(&engine, &second).await,
        "every event of the second execution, once, in order"
    );

    // The API stops with the follower connected; an execution starts while it is down (its
    // first events are written, no worker runs it); the API comes back and the follower
    // reconnects from where it was.
    api.signal(SIGTERM);
    let status = expect_exit(
        &mut api,
        Duration::from_secs(15),
        "the api with a follower connected",
    )
    .await;
    assert_eq!(status.code(), Some(0), "{}", setup.log_tail("up", 20));
    let third = start_executions(&engine, PIPELINE, 1).await.remove(0);
    let mut api = up(&setup, &url).await;
    let resumed = follower.until_completed(&setup, &third).await;
    assert_eq!(
        types(&resumed),
        history(&engine, &third).await,
        "the third execution's events, none of the second's again"
    );
    assert!(
        setup.log_tail("follower", 20).contains("reconnect"),
        "{}",
        setup.log_tail("follower", 20)
    );

    // Ctrl-C ends it cleanly.
    follower.child.signal(SIGINT);
    let status = expect_exit(&mut follower.child, Duration::from_secs(10), "the follower").await;
    assert_eq!(status.code(), Some(0), "{}", setup.log_tail("follower", 20));
    api.signal(SIGTERM);
    expect_exit(&mut api, Duration::from_secs(15), "the api").await;
}
