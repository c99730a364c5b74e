//! Child processes for tests: spawn with extra environment, send signals, never leak.
//!
//! [`Child`] wraps [`std::process::Child`] and SIGKILLs + reaps the process when dropped, so a
//! panicking test leaves no process behind. [`signal`] sends any signal to a pid; it is the one
//! place of this crate that needs `unsafe` (a call to `libc::kill`).

use std::ffi::OsStr;
use std::io;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

pub use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGSTOP, SIGTERM};

/// Converts a pid to the `pid_t` of a *single* process.
///
/// `kill(0, …)` would signal our own process group and `kill(-1, …)` every process we may
/// signal; neither must ever happen by accident, so anything that is not a positive `pid_t`
/// is refused loudly.
fn to_pid_t(pid: u32) -> libc::pid_t {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => p,
        _ => panic!("refusing to signal pid {pid}: not the pid of a single process"),
    }
}

/// Sends `sig` to process `pid`, reporting the OS error.
///
/// # Errors
/// `ESRCH` when no such process exists (it may already have exited), `EPERM` when it is not
/// ours, `EINVAL` for a bad signal number.
///
/// # Panics
/// When `pid` is 0 or does not fit a positive `pid_t`.
// `unsafe_code` is denied workspace-wide; this is the single exception in the crate. The
// standard library cannot send arbitrary signals, and `libc::kill` has no memory-safety
// preconditions: it takes two integers and only reports errors through its return value.
#[allow(unsafe_code)]
pub fn try_signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = to_pid_t(pid);
    // SAFETY: `kill(2)` reads no memory of ours; `pid` is a positive single-process pid.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` (e.g. [`SIGTERM`]) to process `pid`. A process that no longer exists is not an
/// error (it may have exited on its own, which is what most callers are waiting for).
///
/// # Panics
/// When the signal cannot be sent for another reason (permission, bad signal number), or
/// `pid` is 0 or does not fit a positive `pid_t`.
pub fn signal(pid: u32, sig: i32) {
    match try_signal(pid, sig) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
        Err(err) => panic!("cannot send signal {sig} to pid {pid}: {err}"),
    }
}

/// Whether a process with this pid exists and is not a zombie (Linux: reads `/proc/<pid>`).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name, which may itself
        // contain spaces and parentheses; hence the search from the right.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => !matches!(state, "Z" | "X" | "x"),
            None => true,
        },
        Err(_) => false,
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    name: String,
    status: Option<ExitStatus>,
}

impl Child {
    /// Spawns a configured command.
    ///
    /// # Panics
    /// When the process cannot be started, with the program name and the OS error.
    pub fn spawn(cmd: &mut Command) -> Child {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let inner = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{name}`: {err}"));
        Child {
            inner,
            name,
            status: None,
        }
    }

    /// Wraps an already spawned process; `name` is used in panic messages.
    pub fn from_std(inner: std::process::Child, name: impl Into<String>) -> Child {
        Child {
            inner,
            name: name.into(),
            status: None,
        }
    }

    /// Spawns `program args…` with the current environment plus `env`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn_with_env<I, A, E, K, V>(program: &str, args: I, env: E) -> Child
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Child::spawn(Command::new(program).args(args).envs(env))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Sends `sig` to the process unless it has already been reaped.
    ///
    /// # Panics
    /// As [`signal`].
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            signal(self.pid(), sig);
        }
    }

    /// The exit status if the process has exited (reaping it), without blocking.
    ///
    /// # Panics
    /// When `waitpid` fails.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .inner
                .try_wait()
                .unwrap_or_else(|err| panic!("cannot wait for `{}`: {err}", self.name));
        }
        self.status
    }

    /// Waits (blocking the thread) for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (without blocking the runtime) for the process to exit, at most `timeout`.
    pub async fn wait_timeout_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (blocking) for the process to exit.
    ///
    /// # Panics
    /// When `waitpid` fails.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = self
            .inner
            .wait()
            .unwrap_or_else(|err| panic!("cannot wait for `{}`: {err}", self.name));
        self.status = Some(status);
        status
    }

    /// SIGKILLs the process (if still running) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(SIGKILL);
        self.wait()
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(SIGTERM);
        match self.wait_timeout(grace) {
            Some(status) => status,
            None => self.kill(),
        }
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// The wrapped child, e.g. to take its piped stdout.
    pub fn inner_mut(&mut self) -> &mut std::process::Child {
        &mut self.inner
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn signal_terminates_and_env_is_passed() {
        let mut child = Child::spawn_with_env(
            "sh",
            ["-c", r#"[ "$TESTKIT_X" = yes ] && exec sleep 30"#],
            [("TESTKIT_X", "yes")],
        );
        assert!(child.is_running() && is_alive(child.pid()));
        let status = child.terminate(Duration::from_secs(5));
        assert_eq!(status.signal(), Some(SIGTERM), "{status:?}");
        assert!(!is_alive(child.pid()));
        // Signalling a reaped child is a no-op, and signalling a gone pid is not an error.
        child.signal(SIGTERM);
    }

    #[test]
    fn env_mismatch_exits_with_failure() {
        let mut child = Child::spawn_with_env(
            "sh",
            ["-c", r#"[ "$TESTKIT_X" = yes ]"#],
            [("TESTKIT_X", "no")],
        );
        let status = child
            .wait_timeout(Duration::from_secs(10))
            .expect("sh exits");
        assert_eq!(status.code(), Some(1));
    }

    #[test]
    fn drop_kills_and_reaps() {
        let child = Child::spawn(Command::new("sleep").arg("30"));
        let pid = child.pid();
        drop(child);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    #[should_panic(expected = "refusing to signal pid 0")]
    fn pid_zero_is_refused() {
        signal(0, SIGTERM);
    }
}
