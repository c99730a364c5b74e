//! The `command` step executor: runs one program for one attempt and reports what happened.
//!
//! [`run`] spawns `argv` with the caller's environment (less [`SERVICE_MANAGER_ENV`]) plus
//! [`CommandSpec::env`], [`CommandSpec::sluice_env`] and two files in a private temporary
//! directory: `SLUICE_CONTEXT` (the step's context as JSON, readable) and `SLUICE_OUTPUT` (a
//! path the program may write its JSON output to; it does not exist beforehand). [`outcome`] maps the
//! [`CommandResult`] to a [`sluice_core::Outcome`]. The module is pure tokio: it knows nothing
//! about Redis or the store; the caller renders `argv`, persists the outcome and owns retries.
//!
//! Invariants:
//! - **Nothing outlives a run.** The program is the leader of its own process group; when
//!   [`run`] returns, the whole group has been SIGKILLed (background processes a script left
//!   behind included), and the temporary directory is removed. If the `run` future is dropped
//!   mid-flight, a guard SIGKILLs the group and `kill_on_drop` kills the leader.
//! - **Bounded memory.** Standard output and error are read concurrently and only their last
//!   [`CommandSpec::tail_bytes`] bytes are kept, however much the program writes; the output
//!   file is read only up to [`MAX_OUTPUT_BYTES`].
//! - **Bounded time.** On timeout or cancellation the group gets SIGTERM, then SIGKILL after
//!   [`CommandSpec::kill_grace`]. Once the leader has exited, the pipes are drained for at most
//!   one more second (a process that escaped the group with `setsid` cannot hold `run` open).
//! - **Failures are classified** for the retry policy: a non-zero exit, a signal and a
//!   timeout are retryable; cancellation, an unusable output file and a program that cannot
//!   start are not.
//!
//! Signalling a group after its leader was reaped can only reach our own processes: Linux
//! does not reuse a pid while it names a live process group. The one theoretical exception,
//! an already empty group whose pid is recycled between the leader's exit and the final
//! SIGKILL (microseconds), would need pids to wrap around `pid_max` in between.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_core::Outcome;
use sluice_core::job::JobError;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::tail::Tail;

/// Default bound of the stdout/stderr tails.
pub const DEFAULT_TAIL_BYTES: usize = 4096;
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// Largest accepted `SLUICE_OUTPUT` file (1 MiB).
pub const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// Variable holding the path of the context file.
pub const CONTEXT_ENV: &str = "SLUICE_CONTEXT";
/// Variable holding the path the program may write its JSON output to.
pub const OUTPUT_ENV: &str = "SLUICE_OUTPUT";
/// Variables by which systemd talks to the worker process itself (its notification socket
/// and watchdog). A step's program is not the service: it does not inherit them, so it
/// cannot report readiness or feed the watchdog on the worker's behalf.
pub const SERVICE_MANAGER_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// How long the pipes may still be read once the whole process group has been killed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Read buffer size for stdout/stderr.
const READ_CHUNK: usize = 16 * 1024;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Program and arguments, already rendered. The program is looked up on `PATH` unless it
    /// contains a `/`.
    pub argv: Vec<String>,
    /// Extra environment variables (on top of the worker's own environment).
    pub env: BTreeMap<String, String>,
    /// Working directory; the worker's when `None`.
    pub cwd: Option<PathBuf>,
    /// Time limit; none when `None`.
    pub timeout: Option<Duration>,
    /// Written as JSON to the file named by `SLUICE_CONTEXT`.
    pub context: Value,
    /// `SLUICE_EXECUTION_ID`, `SLUICE_STEP`, `SLUICE_ATTEMPT`, `SLUICE_JOB_ID`, … supplied by
    /// the caller. Applied after `env`, so a user-supplied variable cannot shadow them;
    /// `SLUICE_CONTEXT` and `SLUICE_OUTPUT` are applied last of all.
    pub sluice_env: Vec<(String, String)>,
    /// Time between SIGTERM and SIGKILL on timeout or cancellation.
    pub kill_grace: Duration,
    /// Bound, in bytes, of each of the stdout and stderr tails.
    pub tail_bytes: usize,
}

