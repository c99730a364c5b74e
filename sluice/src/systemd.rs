//! The service manager's notification protocol (`sd_notify`), for `Type=notify` units.
//!
//! When systemd starts a service with `Type=notify` it names a datagram socket in
//! `NOTIFY_SOCKET`; with `WatchdogSec=` it also sets `WATCHDOG_USEC` (and `WATCHDOG_PID`).
//! A role tells it:
//! - `READY=1` once it serves: the API listens; a worker or scheduler has done its first
//!   round against Redis (its [`Pulse`] beat once);
//! - `STATUS=…` (shown by `systemctl status`) when a worker's or scheduler's readiness
//!   changes: Redis stopped answering its rounds, or answers again;
//! - `STOPPING=1` when the first SIGTERM/SIGINT starts the graceful shutdown;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, **only when the role's loop ran a round since
//!   the previous keep-alive** (its pulse's rounds moved), whether Redis answered that round
//!   or not. A worker or scheduler whose loop is stuck stops feeding the watchdog, and
//!   systemd restarts it (`Restart=on-failure`); one that keeps retrying an unreachable or
//!   hung Redis with backoff is not restarted (that would not bring Redis back): it reports
//!   not ready instead and carries on when Redis returns. The API has no such loop: its
//!   keep-alives come from a task of its runtime, so they prove the process is not wedged,
//!   while Redis outages show on `/readyz`.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) nothing is sent and no task is started.
//! `WATCHDOG_PID` naming another process means the watchdog is not this process's business.
//!
//! Socket names: a path, or `@name` for a Linux abstract socket (std's `SocketAddrExt`
//! addresses those without `unsafe`). Other forms (`vsock:`) are not supported: a warning
//! says so and nothing is sent. A message that cannot be sent is logged, never fatal: the
//! service manager then decides (a start timeout, a watchdog restart).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sluice_store::Pulse;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the service manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file.
    Path(std::path::PathBuf),
    /// A Linux abstract socket name (the text after `@`).
    Abstract(Vec<u8>),
}

/// How often a worker's or scheduler's readiness is looked at for `STATUS=`.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// The status of a worker or scheduler whose rounds Redis answers.
const STATUS_READY: &str = "STATUS=Ready: Redis answers";
/// The status of a worker or scheduler whose rounds Redis does not answer.
const STATUS_NOT_READY: &str = "STATUS=Not ready: Redis does not answer; retrying with backoff";

/// This process's link to the service manager, read once from the environment at start.
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    target: Option<Target>,
    /// `WATCHDOG_USEC`, when it applies to this process.
    watchdog: Option<Duration>,
}

impl Systemd {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok(), std::process::id())
    }

    /// From variables looked up by `var`, for the process `pid`.
    fn from_vars(var: impl Fn(&str) -> Option<String>, pid: u32) -> Self {
        let target = var("NOTIFY_SOCKET").filter(|s| !s.is_empty()).and_then(|s| match parse_target(&s) {
            Ok(t) => Some(t),
            Err(why) => {
                tracing::warn!(notify_socket = %s, "{why}; not notifying the service manager");
                None
            }
        });
        let for_us = var("WATCHDOG_PID").is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Self { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often a role's loop must make progress for every keep-alive to find some: a
    /// quarter of the watchdog timeout (keep-alives go every half of it, so each interval
    /// between two of them holds at least one round, with room for a slow one).
    pub fn liveness_interval(&self) -> Option<Duration> {
        self.watchdog.map(|t| t / 4)
    }

    /// Sends `state` (newline-separated `KEY=value` assignments). Failures are logged.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        if let Err(e) = send(target, state) {
            tracing::warn!(error = %e, state, "cannot notify the service manager");
        }
    }

    /// Starts telling the service manager about the role: `READY=1` when `ready` completes
    /// (unless `shutdown` comes first), then `STATUS=` when `pulse`'s readiness changes,
    /// `WATCHDOG=1` while `pulse`'s rounds move (every time when `pulse` is `None`), and
    /// `STOPPING=1` when `shutdown` is cancelled; keep-alives go on while the role drains. Stop it with [`Supervision::finish`] once the role returned.
    pub fn supervise(
        &self,
        ready: impl Future<Output = ()> + Send + 'static,
        pulse: Option<Pulse>,
        shutdown: &CancellationToken,
    ) -> Supervision {
        let done = CancellationToken::new();
        if !self.is_enabled() {
            return Supervision { done, task: None };
        }
        let task = tokio::spawn(supervise(self.clone(), ready, pulse, shutdown.clone(), done.clone()));
        Supervision { done, task: Some(task) }
    }
}

