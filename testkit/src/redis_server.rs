//! A private `redis-server` per test.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::Child;

/// How long a server may take to answer PING after being spawned.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(10);
/// Attempts at starting on a fresh port (another process may grab the port between
/// [`free_port`] and the server's `bind`).
const START_ATTEMPTS: usize = 5;
/// Attempts at restarting on the same port.
const RESTART_ATTEMPTS: usize = 3;
/// How much of `redis.log` is shown in a panic message.
const LOG_TAIL_BYTES: usize = 4000;

/// A free TCP port on 127.0.0.1: binds port 0, reads the port the OS chose, and releases it.
///
/// The port is free *now*; another process may take it before the caller binds it, so callers
/// that bind later must retry on `EADDRINUSE` (as [`RedisServer::start`] does).
///
/// # Panics
/// When no socket can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|err| panic!("cannot bind a socket on 127.0.0.1: {err}"));
    listener
        .local_addr()
        .expect("a bound socket has a local address")
        .port()
}

/// A `redis-server` child process on a private port and directory, owned by one test.
///
/// Dropping it SIGKILLs and reaps the process, then removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    /// `None` after [`RedisServer::kill`] / [`RedisServer::stop`] until the next restart.
    child: Option<Child>,
    pid: u32,
    port: u16,
    aof: bool,
    /// For a Redis Cluster node (`--cluster-enabled yes`, its `nodes.conf` in `dir`): the
    /// port of its cluster bus.
    cluster: Option<u16>,
    // Declared last: dropped after the process is gone.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server without persistence (no RDB snapshots, no AOF) and waits until it
    /// answers PING.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or it does not become ready within 10 s (the
    /// message includes the end of its log).
    pub fn start() -> RedisServer {
        RedisServer::start_inner(false)
    }

    /// Starts a server with an AOF fsynced on every write (`--appendonly yes --appendfsync
    /// always`), so that data survives [`RedisServer::kill`] + [`RedisServer::restart`].
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_with_aof() -> RedisServer {
        RedisServer::start_inner(true)
    }

    fn start_inner(aof: bool) -> RedisServer {
        RedisServer::start_node(aof, false)
    }

    /// Starts a server; with `cluster`, as a Redis Cluster node (no slots, no peers yet)
    /// whose cluster bus listens on another free port.
    pub(crate) fn start_node(aof: bool, cluster: bool) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("sluice-redis-")
            .tempdir()
            .unwrap_or_else(|err| panic!("cannot create a temporary directory: {err}"));
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let cluster = cluster.then(free_port);
            match launch(dir.path(), port, aof, cluster) {
                Ok(child) => {
                    let pid = child.pid();
                    return RedisServer {
                        child: Some(child),
                        pid,
                        port,
                        aof,
                        cluster,
                        dir,
                    };
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!(
            "redis-server did not start after {START_ATTEMPTS} attempts:\n{}\n--- redis.log (tail) ---\n{}",
            failures.join("\n"),
            log_tail(dir.path())
        );
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the current (or, after a kill/stop, the last) `redis-server` process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's directory (AOF, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port of its cluster bus, for a Redis Cluster node.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Child::is_running)
    }

    /// A client for [`RedisServer::url`].
    ///
    /// # Panics
    /// Never in practice (the URL is well-formed).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a well-formed redis URL")
    }

    /// A new synchronous connection.
    ///
    /// # Panics
    /// When the server does not accept the connection (e.g. it was killed).
    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", self.url()))
    }

    /// SIGKILLs the server (a crash: nothing is flushed beyond what is already fsynced) and
    /// reaps it. No-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Stops the server gracefully (SIGTERM, which lets Redis flush its AOF), waits up to 10 s,
    /// then SIGKILLs. No-op when it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(10));
        }
    }

    /// Starts the server again on the same port and directory (killing the running one
    /// first, if any) and waits until it answers PING. With AOF the data survives.
    ///
    /// # Panics
    /// When the server does not come back (the port was taken meanwhile, the AOF is corrupt…).
    pub fn restart(&mut self) {
        self.kill();
        let mut failures = Vec::new();
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            match launch(self.dir.path(), self.port, self.aof, self.cluster) {
                Ok(child) => {
                    self.pid = child.pid();
                    self.child = Some(child);
                    return;
                }
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "redis-server did not restart on port {}:\n{}\n--- redis.log (tail) ---\n{}",
            self.port,
            failures.join("\n"),
            log_tail(self.dir.path())
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // `Child`'s own drop kills and reaps; done explicitly so that it happens before the
        // directory is removed, whatever the field order.
        self.kill();
    }
}