impl CommandSpec {
    /// A spec for `argv` with no extra environment, no cwd, no timeout, a `null` context, the
    /// default kill grace (10 s) and tail bound (4096 bytes).
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout: None,
            context: Value::Null,
            sluice_env: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            tail_bytes: DEFAULT_TAIL_BYTES,
        }
    }

    /// The program name (`argv[0]`), or `""` when `argv` is empty.
    pub fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }
}

/// What happened to a run that started (or was cancelled before it could start).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// Exit code, when the program exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed the program, when one did.
    pub signal: Option<i32>,
    /// The last `tail_bytes` bytes of standard output, lossy UTF-8, at most `tail_bytes` long.
    pub stdout_tail: String,
    /// The last `tail_bytes` bytes of standard error, lossy UTF-8, at most `tail_bytes` long.
    pub stderr_tail: String,
    /// Bytes written to standard output in total.
    pub stdout_bytes: u64,
    /// Bytes written to standard error in total.
    pub stderr_bytes: u64,
    /// The parsed `SLUICE_OUTPUT` file, when the program exited on its own (any exit code)
    /// and wrote it, not blank.
    pub output: Option<Value>,
    /// Why the `SLUICE_OUTPUT` file could not be used (invalid JSON, too large…); after exit
    /// code 0 it makes the outcome a non-retryable failure.
    pub output_error: Option<String>,
    /// From spawn to exit.
    pub duration: Duration,
    /// The time limit that applied.
    pub timeout: Option<Duration>,
    /// The run was stopped because it exceeded `timeout`.
    pub timed_out: bool,
    /// The run was stopped (or never started) because the token was cancelled.
    pub cancelled: bool,
}

impl CommandResult {
    /// The result of a run cancelled before the program was spawned.
    fn cancelled_before_start(spec: &CommandSpec) -> Self {
        CommandResult {
            exit_code: None,
            signal: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            output: None,
            output_error: None,
            duration: Duration::ZERO,
            timeout: spec.timeout,
            timed_out: false,
            cancelled: true,
        }
    }
}

/// A run that could not start, or whose child could not be waited for.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `argv` is empty.
    #[error("cannot start a command: argv is empty")]
    EmptyArgv,
    /// The working directory is missing or not a directory.
    #[error("cannot start `{program}`: working directory `{}` {problem}", .cwd.display())]
    Cwd {
        /// `argv[0]`.
        program: String,
        /// The requested working directory.
        cwd: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The OS refused to start the program (not found, permission denied, not executable…).
    #[error("cannot start `{program}`: {}", os_message(.source))]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// The private run directory or the context file could not be created (disk full…).
    #[error("cannot prepare the run of `{program}`: {}", os_message(.source))]
    Prepare {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Waiting for the child failed (the group has been killed).
    #[error("lost track of `{program}`: {}", os_message(.source))]
    Wait {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        source: io::Error,
    },
}

impl CommandError {
    /// Whether another attempt may succeed: only for local resource trouble (`Prepare`,
    /// `Wait`); a program that cannot start will not start next time either.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CommandError::Prepare { .. } | CommandError::Wait { .. }
        )
    }

    /// The attempt's failure, e.g. "cannot start `foo`: No such file or directory"
    /// (non-retryable for everything but [`CommandError::is_retryable`] errors).
    pub fn into_job_error(self) -> JobError {
        let retryable = self.is_retryable();
        JobError {
            message: self.to_string(),
            retryable,
            ..JobError::default()
        }
    }
}