/// The task started by [`Systemd::supervise`].
#[derive(Debug)]
pub struct Supervision {
    done: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Supervision {
    /// Stops the task and waits for it.
    pub async fn finish(self) {
        self.done.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

async fn supervise(
    sd: Systemd,
    ready: impl Future<Output = ()>,
    pulse: Option<Pulse>,
    shutdown: CancellationToken,
    done: CancellationToken,
) {
    // Biased selects: when the role stops right after a signal, `shutdown` and `done` are
    // both complete by the time this task runs, and STOPPING=1 must still go out first.
    tokio::select! {
        biased;
        () = ready => sd.notify("READY=1"),
        () = shutdown.cancelled() => {}
        () = done.cancelled() => return,
    }
    let every = sd.watchdog.map(|timeout| timeout / 2);
    if every.is_none() && pulse.is_none() {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => sd.notify("STOPPING=1"),
            () = done.cancelled() => {}
        }
        return;
    }
    let poll = every.map_or(STATUS_POLL, |e| e.min(STATUS_POLL));
    let mut next_feed = every.map(|e| Instant::now() + e);
    let mut seen = pulse.as_ref().map(Pulse::rounds);
    // READY=1 went out after the pulse's first beat: the role was ready then.
    let mut shown_ready = true;
    let mut fed = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if !stopping => {
                sd.notify("STOPPING=1");
                stopping = true;
                continue;
            }
            () = done.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        if let Some(pulse) = &pulse
            && pulse.is_ready() != shown_ready
        {
            shown_ready = !shown_ready;
            sd.notify(if shown_ready {
                STATUS_READY
            } else {
                STATUS_NOT_READY
            });
        }
        let (Some(every), Some(due)) = (every, next_feed) else {
            continue;
        };
        if Instant::now() < due {
            continue;
        }
        next_feed = Some(due + every);
        let now = pulse.as_ref().map(Pulse::rounds);
        let progress = pulse.is_none() || now != seen;
        seen = now;
        if progress {
            sd.notify("WATCHDOG=1");
            if !fed {
                tracing::info!("the main loop runs again: feeding the watchdog");
            }
        } else if fed {
            tracing::warn!(
                interval_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                "the main loop ran no round in the last interval: the watchdog is not fed, \
                 and the service manager restarts this process if that lasts"
            );
        }
        fed = progress;
    }
}

/// The socket named by `NOTIFY_SOCKET`.
fn parse_target(value: &str) -> Result<Target, String> {
    if let Some(name) = value.strip_prefix('@') {
        if name.is_empty() {
            return Err("NOTIFY_SOCKET `@` names no abstract socket".into());
        }
        return Ok(Target::Abstract(name.as_bytes().to_vec()));
    }
    if value.starts_with('/') {
        return Ok(Target::Path(value.into()));
    }
    Err(format!("NOTIFY_SOCKET `{value}` is neither a socket path nor an @abstract name (other forms are not supported)"))
}

fn send(target: &Target, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let addr = match target {
        Target::Path(path) => SocketAddr::from_pathname(path)?,
        Target::Abstract(name) => abstract_addr(name)?,
    };
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other(format!("sent {sent} of {} bytes", state.len())));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract socket names exist on Linux only"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)], pid: u32) -> Systemd {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Systemd::from_vars(|name| vars.get(name).cloned(), pid)
    }

    #[test]
    fn without_notify_socket_nothing_is_enabled_not_even_the_watchdog() {
        let sd = from(&[("WATCHDOG_USEC", "30000000")], 7);
        assert!(!sd.is_enabled());
        assert_eq!(sd.liveness_interval(), None);
    }

    #[test]
    fn the_watchdog_applies_unless_watchdog_pid_names_another_process() {
        let vars = [("NOTIFY_SOCKET", "/run/systemd/notify"), ("WATCHDOG_USEC", "30000000")];
        let sd = from(&vars, 7);
        assert_eq!(sd.target, Some(Target::Path("/run/systemd/notify".into())));
        assert_eq!(sd.liveness_interval(), Some(Duration::from_millis(7_500)));
        let ours = from(&[vars[0], vars[1], ("WATCHDOG_PID", "7")], 7);
        assert_eq!(ours.watchdog, Some(Duration::from_secs(30)));
        let theirs = from(&[vars[0], vars[1], ("WATCHDOG_PID", "8")], 7);
        assert_eq!(theirs.watchdog, None);
        assert!(theirs.is_enabled(), "READY and STOPPING still go to the service manager");
        let garbage = from(&[vars[0], ("WATCHDOG_USEC", "soon")], 7);
        assert_eq!(garbage.watchdog, None);
    }

    #[test]
    fn socket_names_are_paths_or_abstract_names() {
        assert_eq!(parse_target("@sd-notify"), Ok(Target::Abstract(b"sd-notify".to_vec())));
        assert!(parse_target("@").is_err());
        assert!(parse_target("vsock:2:1234").is_err());
        assert!(parse_target("relative/notify").is_err());
        assert!(!from(&[("NOTIFY_SOCKET", "vsock:2:1234")], 1).is_enabled());
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let sd = from(&[("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))], 1);
        sd.notify("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("sluice-test-{}-{}", std::process::id(), nanos());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind an abstract socket");
        let sd = from(&[("NOTIFY_SOCKET", &format!("@{name}"))], 1);
        sd.notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    /// A part that differs between test runs sharing the abstract namespace.
    fn nanos() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
    }

    #[tokio::test]
    async fn stopping_goes_out_even_when_the_role_ends_right_after_the_signal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let sd = from(&[("NOTIFY_SOCKET", path.to_str().expect("utf-8 path")), ("WATCHDOG_USEC", "60000000")], 1);
        let pulse = Pulse::new();
        pulse.beat();
        let shutdown = CancellationToken::new();
        let ready = pulse.clone();
        let supervision = sd.supervise(async move { ready.first_beat().await }, Some(pulse), &shutdown);
        // The signal and the end of the role, before the task ever runs.
        shutdown.cancel();
        supervision.finish().await;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["READY=1", "STOPPING=1"]);
    }

    /// Every message on `listener` until `within` passed, in order.
    async fn received(listener: &UnixDatagram, within: Duration) -> Vec<String> {
        let until = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 128];
        while Instant::now() < until {
            match listener.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        got
    }

    #[tokio::test]
    async fn rounds_that_redis_misses_feed_the_watchdog_and_show_as_not_ready() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        // A 200 ms watchdog: keep-alives every 100 ms.
        let sd = from(
            &[
                ("NOTIFY_SOCKET", path.to_str().expect("utf-8 path")),
                ("WATCHDOG_USEC", "200000"),
            ],
            1,
        );
        let pulse = Pulse::new();
        pulse.beat();
        let shutdown = CancellationToken::new();
        let ready = pulse.clone();
        let supervision = sd.supervise(
            async move { ready.first_beat().await },
            Some(pulse.clone()),
            &shutdown,
        );
        let rounds = {
            let pulse = pulse.clone();
            tokio::spawn(async move {
                loop {
                    pulse.miss();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let down = received(&listener, Duration::from_millis(600)).await;
        assert_eq!(
            down.first().map(String::as_str),
            Some("READY=1"),
            "{down:?}"
        );
        assert!(down.iter().any(|m| m == STATUS_NOT_READY), "{down:?}");
        assert!(
            count(&down, "WATCHDOG=1") >= 3,
            "a loop retrying Redis is not stuck: {down:?}"
        );
        rounds.abort();
        pulse.beat();
        let back = received(&listener, Duration::from_millis(300)).await;
        assert!(back.iter().any(|m| m == STATUS_READY), "{back:?}");
        // No round at all: the loop is stuck, the watchdog is not fed.
        let _ = received(&listener, Duration::from_millis(150)).await;
        let stuck = received(&listener, Duration::from_millis(400)).await;
        assert_eq!(count(&stuck, "WATCHDOG=1"), 0, "{stuck:?}");
        supervision.finish().await;
    }

    fn count(messages: &[String], what: &str) -> usize {
        messages.iter().filter(|m| *m == what).count()
    }

    #[test]
    fn a_missing_socket_is_logged_not_fatal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sd = from(&[("NOTIFY_SOCKET", dir.path().join("absent").to_str().expect("utf-8 path"))], 1);
        sd.notify("READY=1");
        assert!(send(sd.target.as_ref().expect("a target"), "READY=1").is_err());
    }
}
