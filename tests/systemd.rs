//! systemd: the shipped units pass `systemd-analyze verify` and say what operations rely on,
//! and the real binary speaks the notification protocol to a socket standing in for the
//! service manager: `READY=1` once a role serves, `WATCHDOG=1` while its loop runs (also
//! while it retries an unreachable Redis), `STATUS=` saying whether Redis answers it
//! (not ready while Redis is down, ready again once it is back), `STOPPING=1` on SIGTERM,
//! then exit 0.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Setup, executions, start_executions, wait_all_terminal};
use sluice_core::ExecutionStatus;
use sluice_testkit::free_port;
use sluice_testkit::process::{Child, SIGTERM};

const UNITS: [&str; 3] = ["sluice-api.service", "sluice-scheduler.service", "sluice-worker@.service"];

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

// --- the units ----------------------------------------------------------------------------

/// `systemd-analyze`, when installed (CI installs it: see `.ci/run`).
fn systemd_analyze() -> Option<PathBuf> {
    let ok = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("systemd-analyze"))
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        println!("SKIPPED every_unit_passes_systemd_analyze_verify: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    // The units name /usr/bin/sluice, which verify checks is executable: the copies name the
    // binary under test instead.
    let dir = tempfile::tempdir().expect("temp dir");
    for unit in UNITS {
        let text = std::fs::read_to_string(units_dir().join(unit)).expect("read unit");
        assert!(text.contains("/usr/bin/sluice "), "{unit} does not run /usr/bin/sluice");
        std::fs::write(dir.path().join(unit), text.replace("/usr/bin/sluice ", &format!("{} ", env!("CARGO_BIN_EXE_sluice"))))
            .expect("write unit");
    }
    // The template is checked as such and through two instances (a number, a queue name).
    let checked = ["sluice-api.service", "sluice-scheduler.service", "sluice-worker@.service", "sluice-worker@1.service", "sluice-worker@deploy.service"];
    for unit in checked {
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(dir.path().join(unit))
            .output()
            .expect("run systemd-analyze verify");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // verify reports unknown keys and bad values as warnings with exit code 0: any line
        // about our units fails the test.
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("sluice")).collect();
        assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify {unit}: {:?}\n{text}", out.status);
    }
}

/// The `[Service]` settings of a unit: every value of each key, in order.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(units_dir().join(unit)).expect("read unit");
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]" {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{unit}: not a setting: {line}"));
            out.entry(key.to_string()).or_default().push(value.to_string());
        }
    }
    out
}

fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, unit: &str, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{unit}: expected one {key}=, found {other:?}"),
    }
}