/// An OS error's message without the " (os error N)" suffix of its `Display`.
fn os_message(err: &io::Error) -> String {
    let text = err.to_string();
    match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

/// Runs `spec` to completion, timeout or cancellation.
///
/// # Errors
/// [`CommandError`] when the program cannot be started (see [`CommandError::into_job_error`]);
/// everything that happens after a successful spawn is reported in the [`CommandResult`].
pub async fn run(
    spec: CommandSpec,
    cancel: CancellationToken,
) -> Result<CommandResult, CommandError> {
    let program = spec.argv.first().cloned().ok_or(CommandError::EmptyArgv)?;
    if let Some(cwd) = &spec.cwd {
        check_cwd(&program, cwd).await?;
    }
    if cancel.is_cancelled() {
        return Ok(CommandResult::cancelled_before_start(&spec));
    }

    let prepare = |source| CommandError::Prepare {
        program: program.clone(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("sluice-run-")
        .tempdir()
        .map_err(prepare)?;
    let context_path = dir.path().join("context.json");
    let output_path = dir.path().join("output.json");
    let context = serde_json::to_vec(&spec.context).map_err(|e| prepare(io::Error::other(e)))?;
    tokio::fs::write(&context_path, context)
        .await
        .map_err(prepare)?;

    let mut cmd = Command::new(&program);
    cmd.args(&spec.argv[1..]);
    for name in SERVICE_MANAGER_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(&spec.env)
        .envs(spec.sluice_env.iter().map(|(k, v)| (k, v)))
        .env(CONTEXT_ENV, &context_path)
        .env(OUTPUT_ENV, &output_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let group = ProcessGroup::of(child.id());
    let guard = KillGroupOnDrop(group);
    tracing::debug!(program = %program, pid = ?child.id(), "command started");
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("stdout and stderr are piped");
    };

    let drain = CancellationToken::new();
    let supervised = async {
        let ended = supervise(&mut child, group, &spec, &program, &cancel).await;
        // The leader is gone: kill what is left of its group, so that nothing outlives the
        // run and the pipes reach end-of-file.
        if let Some(group) = group {
            group.signal(libc::SIGKILL);
        }
        drain.cancel();
        ended
    };
    let (ended, out, err) = tokio::join!(
        supervised,
        read_tail(stdout, spec.tail_bytes, &drain),
        read_tail(stderr, spec.tail_bytes, &drain),
    );
    let duration = started.elapsed();
    guard.disarm();
    let (status, stop) = ended.map_err(|source| CommandError::Wait {
        program: program.clone(),
        source,
    })?;

    // Read after any exit of the program's own: a gate probe's summary may come with a
    // non-zero exit code ([`outcome`] uses the output only after exit code 0).
    let (output, output_error) = if status.code().is_some() && stop == Stop::Exited {
        match read_output(&output_path).await {
            Ok(output) => (output, None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (None, None)
    };
    if let Err(err) = dir.close() {
        tracing::warn!(program = %program, "cannot remove the run directory: {err}");
    }

    let result = CommandResult {
        exit_code: status.code(),
        signal: status.signal(),
        stdout_tail: out.to_string_lossy(),
        stderr_tail: err.to_string_lossy(),
        stdout_bytes: out.total(),
        stderr_bytes: err.total(),
        output,
        output_error,
        duration,
        timeout: spec.timeout,
        timed_out: stop == Stop::TimedOut,
        cancelled: stop == Stop::Cancelled,
    };
    tracing::debug!(
        program = %program,
        exit_code = ?result.exit_code,
        signal = ?result.signal,
        timed_out = result.timed_out,
        cancelled = result.cancelled,
        duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        "command finished"
    );
    Ok(result)
}

/// Maps a result to the attempt's outcome.
///
/// - cancelled → non-retryable `cancelled`;
/// - timed out → retryable `timed out after 10s`;
/// - killed by a signal → retryable `killed by signal N`;
/// - exit code N ≠ 0 → retryable `exit code N`;
/// - exit code 0 with an unusable output file → non-retryable, the output error;
/// - exit code 0 → `Completed(output)` (`null` without output).
///
/// Failures carry the exit code and the stderr tail (when not empty).
pub fn outcome(result: &CommandResult) -> Outcome {
    let failed = |message: String, retryable: bool| {
        Outcome::Failed(JobError {
            message,
            retryable,
            exit_code: result.exit_code,
            stderr_tail: (!result.stderr_tail.is_empty()).then(|| result.stderr_tail.clone()),
        })
    };
    if result.cancelled {
        return failed("cancelled".into(), false);
    }
    if result.timed_out {
        let message = match result.timeout {
            Some(limit) => format!("timed out after {}", sluice_core::duration::format(limit)),
            None => "timed out".into(),
        };
        return failed(message, true);
    }
    if let Some(signal) = result.signal {
        return failed(format!("killed by signal {signal}"), true);
    }
    match result.exit_code {
        Some(0) => match &result.output_error {
            Some(why) => failed(why.clone(), false),
            None => Outcome::Completed(result.output.clone().unwrap_or(Value::Null)),
        },
        Some(code) => failed(format!("exit code {code}"), true),
        None => failed("exited without an exit code or a signal".into(), true),
    }
}

/// Why the leader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// On its own.
    Exited,
    /// Stopped by us after the timeout.
    TimedOut,
    /// Stopped by us after cancellation.
    Cancelled,
}

/// Waits for the leader to exit; on timeout or cancellation, SIGTERMs the group, and SIGKILLs
/// it after the grace.
async fn supervise(
    child: &mut Child,
    group: Option<ProcessGroup>,
    spec: &CommandSpec,
    program: &str,
    cancel: &CancellationToken,
) -> io::Result<(ExitStatus, Stop)> {
    let limit = async {
        match spec.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        biased;
        status = child.wait() => return Ok((status?, Stop::Exited)),
        () = cancel.cancelled() => Stop::Cancelled,
        () = limit => Stop::TimedOut,
    };
    tracing::info!(program = %program, reason = ?stop, "stopping command: SIGTERM");
    if let Some(group) = group {
        group.signal(libc::SIGTERM);
    }
    if let Ok(status) = tokio::time::timeout(spec.kill_grace, child.wait()).await {
        return Ok((status?, stop));
    }
    tracing::warn!(
        program = %program,
        grace = %sluice_core::duration::format(spec.kill_grace),
        "command ignored SIGTERM: SIGKILL"
    );
    match group {
        Some(group) => group.signal(libc::SIGKILL),
        None => child.start_kill()?,
    }
    Ok((child.wait().await?, stop))
}

/// Reads `reader` to end-of-file keeping the last `cap` bytes. Once `drain` is cancelled
/// (the group is dead) reading goes on for at most [`DRAIN_GRACE`].
async fn read_tail<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
    drain: &CancellationToken,
) -> Tail {
    let mut tail = Tail::new(cap);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut deadline = None;
    loop {
        let read = match deadline {
            None => tokio::select! {
                biased;
                read = reader.read(&mut buf) => read,
                () = drain.cancelled() => {
                    deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    continue;
                }
            },
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => tail.push(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!("cannot read the command's output: {err}");
                break;
            }
        }
    }
    tail
}

/// Checks the working directory before spawning, so that a missing directory is not
/// reported as a missing program (both are `ENOENT` from `spawn`).
async fn check_cwd(program: &str, cwd: &Path) -> Result<(), CommandError> {
    let problem = match tokio::fs::metadata(cwd).await {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "is not a directory".to_string(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(err) => format!("is not usable: {}", os_message(&err)),
    };
    Err(CommandError::Cwd {
        program: program.to_string(),
        cwd: cwd.to_path_buf(),
        problem,
    })
}

/// Reads and parses the `SLUICE_OUTPUT` file: `Ok(None)` when it is absent or blank.
async fn read_output(path: &Path) -> Result<Option<Value>, String> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read SLUICE_OUTPUT: {}", os_message(&err))),
    };
    // Checked before opening: opening a FIFO would block.
    if !meta.is_file() {
        return Err("SLUICE_OUTPUT is not a regular file".into());
    }
    let too_large = |len: u64| format!("SLUICE_OUTPUT is larger than 1 MiB ({len} bytes)");
    if meta.len() > MAX_OUTPUT_BYTES {
        return Err(too_large(meta.len()));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|err| format!("cannot read SLUICE_OUTPUT: {}", os_message(&err)))?;
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|err| format!("cannot read SLUICE_OUTPUT: {}", os_message(&err)))?;
    if bytes.len() as u64 > MAX_OUTPUT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| format!("SLUICE_OUTPUT is not valid JSON: {err}"))
}

