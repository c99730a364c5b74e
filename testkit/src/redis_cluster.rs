//! A private Redis Cluster per test: `N` masters, no replicas.

use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How long the cluster may take to report `cluster_state:ok` on every node.
const OK_DEADLINE: Duration = Duration::from_secs(30);

/// A Redis Cluster of `redis-server` children on private ports and directories, owned by
/// one test: every node a master (`--cluster-enabled yes`), the 16 384 slots split into equal
/// ranges in node order (`CLUSTER ADDSLOTSRANGE`), the nodes introduced by `CLUSTER MEET`.
///
/// Dropping it SIGKILLs and reaps every node, then removes their directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 1) without persistence and waits until every node
    /// reports `cluster_state:ok` and knows every other.
    ///
    /// # Panics
    /// When a node does not start, or the cluster does not form within 30 s.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_inner(masters, false)
    }

    /// As [`RedisCluster::start`], each node with an AOF fsynced on every write, so that data
    /// survives a kill and restart of a node.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn start_with_aof(masters: usize) -> RedisCluster {
        RedisCluster::start_inner(masters, true)
    }

    fn start_inner(masters: usize, aof: bool) -> RedisCluster {
        let masters = masters.max(1);
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::start_node(aof, true))
            .collect();
        let cluster = RedisCluster { nodes };
        for (i, node) in cluster.nodes.iter().enumerate() {
            let (first, last) = cluster.slot_range(i);
            let mut conn = node.conn();
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut conn)
                .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE on {}: {e}", node.url()));
        }
        let mut first = cluster.nodes[0].conn();
        for node in &cluster.nodes[1..] {
            let bus = node.cluster_port().expect("a cluster node has a bus port");
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .arg(bus)
                .query(&mut first)
                .unwrap_or_else(|e| panic!("CLUSTER MEET {}: {e}", node.url()));
        }
        cluster.wait_ok();
        cluster
    }

    /// The inclusive slot range of node `i` (equal ranges in node order).
    pub fn slot_range(&self, i: usize) -> (u16, u16) {
        let n = self.nodes.len();
        let first = i * usize::from(SLOTS) / n;
        let last = (i + 1) * usize::from(SLOTS) / n - 1;
        (
            u16::try_from(first).expect("a slot fits u16"),
            u16::try_from(last).expect("a slot fits u16"),
        )
    }

    /// The slot of `key` (as `CLUSTER KEYSLOT` computes it: by its hash tag when it has one).
    ///
    /// # Panics
    /// When the first node does not answer.
    pub fn slot_of(&self, key: &str) -> u16 {
        let mut conn = self.nodes[0].conn();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"))
    }

    /// The index (in [`RedisCluster::nodes`]) of the master serving `key`.
    ///
    /// # Panics
    /// As [`RedisCluster::slot_of`].
    pub fn node_of(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        (0..self.nodes.len())
            .find(|&i| {
                let (first, last) = self.slot_range(i);
                (first..=last).contains(&slot)
            })
            .expect("every slot is assigned")
    }

    /// The nodes, in slot order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill or restart it (then [`RedisCluster::wait_ok`]).
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The first node's URL: a seed a cluster client discovers the others from.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A cluster client seeded with every node.
    ///
    /// # Panics
    /// Never in practice (the URLs are well-formed).
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::builder(self.urls())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("well-formed redis URLs")
    }

    /// A new synchronous cluster connection (commands are routed by key).
    ///
    /// # Panics
    /// When the cluster cannot be reached.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        self.client()
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to the cluster at {}: {e}", self.url()))
    }

    /// SIGKILLs every node.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Stops every node gracefully (see [`RedisServer::stop`]).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Restarts every node on its port and directory (each keeps its identity and slots
    /// from its `nodes.conf`; data only with AOF) and waits until the cluster is ok again.
    ///
    /// # Panics
    /// As [`RedisServer::restart`] and [`RedisCluster::wait_ok`].
    pub fn restart(&mut self) {
        for node in &mut self.nodes {
            node.restart();
        }
        self.wait_ok();
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node and sees every
    /// slot assigned.
    ///
    /// # Panics
    /// When that does not happen within 30 s (the message names the last state seen).
    pub fn wait_ok(&self) {
        let until = Instant::now() + OK_DEADLINE;
        loop {
            let states: Vec<Result<(), String>> =
                self.nodes.iter().map(|n| self.node_ok(n)).collect();
            let Some(problem) = states.into_iter().find_map(Result::err) else {
                return;
            };
            assert!(
                Instant::now() < until,
                "the cluster did not become ok within {OK_DEADLINE:?}: {problem}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn node_ok(&self, node: &RedisServer) -> Result<(), String> {
        let mut conn = node
            .client()
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(|e| format!("{}: {e}", node.url()))?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut conn)
            .map_err(|e| format!("{}: {e}", node.url()))?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let want_nodes = self.nodes.len().to_string();
        if field("cluster_state") == "ok"
            && field("cluster_known_nodes") == want_nodes
            && field("cluster_slots_ok") == SLOTS.to_string()
        {
            Ok(())
        } else {
            Err(format!("{}: {}", node.url(), info.replace("\r\n", " ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::is_alive;

    #[test]
    fn three_masters_share_the_slots_and_route_keys_by_hash_tag() {
        let cluster = RedisCluster::start(3);
        assert_eq!(cluster.nodes().len(), 3);
        assert_eq!(cluster.slot_range(0), (0, 5460));
        assert_eq!(cluster.slot_range(2).1, SLOTS - 1);
        let mut conn = cluster.conn();
        // Keys of one hash tag live in one slot: a multi-key command on them is allowed.
        let _: () = redis::cmd("MSET")
            .arg("{t}:a")
            .arg("1")
            .arg("{t}:b")
            .arg("2")
            .query(&mut conn)
            .unwrap();
        let b: String = redis::cmd("GET").arg("{t}:b").query(&mut conn).unwrap();
        assert_eq!(b, "2");
        // Tags spread over every master.
        let owners: std::collections::BTreeSet<usize> = (0..16)
            .map(|i| cluster.node_of(&format!("{{sluice:{i}}}:x")))
            .collect();
        assert_eq!(owners.len(), 3, "{owners:?}");
        // The key is on the node that serves its slot, and on no other.
        let home = cluster.node_of("{t}:a");
        for (i, node) in cluster.nodes().iter().enumerate() {
            let n: usize = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
            assert_eq!(n > 0, i == home, "node {i}");
        }
    }

    #[test]
    fn a_node_restarts_with_its_slots_and_drop_cleans_up() {
        let mut cluster = RedisCluster::start_with_aof(2);
        let home = cluster.node_of("{k}");
        let _: () = redis::cmd("SET")
            .arg("{k}")
            .arg("v")
            .query(&mut cluster.conn())
            .unwrap();
        cluster.node_mut(home).kill();
        cluster.node_mut(home).restart();
        cluster.wait_ok();
        let v: String = redis::cmd("GET")
            .arg("{k}")
            .query(&mut cluster.conn())
            .unwrap();
        assert_eq!(v, "v");
        let pids: Vec<u32> = cluster.nodes().iter().map(RedisServer::pid).collect();
        let dirs: Vec<_> = cluster
            .nodes()
            .iter()
            .map(|n| n.dir().to_path_buf())
            .collect();
        drop(cluster);
        for pid in pids {
            assert!(!is_alive(pid), "node {pid} survived");
        }
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
