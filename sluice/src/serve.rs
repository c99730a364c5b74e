//! The long-running roles: `worker`, `scheduler`, `api`, and `up` (all three in one
//! process, with a private `redis-server` when none answers).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_api::Auth;
use sluice_core::SystemClock;
use sluice_store::engine::Engine;
use sluice_store::{Metrics, Pulse, Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::systemd::Systemd;

/// Connects to Redis, retrying with backoff until `shutdown` (a service must survive Redis
/// starting after it). Connected means ready too: a Redis that accepts connections but does
/// not answer yet (still loading its AOF after a restart, or gone again) is waited for in
/// the same way.
pub async fn connect(c: &Config, shutdown: &CancellationToken) -> anyhow::Result<Engine> {
    connect_recording(c, shutdown, Arc::default()).await
}

/// As [`connect`], the store recording into `metrics`.
async fn connect_recording(
    c: &Config,
    shutdown: &CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Engine> {
    let mut delay = Duration::from_millis(200);
    let mut warned = false;
    loop {
        let store = match Store::connect(config::store_config(c)).await {
            Ok(store) => {
                let store = store.with_metrics(metrics.clone());
                store.ready().await.map(|()| store)
            }
            Err(e) => Err(e),
        };
        match store {
            Ok(store) => return Ok(Engine::new(store, Arc::new(SystemClock))),
            Err(e) => {
                if !warned {
                    tracing::warn!(redis.url = %c.redis.url, error = %e, "cannot reach redis; retrying with backoff");
                    warned = true;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down before redis became reachable"),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Applies every pipeline file of the configured directory, then the schedules the files
/// define (see [`load_schedules`]); problems are reported, files with problems are skipped.
pub async fn load_pipelines(engine: &Engine, c: &Config, base: &Path) -> anyhow::Result<()> {
    let Some(dir) = &c.pipelines.dir else { return Ok(()) };
    let dir = if dir.is_absolute() { dir.clone() } else { base.join(dir) };
    apply_pipeline_files(engine, &dir).await?;
    load_schedules(engine, &dir).await
}

/// [`load_pipelines`] as a service starts: a Redis that goes away between [`connect`] and
/// the end of the load (a restart, a failover) is waited for with the same backoff as
/// `connect` does, instead of ending the process; a problem with the files themselves is
/// an error.
pub async fn load_pipelines_at_start(engine: &Engine, c: &Config, base: &Path, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match load_pipelines(engine, c, base).await {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<StoreError>().is_some_and(|s| matches!(s, StoreError::Redis(_))) => {
                tracing::warn!(error = %e, "cannot apply the pipeline files: redis is unavailable; retrying with backoff");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down before the pipeline files were applied"),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Writes the schedules the files of `dir` define (`[[schedules]]` in pipeline files and in
/// `schedules.toml`), by name: new ones are created, changed ones rewritten (keeping their
/// id), and the schedules files defined before and define no longer are deleted, unless
/// some file has problems (its schedules cannot be told apart from removed ones then).
async fn load_schedules(engine: &Engine, dir: &Path) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    let mut complete = true;
    let mut origin = std::collections::HashMap::new();
    for (path, parsed) in crate::files::read_schedule_dir(dir)? {
        match parsed {
            Ok(list) => {
                for spec in list {
                    origin.insert(spec.name.clone(), path.clone());
                    specs.push(spec);
                }
            }
            Err(problems) => {
                complete = false;
                for p in problems {
                    tracing::error!(file = %path.display(), field = %p.field, "{}", p.message);
                }
            }
        }
    }
    let count = specs.len();
    for (name, p) in engine.sync_file_schedules(specs, complete).await? {
        let file = origin.get(&name).map(|f| f.display().to_string()).unwrap_or_default();
        tracing::error!(file = %file, schedule = %name, field = %p.field, "{}", p.message);
    }
    tracing::info!(schedules = count, dir = %dir.display(), "schedules from files applied");
    Ok(())
}

/// Applies every pipeline file of `dir`.
async fn apply_pipeline_files(engine: &Engine, dir: &Path) -> anyhow::Result<()> {
    for (path, parsed) in crate::files::read_pipeline_dir(dir)? {
        match parsed {
            Ok(p) => {
                let (version, changed) = engine.store().put_pipeline(&p, engine.now()).await?;
                tracing::info!(pipeline = %p.id, version, changed, file = %path.display(), "pipeline loaded");
            }
            Err(problems) => {
                for p in problems {
                    tracing::error!(file = %path.display(), field = %p.field, "{}", p.message);
                }
            }
        }
    }
    Ok(())
}

/// What every long-running role gets from `main`: the root shutdown token and the link to
/// the service manager.
#[derive(Debug)]
pub struct Lifecycle {
    /// Cancelled by the first SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// `sd_notify`, when systemd started the process.
    pub systemd: Systemd,
}

/// A future completing at `pulse`'s first beat (the role's first round against Redis).
fn first_beat(pulse: &Pulse) -> impl Future<Output = ()> + Send + 'static {
    let pulse = pulse.clone();
    async move { pulse.first_beat().await }
}

/// Runs a worker or scheduler `role` once Redis answers; its metrics endpoint (when
/// configured) serves from the start, with readiness from `pulse` (not ready until the
/// role's first round succeeds), until the role has returned.
async fn with_endpoint<F, Fut>(
    c: &Config,
    pulse: Pulse,
    shutdown: &CancellationToken,
    role: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Engine) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let metrics: Arc<Metrics> = Arc::default();
    let endpoint = crate::metrics::Endpoint::bind(c)
        .await?
        .serve(metrics.clone(), pulse);
    let result = async { role(connect_recording(c, shutdown, metrics).await?).await }.await;
    endpoint.stopped().await;
    result
}

/// `sluice worker`: ready once it registered itself or leased against Redis; the watchdog
/// is fed while its heartbeat or lease loop runs, and its readiness follows whether Redis
/// answers them.
pub async fn worker(c: Config, life: Lifecycle) -> anyhow::Result<()> {
    let Lifecycle { shutdown, systemd } = life;
    let mut wc = config::worker_config(&c);
    wc.liveness_interval = systemd.liveness_interval();
    let pulse = wc.pulse.clone();
    let supervision = systemd.supervise(first_beat(&pulse), Some(pulse.clone()), &shutdown);
    let stop = shutdown.clone();
    let result = with_endpoint(&c, pulse, &shutdown, async move |engine| {
        let worker = sluice_worker::Worker::new(engine, wc)?;
        worker.run(async move { stop.cancelled().await }).await;
        Ok(())
    })
    .await;
    supervision.finish().await;
    result
}

/// `sluice scheduler`: ready after its first tick; the watchdog is fed while it ticks, and
/// its readiness follows whether Redis answers the ticks.
pub async fn scheduler(c: Config, life: Lifecycle) -> anyhow::Result<()> {
    let Lifecycle { shutdown, systemd } = life;
    let sc = config::scheduler_config(&c);
    let pulse = sc.pulse.clone();
    warn_slow_tick(&c, &systemd);
    let supervision = systemd.supervise(first_beat(&pulse), Some(pulse.clone()), &shutdown);
    let stop = shutdown.clone();
    let result = with_endpoint(&c, pulse, &shutdown, async move |engine| {
        sluice_scheduler::run(engine, sc, async move { stop.cancelled().await }).await;
        Ok(())
    })
    .await;
    supervision.finish().await;
    result
}

/// Warns when scheduler ticks are too far apart for the watchdog to see one per keep-alive.
fn warn_slow_tick(c: &Config, systemd: &Systemd) {
    if let Some(every) = systemd.liveness_interval()
        && c.scheduler.tick > every
    {
        tracing::warn!(
            tick_ms = u64::try_from(c.scheduler.tick.as_millis()).unwrap_or(u64::MAX),
            needed_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            "scheduler.tick is longer than a quarter of the watchdog timeout (WatchdogSec): \
             keep-alives may be skipped; shorten the tick or raise WatchdogSec"
        );
    }
}

/// The API's authentication from `c`, checked before anything starts; warns when it is off.
fn api_auth(c: &Config) -> anyhow::Result<Auth> {
    let auth = config::api_auth(c)?;
    if !auth.is_enabled() {
        tracing::warn!(
            api.listen = %c.api.listen,
            "authentication is disabled (auth.disabled = true): the API is open to anyone on this machine"
        );
    }
    Ok(auth)
}

/// Binds `api.listen`. Without authentication the bound address must be loopback (a check
/// after name resolution, behind the one on the configured text).
async fn bind_api(c: &Config, auth: &Auth) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(&c.api.listen).await.with_context(|| format!("cannot listen on {}", c.api.listen))?;
    let local = listener.local_addr()?;
    if !auth.is_enabled() && !local.ip().is_loopback() {
        anyhow::bail!("auth.disabled = true is only allowed on a loopback address, and api.listen `{}` is {local}", c.api.listen);
    }
    Ok(listener)
}

/// `sluice api`: ready once it listens; the watchdog is fed while its runtime runs (Redis
/// outages show on `/readyz`, and a restart would not cure them).
pub async fn api(c: Config, base: PathBuf, life: Lifecycle) -> anyhow::Result<()> {
    let Lifecycle { shutdown, systemd } = life;
    let auth = api_auth(&c)?;
    let listening = CancellationToken::new();
    let supervision = systemd.supervise(listening.clone().cancelled_owned(), None, &shutdown);
    let result: anyhow::Result<()> = async {
        let engine = connect(&c, &shutdown).await?;
        load_pipelines_at_start(&engine, &c, &base, &shutdown).await?;
        crate::reload::apply_pipelines_with(&engine);
        let listener = bind_api(&c, &auth).await?;
        tracing::info!(listen = %c.api.listen, "api listening");
        listening.cancel();
        let state = sluice_api::AppState::new(engine).with_auth(auth);
        sluice_api::serve(listener, state, async move { shutdown.cancelled().await }).await?;
        Ok(())
    }
    .await;
    supervision.finish().await;
    result
}

/// `sluice up`: API, scheduler and worker in one process; ready once the API listens and
/// the worker did its first round; the watchdog follows the worker.
pub async fn up(mut c: Config, base: PathBuf, life: Lifecycle) -> anyhow::Result<()> {
    let Lifecycle { shutdown, systemd } = life;
    let auth = api_auth(&c)?;
    let mut wc = config::worker_config(&c);
    wc.liveness_interval = systemd.liveness_interval();
    let pulse = wc.pulse.clone();
    let listening = CancellationToken::new();
    let ready = {
        let listening = listening.clone();
        let worker_ready = first_beat(&pulse);
        async move {
            listening.cancelled().await;
            worker_ready.await;
        }
    };
    let supervision = systemd.supervise(ready, Some(pulse), &shutdown);
    let result: anyhow::Result<()> = async {
        let _redis = crate::private_redis::ensure(&mut c, &base).await?;
        let engine = connect(&c, &shutdown).await?;
        load_pipelines_at_start(&engine, &c, &base, &shutdown).await?;
        crate::reload::apply_pipelines_with(&engine);
        let listener = bind_api(&c, &auth).await?;
        tracing::info!(listen = %c.api.listen, "sluice is up: api, scheduler and worker in one process");
        listening.cancel();
        let api = {
            let s = shutdown.clone();
            let state = sluice_api::AppState::new(engine.clone()).with_auth(auth);
            tokio::spawn(async move { sluice_api::serve(listener, state, async move { s.cancelled().await }).await })
        };
        let scheduler = {
            let s = shutdown.clone();
            let sc = config::scheduler_config(&c);
            let engine = engine.clone();
            tokio::spawn(async move { sluice_scheduler::run(engine, sc, async move { s.cancelled().await }).await })
        };
        let worker = sluice_worker::Worker::new(engine, wc)?;
        let s = shutdown.clone();
        worker.run(async move { s.cancelled().await }).await;
        shutdown.cancel();
        let _ = scheduler.await;
        api.await??;
        Ok(())
    }
    .await;
    supervision.finish().await;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sluice_testkit::RedisServer;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    /// How many whole RESP commands (arrays of bulk strings) `buf` holds.
    fn commands_in(buf: &[u8]) -> usize {
        fn line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
            let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
            Some((n, end + 2))
        }
        let (mut count, mut at) = (0, 0);
        while at < buf.len() {
            let Some((items, mut next)) = line(buf, at) else { break };
            for _ in 0..items {
                let Some((len, body)) = line(buf, next) else { return count };
                next = body + usize::try_from(len).unwrap_or(0) + 2;
            }
            if next > buf.len() {
                break;
            }
            count += 1;
            at = next;
        }
        count
    }

    /// A Redis restarted from its AOF, as clients see it: for `loading`, connections are
    /// accepted and every command is answered `-LOADING …`; after that, connections are
    /// passed through to `redis`.
    async fn restarting_redis(redis: &RedisServer, loading: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("address"));
        let backend = format!("127.0.0.1:{}", redis.port());
        let began = Instant::now();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backend = backend.clone();
                tokio::spawn(async move {
                    if began.elapsed() >= loading {
                        let mut server = TcpStream::connect(&backend).await.expect("backend");
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = client.read(&mut chunk).await {
                        buf.extend_from_slice(&chunk[..n]);
                        let whole = commands_in(&buf);
                        if whole > 0 {
                            buf.clear();
                        }
                        for _ in 0..whole {
                            let reply = b"-LOADING Redis is loading the dataset in memory\r\n";
                            if client.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn connect_waits_for_a_redis_still_loading_its_data() {
        let redis = RedisServer::start();
        let loading = Duration::from_millis(1500);
        let mut c = Config::default();
        c.redis.url = restarting_redis(&redis, loading).await;
        let began = Instant::now();
        let shutdown = CancellationToken::new();
        let engine = tokio::time::timeout(Duration::from_secs(20), connect(&c, &shutdown))
            .await
            .expect("connect returns once Redis has loaded")
            .expect("connect waits for Redis to load instead of failing");
        assert!(began.elapsed() >= loading, "connected while Redis was still loading");
        engine.store().ready().await.expect("the engine works");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_files_applied_at_start_wait_for_a_redis_gone_after_connect() {
        let mut redis = RedisServer::start_with_aof();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("hello.toml"),
            "id = \"hello\"\n[[steps]]\nname = \"one\"\nkind = \"noop\"\n",
        )
        .expect("write a pipeline file");
        let mut c = Config::default();
        c.redis.url = redis.url();
        c.pipelines.dir = Some(dir.path().to_path_buf());
        let shutdown = CancellationToken::new();
        let engine = connect(&c, &shutdown).await.expect("connect");

        // Redis goes away after the connection and before the files are applied.
        redis.kill();
        let load = {
            let (engine, c, base, shutdown) = (engine.clone(), c.clone(), dir.path().to_path_buf(), shutdown.clone());
            tokio::spawn(async move { load_pipelines_at_start(&engine, &c, &base, &shutdown).await })
        };
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!load.is_finished(), "the load gave up while Redis was away");
        tokio::task::block_in_place(|| redis.restart());
        tokio::time::timeout(Duration::from_secs(30), load)
            .await
            .expect("the load ends once Redis is back")
            .expect("the load task")
            .expect("the files are applied");
        let stored = engine.store().get_pipeline("hello").await.expect("read the pipeline");
        assert!(stored.is_some(), "the pipeline file was applied");
    }

    #[tokio::test]
    async fn a_missing_pipeline_directory_is_an_error_not_a_wait() {
        let redis = RedisServer::start();
        let mut c = Config::default();
        c.redis.url = redis.url();
        c.pipelines.dir = Some(PathBuf::from("/nonexistent/sluice-pipelines"));
        let shutdown = CancellationToken::new();
        let engine = connect(&c, &shutdown).await.expect("connect");
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            load_pipelines_at_start(&engine, &c, Path::new("."), &shutdown),
        )
        .await
        .expect("a file problem is reported at once");
        assert!(result.is_err());
    }
}