/// The process group led by a child spawned with `process_group(0)`.
///
/// Only constructible from a positive pid: `kill(0, …)` would signal the worker's own group
/// and `kill(-1, …)` every process the worker may signal.
#[derive(Debug, Clone, Copy)]
struct ProcessGroup(libc::pid_t);

impl ProcessGroup {
    fn of(pid: Option<u32>) -> Option<Self> {
        pid.and_then(|pid| libc::pid_t::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .map(ProcessGroup)
    }

    /// Sends `sig` to every process of the group; a group that no longer exists is fine.
    // `unsafe_code` is denied workspace-wide. The standard library and tokio cannot signal a
    // process group, and `libc::kill` has no memory-safety preconditions: it takes two
    // integers and reports errors through its return value.
    #[allow(unsafe_code)]
    fn signal(self, sig: libc::c_int) {
        // SAFETY: `kill(2)` reads no memory of ours; `-self.0` names one group (self.0 > 0).
        let rc = unsafe { libc::kill(-self.0, sig) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(
                    pgid = self.0,
                    sig,
                    "cannot signal the command's process group: {err}"
                );
            }
        }
    }
}

/// SIGKILLs the group when the `run` future is dropped before the group was reaped.
struct KillGroupOnDrop(Option<ProcessGroup>);