/// Spawns `redis-server` and waits until *it* answers PING.
///
/// Returns `Err` (to retry, possibly on another port) when the process exits early; panics
/// when it is not installed or does not become ready in time.
fn launch(dir: &Path, port: u16, aof: bool, cluster: Option<u16>) -> Result<Child, String> {
    let log: PathBuf = dir.join("redis.log");
    let mut cmd = Command::new("redis-server");
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(if aof {
            &["--appendonly", "yes", "--appendfsync", "always"][..]
        } else {
            &["--appendonly", "no"][..]
        })
        .args(match cluster {
            Some(bus) => vec![
                "--cluster-enabled".to_string(),
                "yes".into(),
                "--cluster-port".into(),
                bus.to_string(),
                "--cluster-config-file".into(),
                "nodes.conf".into(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ],
            None => Vec::new(),
        })
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no", "--logfile"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let inner = match cmd.spawn() {
        Ok(inner) => inner,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            panic!("redis-server is not installed: apt-get install -y redis-server")
        }
        Err(err) => panic!("cannot start redis-server: {err}"),
    };
    // Wrapped at once so that the process is killed if we panic below.
    let mut child = Child::from_std(inner, "redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).expect("a well-formed redis URL");
    let until = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = child.try_wait() {
            return Err(format!("redis-server exited early ({status})"));
        }
        let last_error = match answers_as(&client, child.pid()) {
            Ok(()) => return Ok(child),
            Err(err) => err,
        };
        if Instant::now() >= until {
            drop(child);
            panic!(
                "redis-server on port {port} did not answer PING within {READY_DEADLINE:?} \
                 (last error: {last_error})\n--- redis.log (tail) ---\n{}",
                log_tail(dir)
            );
        }
        std::thread::sleep(READY_POLL);
    }
}

/// PINGs the server and checks that it is the process we spawned: if our server failed to
/// bind because another test's server got the port first, that other server answers PING.
fn answers_as(client: &redis::Client, pid: u32) -> Result<(), String> {
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let _: String = redis::cmd("PING")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    let theirs = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .map(str::trim)
        .unwrap_or_default();
    if theirs == pid.to_string() {
        Ok(())
    } else {
        Err(format!(
            "the port is served by another process (pid {theirs})"
        ))
    }
}

/// The last few KiB of `redis.log`, for panic messages.
fn log_tail(dir: &Path) -> String {
    match std::fs::read(dir.join("redis.log")) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(err) => format!("(no log: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::is_alive;

    fn set(conn: &mut redis::Connection, key: &str, value: &str) {
        let _: () = redis::cmd("SET").arg(key).arg(value).query(conn).unwrap();
    }

    fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(conn).unwrap()
    }

    #[test]
    fn set_and_get() {
        let server = RedisServer::start();
        assert!(server.url().ends_with(&format!(":{}", server.port())));
        assert_ne!(server.port(), 6379);
        let mut conn = server.conn();
        set(&mut conn, "k", "v");
        assert_eq!(get(&mut conn, "k").as_deref(), Some("v"));
        assert!(server.dir().join("redis.log").exists());
        let save: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query(&mut conn)
            .unwrap();
        assert_eq!(save, ["save", ""]);
        let aof: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query(&mut conn)
            .unwrap();
        assert_eq!(aof, ["appendonly", "no"]);
    }

    #[tokio::test]
    async fn usable_from_async_tests() {
        let server = RedisServer::start();
        let mut conn = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        assert_eq!(pong, "PONG");
    }

    #[test]
    fn kill_and_restart_with_aof_keeps_data() {
        let mut server = RedisServer::start_with_aof();
        let port = server.port();
        let first_pid = server.pid();
        set(&mut server.conn(), "durable", "yes");
        server.kill();
        assert!(!server.is_running());
        assert!(!is_alive(first_pid));
        server.restart();
        assert_eq!(server.port(), port);
        assert_ne!(server.pid(), first_pid);
        assert_eq!(get(&mut server.conn(), "durable").as_deref(), Some("yes"));
    }

    #[test]
    fn restart_without_aof_loses_data() {
        let mut server = RedisServer::start();
        set(&mut server.conn(), "k", "v");
        server.restart();
        assert_eq!(get(&mut server.conn(), "k"), None);
    }

    #[test]
    fn stop_then_restart() {
        let mut server = RedisServer::start_with_aof();
        set(&mut server.conn(), "k", "v");
        server.stop();
        assert!(server.client().get_connection().is_err());
        server.restart();
        assert_eq!(get(&mut server.conn(), "k").as_deref(), Some("v"));
    }

    #[test]
    fn two_servers_get_different_ports() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
        set(&mut a.conn(), "only-in-a", "1");
        assert_eq!(get(&mut b.conn(), "only-in-a"), None);
    }

    #[test]
    fn drop_leaves_no_process_and_no_directory() {
        let server = RedisServer::start();
        let pid = server.pid();
        let dir = server.dir().to_path_buf();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(server);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} survived"
        );
        assert!(!dir.exists());
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
