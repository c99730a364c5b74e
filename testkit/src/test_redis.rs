//! The Redis a test suite runs against, chosen by `SLUICE_TEST_REDIS`: one server (the
//! default) or a Redis Cluster of [`CLUSTER_MASTERS`] masters (`SLUICE_TEST_REDIS=cluster`).

use redis::{Cmd, ConnectionLike, RedisResult, Value};

use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;

/// The environment variable choosing the mode of [`TestRedis::from_env`].
pub const MODE_VAR: &str = "SLUICE_TEST_REDIS";
/// Masters of the cluster [`TestRedis::from_env`] starts in cluster mode.
pub const CLUSTER_MASTERS: usize = 3;
/// Shards a deployment under test uses in cluster mode (so they spread over the masters).
pub const CLUSTER_SHARDS: u32 = 8;

/// One private server or one private cluster.
#[derive(Debug)]
pub enum TestRedis {
    /// A single `redis-server`.
    Single(RedisServer),
    /// A Redis Cluster.
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Whether `SLUICE_TEST_REDIS=cluster` asks for a cluster.
    ///
    /// # Panics
    /// When the variable holds anything but `single`, `cluster` or nothing.
    pub fn cluster_requested() -> bool {
        match std::env::var(MODE_VAR).as_deref() {
            Ok("cluster") => true,
            Ok("single" | "") | Err(_) => false,
            Ok(other) => panic!("{MODE_VAR}=`{other}`: expected `single` or `cluster`"),
        }
    }

    /// A single server, or with `SLUICE_TEST_REDIS=cluster` a cluster of
    /// [`CLUSTER_MASTERS`] masters; with `aof`, persisted (see [`RedisServer::start_with_aof`]).
    ///
    /// # Panics
    /// As [`RedisServer::start`] and [`RedisCluster::start`].
    pub fn from_env(aof: bool) -> TestRedis {
        match (TestRedis::cluster_requested(), aof) {
            (false, false) => TestRedis::Single(RedisServer::start()),
            (false, true) => TestRedis::Single(RedisServer::start_with_aof()),
            (true, false) => TestRedis::Cluster(RedisCluster::start(CLUSTER_MASTERS)),
            (true, true) => TestRedis::Cluster(RedisCluster::start_with_aof(CLUSTER_MASTERS)),
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, TestRedis::Cluster(_))
    }

    /// The URL of the server, or of a cluster's first node (a seed).
    pub fn url(&self) -> String {
        match self {
            TestRedis::Single(s) => s.url(),
            TestRedis::Cluster(c) => c.url(),
        }
    }

    /// The `[redis]` settings of a sluice config for it (`url`, and for a cluster `cluster`,
    /// every node as a seed and [`CLUSTER_SHARDS`] shards), as TOML lines.
    pub fn config_toml(&self) -> String {
        match self {
            TestRedis::Single(s) => format!("url = \"{}\"\n", s.url()),
            TestRedis::Cluster(c) => {
                let seeds: Vec<String> = c.urls()[1..].iter().map(|u| format!("\"{u}\"")).collect();
                format!(
                    "url = \"{}\"\ncluster = true\nseeds = [{}]\nshards = {CLUSTER_SHARDS}\n",
                    c.url(),
                    seeds.join(", ")
                )
            }
        }
    }

    /// Shards a deployment on it uses: 1 for a single server, [`CLUSTER_SHARDS`] on a
    /// cluster.
    pub fn shards(&self) -> u32 {
        if self.is_cluster() { CLUSTER_SHARDS } else { 1 }
    }

    /// A new synchronous connection (routed by key on a cluster).
    ///
    /// # Panics
    /// When the server or cluster cannot be reached.
    pub fn conn(&self) -> RawConn {
        match self {
            TestRedis::Single(s) => RawConn::Single(s.conn()),
            TestRedis::Cluster(c) => RawConn::Cluster(Box::new(c.conn())),
        }
    }

    /// SIGKILLs the server, or every node.
    pub fn kill(&mut self) {
        match self {
            TestRedis::Single(s) => s.kill(),
            TestRedis::Cluster(c) => c.kill(),
        }
    }

    /// Stops the server, or every node, gracefully.
    pub fn stop(&mut self) {
        match self {
            TestRedis::Single(s) => s.stop(),
            TestRedis::Cluster(c) => c.stop(),
        }
    }

    /// Restarts the server, or every node (then waits for the cluster to be ok).
    pub fn restart(&mut self) {
        match self {
            TestRedis::Single(s) => s.restart(),
            TestRedis::Cluster(c) => c.restart(),
        }
    }

    /// The server, or a cluster's nodes.
    pub fn servers(&self) -> Vec<&RedisServer> {
        match self {
            TestRedis::Single(s) => vec![s],
            TestRedis::Cluster(c) => c.nodes().iter().collect(),
        }
    }
}

/// A synchronous connection to a [`TestRedis`]: to the server, or to a cluster (commands
/// routed by their key).
pub enum RawConn {
    /// To a single server.
    Single(redis::Connection),
    /// To a cluster.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl ConnectionLike for RawConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            RawConn::Single(c) => c.req_packed_command(cmd),
            RawConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            RawConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RawConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            RawConn::Single(c) => c.req_command(cmd),
            RawConn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RawConn::Single(c) => c.get_db(),
            RawConn::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            RawConn::Single(c) => c.supports_pipelining(),
            RawConn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            RawConn::Single(c) => c.check_connection(),
            RawConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            RawConn::Single(c) => c.is_open(),
            RawConn::Cluster(c) => c.is_open(),
        }
    }
}