impl KillGroupOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SIGTERM: i32 = libc::SIGTERM;
    const SIGKILL: i32 = libc::SIGKILL;

    fn sh(script: &str) -> CommandSpec {
        let mut spec = CommandSpec::new(["sh", "-c", script]);
        spec.kill_grace = Duration::from_secs(5);
        spec
    }

    async fn run_ok(spec: CommandSpec) -> CommandResult {
        run(spec, CancellationToken::new())
            .await
            .expect("command starts")
    }

    /// Whether `pid` exists and is not a zombie.
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| !matches!(state, "Z" | "X" | "x")),
            Err(_) => false,
        }
    }

    /// Polls until `pid` is gone: signal delivery is asynchronous, so a process signalled an
    /// instant ago may still be on its way out.
    async fn assert_dies(pid: u32) {
        let until = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < until, "process {pid} survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until `path` exists and returns its content.
    async fn wait_for_file(path: &Path) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                return text;
            }
            assert!(Instant::now() < until, "{} never appeared", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pids(text: &str) -> Vec<u32> {
        text.split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .collect()
    }

    #[tokio::test]
    async fn exit_zero_with_output_json() {
        let spec = sh(r#"test ! -e "$SLUICE_OUTPUT" && printf '{"n": 1}' > "$SLUICE_OUTPUT""#);
        let result = run_ok(spec).await;
        assert_eq!(result.exit_code, Some(0), "{result:?}");
        assert_eq!(result.output, Some(json!({"n": 1})));
        assert_eq!(outcome(&result), Outcome::Completed(json!({"n": 1})));
    }

    #[tokio::test]
    async fn exit_zero_without_output_completes_with_null() {
        let result = run_ok(sh("echo hello; : > \"$SLUICE_OUTPUT\"")).await;
        assert_eq!(result.stdout_tail, "hello\n");
        assert_eq!(result.output, None);
        assert_eq!(outcome(&result), Outcome::Completed(Value::Null));
    }

    #[tokio::test]
    async fn context_file_is_readable_and_the_run_directory_is_removed() {
        let mut spec = sh(r#"cat "$SLUICE_CONTEXT" > "$SLUICE_OUTPUT"; dirname "$SLUICE_CONTEXT""#);
        spec.context = json!({"params": {"a": [1, 2]}, "steps": {}});
        let result = run_ok(spec).await;
        assert_eq!(
            result.output,
            Some(json!({"params": {"a": [1, 2]}, "steps": {}}))
        );
        let dir = PathBuf::from(result.stdout_tail.trim_end());
        assert!(dir.is_absolute(), "{dir:?}");
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied() {
        let cwd = tempfile::tempdir().unwrap();
        let mut spec = sh(r#"printf '%s|%s' "$GREETING" "$(pwd -P)""#);
        spec.env.insert("GREETING".into(), "hello world".into());
        spec.cwd = Some(cwd.path().to_path_buf());
        let result = run_ok(spec).await;
        let expected = format!(
            "hello world|{}",
            cwd.path().canonicalize().unwrap().display()
        );
        assert_eq!(result.stdout_tail, expected);
    }

    #[tokio::test]
    async fn sluice_variables_are_visible_and_win_over_user_env() {
        let mut spec = sh(
            r#"printf '%s %s %s %s' "$SLUICE_EXECUTION_ID" "$SLUICE_STEP" "$SLUICE_ATTEMPT" "$SLUICE_JOB_ID""#,
        );
        spec.env.insert("SLUICE_STEP".into(), "spoofed".into());
        spec.sluice_env = vec![
            ("SLUICE_EXECUTION_ID".into(), "exec_1".into()),
            ("SLUICE_STEP".into(), "build".into()),
            ("SLUICE_ATTEMPT".into(), "2".into()),
            ("SLUICE_JOB_ID".into(), "job_0_x".into()),
        ];
        let result = run_ok(spec).await;
        assert_eq!(result.stdout_tail, "exec_1 build 2 job_0_x");
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_retryable_failure_with_stderr_tail() {
        let result = run_ok(sh("echo oops >&2; exit 3")).await;
        assert_eq!((result.exit_code, result.signal), (Some(3), None));
        assert_eq!(result.stderr_tail, "oops\n");
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert_eq!(err.message, "exit code 3");
        assert!(err.retryable);
        assert_eq!(err.exit_code, Some(3));
        assert_eq!(err.stderr_tail.as_deref(), Some("oops\n"));
    }

    #[tokio::test]
    async fn tails_stay_bounded_for_a_megabyte_of_stderr() {
        let mut spec = sh(r"head -c 1048576 /dev/zero | tr '\0' a >&2; printf 'THE-END' >&2");
        spec.tail_bytes = 100;
        let result = run_ok(spec).await;
        assert_eq!(result.exit_code, Some(0));
        assert!(
            result.stderr_tail.len() <= 100,
            "{}",
            result.stderr_tail.len()
        );
        assert!(
            result.stderr_tail.ends_with("aaaTHE-END"),
            "{:?}",
            result.stderr_tail
        );
        assert_eq!(result.stderr_bytes, 1_048_576 + 7);
        assert_eq!(result.stdout_bytes, 0);
    }

    #[tokio::test]
    async fn timeout_terminates_the_whole_tree() {
        let mut spec = sh("sleep 30 & echo $!; wait");
        spec.timeout = Some(Duration::from_millis(500));
        let result = run_ok(spec).await;
        assert!(result.timed_out && !result.cancelled, "{result:?}");
        assert_eq!(result.signal, Some(SIGTERM));
        // SIGTERM suffices: no need to wait for the 5 s grace.
        assert!(
            result.duration < Duration::from_secs(4),
            "{:?}",
            result.duration
        );
        for pid in pids(&result.stdout_tail) {
            assert_dies(pid).await;
        }
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert_eq!(err.message, "timed out after 500ms");
        assert!(err.retryable);
    }

    #[tokio::test]
    async fn a_program_ignoring_sigterm_is_killed_after_the_grace() {
        let mut spec = sh(r#"trap "" TERM; sleep 30"#);
        spec.timeout = Some(Duration::from_millis(300));
        spec.kill_grace = Duration::from_millis(500);
        let result = run_ok(spec).await;
        assert!(result.timed_out, "{result:?}");
        assert_eq!(result.signal, Some(SIGKILL));
        assert!(
            result.duration >= Duration::from_millis(800),
            "{:?}",
            result.duration
        );
        assert!(
            result.duration < Duration::from_secs(5),
            "{:?}",
            result.duration
        );
    }

    #[tokio::test]
    async fn cancellation_stops_the_run_and_is_not_retryable() {
        let marker_dir = tempfile::tempdir().unwrap();
        let marker = marker_dir.path().join("started");
        let mut spec = sh(r#"sleep 30 & echo $! > "$M.tmp"; mv "$M.tmp" "$M"; wait"#);
        spec.env.insert("M".into(), marker.display().to_string());
        let cancel = CancellationToken::new();
        let (result, sleeper) = tokio::join!(run(spec, cancel.clone()), async {
            let text = wait_for_file(&marker).await;
            cancel.cancel();
            pids(&text)
        });
        let result = result.unwrap();
        assert!(result.cancelled && !result.timed_out, "{result:?}");
        assert!(
            result.duration < Duration::from_secs(4),
            "{:?}",
            result.duration
        );
        for pid in sleeper {
            assert_dies(pid).await;
        }
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert_eq!(err.message, "cancelled");
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn a_token_cancelled_beforehand_starts_nothing() {
        let marker_dir = tempfile::tempdir().unwrap();
        let marker = marker_dir.path().join("ran");
        let mut spec = sh(r#"touch "$M""#);
        spec.env.insert("M".into(), marker.display().to_string());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let result = run(spec, cancel).await.unwrap();
        assert!(result.cancelled);
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let marker_dir = tempfile::tempdir().unwrap();
        let marker = marker_dir.path().join("pids");
        let mut spec =
            sh(r#"echo $$ > "$M.tmp"; sleep 30 & echo $! >> "$M.tmp"; mv "$M.tmp" "$M"; wait"#);
        spec.env.insert("M".into(), marker.display().to_string());
        let pids = tokio::select! {
            result = run(spec, CancellationToken::new()) => panic!("finished early: {result:?}"),
            text = wait_for_file(&marker) => pids(&text),
        };
        assert_eq!(pids.len(), 2);
        for pid in pids {
            assert_dies(pid).await;
        }
    }

    #[tokio::test]
    async fn background_processes_do_not_outlive_a_successful_run() {
        let result = run_ok(sh("sleep 30 & echo $!")).await;
        assert_eq!(result.exit_code, Some(0));
        assert!(
            result.duration < Duration::from_secs(4),
            "{:?}",
            result.duration
        );
        for pid in pids(&result.stdout_tail) {
            assert_dies(pid).await;
        }
    }

    #[tokio::test]
    async fn invalid_output_json_is_a_terminal_failure() {
        let result = run_ok(sh(r#"printf 'not json' > "$SLUICE_OUTPUT""#)).await;
        assert_eq!(result.exit_code, Some(0));
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert!(
            err.message.starts_with("SLUICE_OUTPUT is not valid JSON: "),
            "{}",
            err.message
        );
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn oversized_output_is_a_terminal_failure() {
        let result = run_ok(sh(
            r#"head -c 1048577 /dev/zero | tr '\0' 1 > "$SLUICE_OUTPUT""#,
        ))
        .await;
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert!(
            err.message
                .starts_with("SLUICE_OUTPUT is larger than 1 MiB"),
            "{}",
            err.message
        );
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn killed_by_a_signal_is_retryable() {
        let result = run_ok(sh("kill -KILL $$")).await;
        assert_eq!((result.exit_code, result.signal), (None, Some(SIGKILL)));
        let Outcome::Failed(err) = outcome(&result) else {
            panic!("{result:?}")
        };
        assert_eq!(err.message, "killed by signal 9");
        assert!(err.retryable);
    }

    #[tokio::test]
    async fn a_missing_program_cannot_start() {
        let spec = CommandSpec::new(["sluice-no-such-program", "--flag"]);
        let err = run(spec, CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        let job_error = err.into_job_error();
        assert_eq!(
            job_error.message,
            "cannot start `sluice-no-such-program`: No such file or directory"
        );
        assert!(!job_error.retryable);
    }

    #[tokio::test]
    async fn a_missing_cwd_is_reported_as_such() {
        let mut spec = sh("true");
        spec.cwd = Some(PathBuf::from("/nonexistent/sluice-cwd"));
        let err = run(spec, CancellationToken::new()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start `sh`: working directory `/nonexistent/sluice-cwd` does not exist"
        );
        assert!(!err.into_job_error().retryable);
    }

    #[tokio::test]
    async fn a_non_executable_program_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script.sh");
        std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
        let spec = CommandSpec::new([script.display().to_string()]);
        let err = run(spec, CancellationToken::new()).await.unwrap_err();
        assert!(err.to_string().ends_with(": Permission denied"), "{err}");
    }

    #[tokio::test]
    async fn an_empty_argv_is_refused() {
        let err = run(
            CommandSpec::new(Vec::<String>::new()),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::EmptyArgv));
    }
}