#[test]
fn units_are_notify_services_with_watchdog_validation_reload_and_hardening() {
    let defaults = sluice_worker::WorkerConfig::default();
    for unit in UNITS {
        let s = service_settings(unit);
        let role = unit.trim_end_matches(".service").trim_start_matches("sluice-").trim_end_matches('@');
        assert_eq!(one(&s, unit, "Type"), "notify");
        assert_eq!(one(&s, unit, "NotifyAccess"), "main");
        let watchdog = sluice_core::duration::parse(one(&s, unit, "WatchdogSec")).expect("WatchdogSec is a duration");
        assert!(watchdog >= Duration::from_secs(10), "{unit}: WatchdogSec {watchdog:?} is too tight for a busy host");
        assert_eq!(one(&s, unit, "Restart"), "on-failure");
        assert_eq!(one(&s, unit, "ExecStartPre"), "/usr/bin/sluice validate --config /etc/sluice/sluice.toml");
        assert_eq!(one(&s, unit, "ExecStart"), format!("/usr/bin/sluice {role} --config /etc/sluice/sluice.toml"));
        assert_eq!(one(&s, unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
        assert!(s["EnvironmentFile"].contains(&"-/etc/sluice/sluice.env".to_string()), "{unit}: EnvironmentFile");
        // SIGTERM to the main process only: running commands are left to the drain.
        assert_eq!(one(&s, unit, "KillMode"), "mixed");
        let stop = sluice_core::duration::parse(one(&s, unit, "TimeoutStopSec")).expect("TimeoutStopSec is a duration");
        assert!(stop > defaults.shutdown_timeout, "{unit}: TimeoutStopSec {stop:?} <= shutdown_timeout");
        for (key, value) in [
            ("User", "sluice"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
        ] {
            assert_eq!(one(&s, unit, key), value, "{unit}: {key}");
        }
        let state = one(&s, unit, "StateDirectory");
        assert!(state.split_whitespace().any(|d| d == "sluice"), "{unit}: StateDirectory {state}");
        assert!(one(&s, unit, "WorkingDirectory").starts_with("/var/lib/sluice"), "{unit}: WorkingDirectory");
    }
    let worker = service_settings("sluice-worker@.service");
    // Each instance has its own settings file and working directory.
    assert!(worker["EnvironmentFile"].contains(&"-/etc/sluice/worker-%i.env".to_string()));
    assert_eq!(one(&worker, "worker", "WorkingDirectory"), "/var/lib/sluice/worker-%i");
}

// --- the notification protocol ------------------------------------------------------------

/// A datagram socket standing in for the service manager; a thread collects what arrives.
struct Manager {
    _dir: tempfile::TempDir,
    path: PathBuf,
    rx: mpsc::Receiver<String>,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        // One message may hold several assignments, one per line.
                        for line in String::from_utf8_lossy(&buf[..n]).lines() {
                            if tx.send(line.to_string()).is_err() {
                                return;
                            }
                        }
                    }
                    // Timeouts let the thread notice that the test is over.
                    Err(_) => {
                        if tx.send(String::new()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Manager { _dir: dir, path, rx }
    }

    fn env(&self) -> String {
        self.path.to_str().expect("a UTF-8 socket path").to_string()
    }

    /// Waits for `message`; returns the messages that came before it.
    fn expect(&self, message: &str, deadline: Duration, log: &dyn Fn() -> String) -> Vec<String> {
        let until = Instant::now() + deadline;
        let mut before = Vec::new();
        while Instant::now() < until {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) if m == message => return before,
                Ok(m) if m.is_empty() => {}
                Ok(m) => before.push(m),
                Err(_) => {}
            }
        }
        panic!("no {message} within {deadline:?}; got {before:?}\nlog:\n{}", log());
    }

    /// Every message of the next `window`.
    fn during(&self, window: Duration) -> Vec<String> {
        let until = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok(m) = self.rx.recv_timeout(left.min(Duration::from_millis(100)))
                && !m.is_empty()
            {
                got.push(m);
            }
        }
        got
    }
}

/// The status a worker or scheduler reports while Redis does not answer it.
const STATUS_NOT_READY: &str = "STATUS=Not ready: Redis does not answer; retrying with backoff";
/// The status it reports once Redis answers again.
const STATUS_READY: &str = "STATUS=Ready: Redis answers";

/// The last lines of a process's log, for failure messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn count(messages: &[String], what: &str) -> usize {
    messages.iter().filter(|m| *m == what).count()
}

/// Starts `sluice <role>` with the manager's socket and a watchdog of `watchdog_usec`; returns
/// the process and its log file.
fn spawn_supervised(setup: &Setup, role: &str, manager: &Manager, watchdog_usec: u64) -> (Child, PathBuf) {
    let socket = manager.env();
    let usec = watchdog_usec.to_string();
    let child = setup.spawn_env(role, role, &[("NOTIFY_SOCKET", socket.as_str()), ("WATCHDOG_USEC", usec.as_str())]);
    (child, setup.log(role))
}

/// SIGTERM: `STOPPING=1` comes, then the process exits 0.
fn stop_gracefully(child: &mut Child, manager: &Manager, log: &dyn Fn() -> String) {
    child.signal(SIGTERM);
    manager.expect("STOPPING=1", Duration::from_secs(10), log);
    let status = child.wait_timeout(Duration::from_secs(20)).expect("the process exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}\n{}", log());
}

/// One command step that reports whether it sees the service manager's variables.
const ENV_PROBE: &str = r#"
id = "env-probe"
[[steps]]
name = "probe"
kind = "command"
run = ["sh", "-c", "printf '{\"notify\":\"%s\",\"watchdog\":\"%s\"}' \"${NOTIFY_SOCKET-unset}\" \"${WATCHDOG_USEC-unset}\" > \"$SLUICE_OUTPUT\""]
"#;

