//! `sluice bench --cluster` end to end at a small size, on a private 3-master cluster.

use sluice_bench::cluster::{ClusterOptions, run};
use sluice_testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_drain_spreads_the_shards_over_every_master_and_cleans_up() {
    let cluster = RedisCluster::start(3);
    let options = ClusterOptions {
        seed: cluster.url(),
        shards: 8,
        jobs: 400,
        workers: 2,
        concurrency: 16,
    };
    let drain = run(&options).await.expect("the cluster drain runs");

    assert_eq!(drain.rate.count, 400);
    assert!(drain.rate.per_second > 0.0, "{drain:?}");
    assert_eq!(drain.masters, 3);
    assert_eq!(drain.shards_per_master.len(), 3, "{drain:?}");
    assert_eq!(drain.shards_per_master.values().sum::<u32>(), 8);
    assert!(
        drain.shards_per_master.values().all(|&n| n >= 2),
        "the most even spread of the prefixes tried: {drain:?}"
    );
    assert!(
        drain.text().contains("over 8 shards on 3 masters"),
        "{}",
        drain.text()
    );
    for node in cluster.nodes() {
        let keys: usize = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
        assert_eq!(keys, 0, "keys left on {}", node.url());
    }
}
