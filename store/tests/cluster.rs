//! The store on a Redis Cluster of 3 masters with 8 shards: scripts in every shard, reads
//! across shards (split per slot), event reads (one per stream; the live reader polls),
//! Pub/Sub wake-ups published on another master than the subscribed one, `/readyz`'s check
//! and command counts summed over the masters.

use std::time::Duration;

use serde_json::json;
use sluice_core::ids;
use sluice_core::job::{NewJob, kinds};
use sluice_store::{Notifier, Store, StoreConfig};
use sluice_testkit::RedisCluster;

const SHARDS: u32 = 8;
const QUEUE: &str = "spread";

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn job(shard: u32) -> NewJob {
    NewJob::new(ids::new_id(ids::JOB, shard), QUEUE, kinds::NOOP, json!({ "shard": shard }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_is_written_and_read_across_the_masters() {
    let cluster = RedisCluster::start(3);
    let store = Store::connect(StoreConfig { url: cluster.url(), cluster: true, shards: SHARDS, ..StoreConfig::default() })
        .await
        .unwrap();
    assert!(store.is_cluster());
    store.ready().await.unwrap();
    let home = |shard: u32| cluster.node_of(&store.keys().leased(shard));
    let masters: std::collections::BTreeSet<usize> = (0..SHARDS).map(home).collect();
    assert_eq!(masters.len(), 3, "8 shards over 3 masters");

    // The subscription is on the first node; a job on a shard of another master wakes it.
    let notifier = Notifier::spawn(&store, &[QUEUE.to_string()], |_| {});
    tokio::time::timeout(Duration::from_secs(10), notifier.notified()).await.expect("the wake-up after subscribing");
    let far = (0..SHARDS).find(|&s| home(s) != 0).expect("a shard on another master");
    let cursor = store.latest_event_cursor().await.unwrap();
    let mut reader = store.event_reader().await.unwrap();
    let far_job = job(far);
    store.enqueue(std::slice::from_ref(&far_job), now()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), notifier.notified())
        .await
        .expect("a publish on another master wakes the subscriber");

    // The live reader finds the event (polling every stream), and a later one while it waits.
    let first = reader.read(&cursor, 100, 2_000).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].data["job_id"], json!(far_job.id));
    let after_first = sluice_store::EventCursor::parse(&first[0].id, SHARDS).expect("a cursor");
    let waiting = tokio::spawn({
        let (mut reader, after) = (reader.clone(), after_first.clone());
        async move { reader.read(&after, 100, 5_000).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest: Vec<NewJob> = (0..SHARDS).map(job).collect();
    store.enqueue(&rest, now()).await.unwrap();
    let woke = waiting.await.unwrap().unwrap();
    assert!(!woke.is_empty(), "the waiting read returned the new events");

    // Reads across shards see every shard.
    let events = store.read_events(&after_first, 100).await.unwrap();
    assert_eq!(events.len(), SHARDS as usize, "one enqueue event per shard: {events:?}");
    let stats = store.queue_stats(Some(QUEUE), now(), 60_000).await.unwrap();
    assert_eq!(stats[0].ready, u64::from(SHARDS) + 1, "{stats:?}");
    let counts = store.command_counts().await.unwrap();
    let scripts: u64 = counts.iter().filter(|(name, _)| name.starts_with("eval")).map(|(_, n)| n).sum();
    assert!(scripts >= u64::from(SHARDS), "script calls summed over the masters: {counts:?}");
}