#[test]
fn worker_is_ready_then_feeds_the_watchdog_and_reports_its_readiness_through_an_outage() {
    let mut setup = Setup::new("concurrency = 2");
    let manager = Manager::new();
    // A 600 ms watchdog: keep-alives every 300 ms, a heartbeat round every 150 ms.
    let (mut worker, log_file) = spawn_supervised(&setup, "worker", &manager, 600_000);
    let log = || tail(&log_file);

    let before = manager.expect("READY=1", Duration::from_secs(20), &log);
    assert_eq!(count(&before, "WATCHDOG=1"), 0, "keep-alives before READY=1: {before:?}");
    let up = manager.during(Duration::from_secs(2));
    assert!(count(&up, "WATCHDOG=1") >= 3, "too few keep-alives in 2 s while Redis answers: {up:?}\n{}", log());

    // The worker runs jobs meanwhile, and its commands do not inherit the variables.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let engine = setup.engine().await;
        let ids = start_executions(&engine, ENV_PROBE, 1).await;
        wait_all_terminal(&engine, &ids, Duration::from_secs(20)).await;
        let e = &executions(&engine, &ids).await[0];
        assert_eq!(e.status, ExecutionStatus::Completed, "{:?}", e.failure);
        assert_eq!(e.steps[0].output, Some(serde_json::json!({ "notify": "unset", "watchdog": "unset" })));
    });
    drop(rt);

    // Redis down: the worker's loops keep retrying, so the watchdog is still fed (a restart
    // would not bring Redis back), and its status says it is not ready.
    setup.redis.kill();
    manager.expect(STATUS_NOT_READY, Duration::from_secs(10), &log);
    let down = manager.during(Duration::from_secs(2));
    assert!(count(&down, "WATCHDOG=1") >= 3, "keep-alives stopped while the worker retries Redis: {down:?}\n{}", log());
    assert!(log().contains("redis is unavailable; retrying with backoff"), "the worker did not log the outage:\n{}", log());

    setup.redis.restart();
    manager.expect(STATUS_READY, Duration::from_secs(20), &log);
    let back = manager.during(Duration::from_secs(1));
    assert!(count(&back, "WATCHDOG=1") >= 2, "keep-alives did not go on steadily: {back:?}");

    stop_gracefully(&mut worker, &manager, &log);
}

#[test]
fn scheduler_is_ready_after_a_tick_and_reports_not_ready_without_redis() {
    let mut setup = Setup::new("");
    let manager = Manager::new();
    // A 1 s watchdog: keep-alives every 500 ms; the test config ticks every 200 ms.
    let (mut scheduler, log_file) = spawn_supervised(&setup, "scheduler", &manager, 1_000_000);
    let log = || tail(&log_file);

    manager.expect("READY=1", Duration::from_secs(20), &log);
    let up = manager.during(Duration::from_secs(2));
    assert!(count(&up, "WATCHDOG=1") >= 2, "too few keep-alives in 2 s while Redis answers: {up:?}\n{}", log());

    setup.redis.kill();
    manager.expect(STATUS_NOT_READY, Duration::from_secs(10), &log);
    let down = manager.during(Duration::from_secs(2));
    assert!(count(&down, "WATCHDOG=1") >= 2, "keep-alives stopped while the scheduler retries Redis: {down:?}\n{}", log());

    stop_gracefully(&mut scheduler, &manager, &log);
}

#[test]
fn api_is_ready_once_it_answers_and_its_watchdog_does_not_follow_redis() {
    let mut setup = Setup::new("");
    let port = free_port();
    setup.append(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n"));
    let manager = Manager::new();
    let (mut api, log_file) = spawn_supervised(&setup, "api", &manager, 1_000_000);
    let log = || tail(&log_file);

    manager.expect("READY=1", Duration::from_secs(20), &log);
    // Ready means serving: the very next request is answered.
    let url = format!("http://127.0.0.1:{port}");
    let probe = common::sluice(&["health", "--api", &url], &[]);
    assert_eq!(probe.status.code(), Some(0), "{}{}", common::stdout(&probe), common::stderr(&probe));

    // Redis down: the API is not ready, yet it is alive and keeps feeding its watchdog.
    setup.redis.kill();
    let down = manager.during(Duration::from_secs(2));
    assert!(count(&down, "WATCHDOG=1") >= 2, "the API stopped its keep-alives without Redis: {down:?}\n{}", log());

    stop_gracefully(&mut api, &manager, &log);
}
