//! A real worker over a private Redis, for the end-to-end tests of this crate.

#![allow(dead_code, reason = "each test file uses part of the kit")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_core::control::{Action, Operator};
use sluice_core::execution::StartRequest;
use sluice_core::{Execution, SystemClock, pipeline};
use sluice_store::engine::{Acted, Engine};
use sluice_store::{StartOutcome, Store, StoreConfig};
use sluice_testkit::redis::Commands;
use sluice_testkit::{RedisServer, wait_until};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// A worker (and its engine) over a private Redis, stopped by [`Kit::shutdown`].
pub struct Kit {
    pub redis: RedisServer,
    pub engine: Engine,
    stop: CancellationToken,
    worker: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Kit {
    pub async fn new() -> Kit {
        Self::with_concurrency(4).await
    }

    /// A kit whose worker runs `concurrency` jobs at once.
    pub async fn with_concurrency(concurrency: usize) -> Kit {
        let redis = RedisServer::start();
        let store = Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap();
        let engine = Engine::new(store, Arc::new(SystemClock));
        let config = WorkerConfig {
            concurrency,
            lease_ttl: Duration::from_secs(3),
            kill_grace: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(engine.clone(), config).unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move { worker.run(async move { s.cancelled().await }).await });
        Kit { redis, engine, stop, worker: Some(handle), dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub async fn start(&self, toml: &str) -> String {
        let p = pipeline::parse_toml(toml).unwrap();
        let (version, _) = self.engine.store().put_pipeline(&p, self.engine.now()).await.unwrap();
        let req = StartRequest {
            pipeline: p.clone(),
            pipeline_version: version,
            input: json!({}),
            // One target per pipeline: executions of different pipelines run side by side.
            target: Some(format!("svc:{}", p.id)),
            idempotency_key: None,
        };
        match self.engine.store().start_execution(req, self.engine.now()).await.unwrap() {
            StartOutcome::Started(e) => e.id,
            other => panic!("{other:?}"),
        }
    }

    pub async fn get(&self, id: &str) -> Execution {
        self.engine.store().get_execution(id).await.unwrap().unwrap()
    }

    pub async fn wait_for(&self, id: &str, what: &str, f: impl Fn(&Execution) -> bool) -> Execution {
        wait_until(Duration::from_secs(30), what, || async {
            let e = self.get(id).await;
            f(&e).then_some(e)
        })
        .await
    }

    pub async fn act(&self, id: &str, action: Action) -> Acted {
        let op = Operator { subject: "alice".into(), reason: Some("test".into()) };
        self.engine.act(id, action, &op).await.unwrap()
    }

    /// Event types of the execution's own list, oldest first.
    pub fn events_of(&self, id: &str) -> Vec<String> {
        let mut conn = self.redis.conn();
        let raw: Vec<String> = conn.lrange(format!("{{sluice:0}}:ex:{id}:events"), 0, -1).unwrap();
        raw.iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["type"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(h) = self.worker.take() {
            h.await.unwrap();
        }
    }
}

/// Lines in a counter file (each run of a step appends one).
pub fn count(path: &str) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

pub fn applied(acted: Acted) -> Execution {
    match acted {
        Acted::Applied(e) => *e,
        other => panic!("expected the action to apply, got {other:?}"),
    }
}

