//! `sluice up` on a machine without a running Redis: start a private `redis-server` with
//! its data (AOF on) under `./.sluice/`, stopped when sluice stops.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;

/// The private server; stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // redis-server saves and exits on SIGTERM; `kill` is SIGKILL, so ask politely first.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use sluice_store::ping as answers;

/// `(host, port)` of a `redis://[user:pass@]host[:port][/db]` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => Some((h.to_string(), p.parse().ok()?)),
        _ => Some((hostport.to_string(), 6379)),
    }
}

/// Makes sure a Redis answers at `redis.url`; starts a private one if it does not and
/// `redis-server` is installed.
///
/// # Errors
/// No Redis answers and none can be started (the message says how to install one).
pub async fn ensure(c: &mut Config, _base: &Path) -> anyhow::Result<Option<PrivateRedis>> {
    if answers(&c.redis.url).await {
        return Ok(None);
    }
    if c.redis.cluster {
        anyhow::bail!("no Redis Cluster node answers at redis.url `{}`; sluice up starts a private Redis only without redis.cluster", c.redis.url);
    }
    let (host, port) = host_port(&c.redis.url)
        .with_context(|| format!("redis.url `{}` is not a redis:// URL", c.redis.url))?;
    if !["127.0.0.1", "localhost", "::1", "[::1]"].contains(&host.as_str()) {
        anyhow::bail!("no Redis answers at {} (a remote address; sluice up only starts a local one)", c.redis.url);
    }
    let installed = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
    if !installed {
        anyhow::bail!(
            "no Redis answers at {} and redis-server is not installed.\n\
             Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`)\n\
             or point redis.url (SLUICE_REDIS__URL) at a running Redis.",
            c.redis.url
        );
    }
    let dir = std::env::current_dir()?.join(".sluice");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = Command::new("redis-server");
    // redis-server would answer the service manager itself (`supervised auto`): it is not
    // the service, sluice is.
    for name in sluice_worker::command::SERVICE_MANAGER_ENV {
        command.env_remove(name);
    }
    let child = command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes"])
        .arg("--dir")
        .arg(&dir)
        .args(["--daemonize", "no", "--logfile", "redis.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server")?;
    let guard = PrivateRedis { child };
    let local = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if answers(&local).await {
            tracing::warn!(
                redis.url = %local,
                dir = %dir.display(),
                "no Redis was running: started a private redis-server (AOF on); it stops with sluice"
            );
            c.redis.url = local;
            return Ok(Some(guard));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("started redis-server but it does not answer; see {}", dir.join("redis.log").display())
}
