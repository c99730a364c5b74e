//! Test kit for sluice: private `redis-server` processes, process helpers and deadline-bounded
//! waiting.
//!
//! # The isolation rule
//!
//! Tests never talk to a Redis they did not start. In particular they must not depend on the
//! server that may (or may not) listen on `127.0.0.1:6379` of the developer's machine or the
//! CI host: its data is shared with other programs, other test binaries run concurrently, and
//! a test that passes only because a server happens to be there is a test that lies.
//!
//! Instead every test (or every test that needs one) starts its own [`RedisServer`]: a
//! `redis-server` child process on a free port of `127.0.0.1`, with its own temporary
//! directory, no RDB snapshots, and (optionally) an fsync-always AOF so that a
//! [`RedisServer::kill`] + [`RedisServer::restart`] cycle behaves like a crash and recovery.
//! Dropping the handle kills and reaps the process and removes its directory, so a test leaves
//! neither processes nor files behind, even when it panics.
//!
//! ```no_run
//! use sluice_testkit::RedisServer;
//!
//! let server = RedisServer::start();
//! let mut conn = server.conn();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut conn).unwrap();
//! // hand `server.url()` to the code under test…
//! ```
//!
//! [`RedisCluster`] does the same for a Redis Cluster of `N` masters (slots split evenly,
//! nodes joined by `CLUSTER MEET`), and [`TestRedis`] picks one or the other from
//! `SLUICE_TEST_REDIS` (`cluster` for a 3-master cluster), so that a suite can run in both
//! modes.
//!
//! Other helpers:
//! - [`free_port`] for services the test starts itself;
//! - [`process`]: spawn a child with extra environment and signal it ([`process::signal`],
//!   [`process::Child`]), for testing shutdown paths;
//! - [`metrics::Scrape`]: a Prometheus text exposition, parsed strictly;
//! - [`TlsServer`]: an axum router served over HTTPS under a self-signed certificate;
//! - [`wait_until`] / [`wait_until_sync`]: poll a condition until it holds or a deadline
//!   passes. A last resort for effects that have no event to await; never a fixed sleep.
//!
//! `redis-server` must be on `PATH` (`apt-get install -y redis-server`); [`RedisCluster`]
//! needs Redis 7.0 or newer (`--cluster-port`, `CLUSTER ADDSLOTSRANGE`).

pub mod metrics;
pub mod process;
mod redis_cluster;
mod redis_server;
mod test_redis;
mod tls;
mod wait;

/// The Redis client the kit uses, so tests can read raw keys with the same version.
pub use redis;
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, free_port};
pub use test_redis::{CLUSTER_MASTERS, CLUSTER_SHARDS, MODE_VAR, RawConn, TestRedis};
pub use tls::TlsServer;
pub use wait::{wait_until, wait_until_sync};
