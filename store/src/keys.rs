//! Every Redis key sluice uses is built here, and nowhere else.
//!
//! All keys of one shard share the hash tag `{<prefix>:<shard>}`, so every script touches a
//! single Redis Cluster slot: an execution, its step jobs, their queue entries, its target
//! slot and its idempotency key always live together. Pipelines (read by every shard) live
//! under the global tag `{<prefix>:g}`. `docs/redis-keys.md` lists every key with its type
//! and owner; a test keeps the two in step.
//!
//! Lua scripts receive keys from here (as `KEYS`), plus two prefixes for keys they can only
//! know at run time (a job popped from a queue): [`Keys::job_prefix`] and
//! [`Keys::queue_prefix`] with [`READY_SUFFIX`].
//!
//! **Lanes.** Each queue has two lanes, and a job sits in the one its kind decides
//! ([`Lane::of_kind`]): jobs of the kinds sluice's own workers run (the *builtin* lane) and
//! jobs left to external workers leasing over the HTTP API (the *external* lane). The
//! external lane's keys are the queue's keys with [`EXTERNAL_SEGMENT`] after the queue name
//! (`{p:s}:q:<queue>:external:ready`); queue names cannot contain `:`, so no queue's keys
//! can be mistaken for a lane's. A lane's keys and its notification channel share one stem,
//! [`Lane::stem`].

use std::borrow::Cow;

/// Suffix of a queue's ready set after [`Keys::queue_prefix`] and the queue name.
pub const READY_SUFFIX: &str = ":ready";
/// Suffix of a queue's delayed set after [`Keys::queue_prefix`] and the queue name.
pub const DELAYED_SUFFIX: &str = ":delayed";
/// Suffix of a queue's waiting-since set (a sibling of the ready set).
pub const SINCE_SUFFIX: &str = ":since";
/// Suffix of a queue's outcome counters (a sibling of the ready set).
pub const STATS_SUFFIX: &str = ":stats";
/// Suffix of a queue's pause flag (a sibling of the ready set).
pub const PAUSED_SUFFIX: &str = ":paused";
/// What follows the queue name in the keys (and notification channel) of its external lane.
pub const EXTERNAL_SEGMENT: &str = ":external";
/// Suffix of an execution's own event list after [`Keys::execution_prefix`] and its id.
pub const EXECUTION_EVENTS_SUFFIX: &str = ":events";

/// Which workers lease a job: sluice's own, or external workers over the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Jobs of the kinds sluice's workers run (see
    /// [`sluice_core::pipeline::is_builtin_job_kind`]); only `Store::lease` hands them out.
    Builtin,
    /// Jobs of every other kind; only `Store::lease_external` hands them out.
    External,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Builtin, Lane::External];

    /// The lane of a job of `kind`.
    pub fn of_kind(kind: &str) -> Lane {
        if sluice_core::pipeline::is_builtin_job_kind(kind) { Lane::Builtin } else { Lane::External }
    }

    /// The stable name, as stored in a job's `lane` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Builtin => "builtin",
            Lane::External => "external",
        }
    }

    /// The stem of the lane's keys and channel: the queue name, followed by
    /// [`EXTERNAL_SEGMENT`] for the external lane.
    pub fn stem(self, queue: &str) -> Cow<'_, str> {
        match self {
            Lane::Builtin => Cow::Borrowed(queue),
            Lane::External => Cow::Owned(format!("{queue}{EXTERNAL_SEGMENT}")),
        }
    }
}

/// Builds keys for one deployment (`redis.prefix`, `redis.shards`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    shards: u32,
}

impl Keys {
    /// Keys under `prefix` with `shards` shards (at least 1).
    pub fn new(prefix: impl Into<String>, shards: u32) -> Self {
        Self { prefix: prefix.into(), shards: shards.max(1) }
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn tag(&self, shard: u32) -> String {
        format!("{{{}:{shard}}}", self.prefix)
    }

    /// HASH `{p:s}:job:<id>`: one job (fields in `docs/redis-keys.md`). Owner: the job
    /// scripts. Kept until pruned by retention.
    pub fn job(&self, shard: u32, id: &str) -> String {
        format!("{}:job:{id}", self.tag(shard))
    }

    /// HASH `{p:s}:job:<id>:results`: the results posted for a job over the API, keyed by
    /// their `Idempotency-Key`: `k:<key>` → the answer given (JSON), `t:<token>` and
    /// `a:<attempt>` → the key whose result settled that lease and attempt. Owner: `settle`
    /// (in the same write as the settlement). Expires `idempotency_ttl` after the last
    /// result.
    pub fn job_results(&self, shard: u32, id: &str) -> String {
        format!("{}:job:{id}:results", self.tag(shard))
    }

    /// Prefix of every job hash of a shard (a job id appended gives [`Keys::job`]).
    pub fn job_prefix(&self, shard: u32) -> String {
        format!("{}:job:", self.tag(shard))
    }

    /// Prefix of a shard's queue keys (a queue name and a suffix appended).
    pub fn queue_prefix(&self, shard: u32) -> String {
        format!("{}:q:", self.tag(shard))
    }

    /// A key of `lane` of `queue`: the queue prefix, the lane's stem, then `suffix`.
    fn lane_key(&self, shard: u32, queue: &str, lane: Lane, suffix: &str) -> String {
        format!("{}{}{suffix}", self.queue_prefix(shard), lane.stem(queue))
    }

    /// ZSET `{p:s}:q:<queue>:ready` (external lane: `{p:s}:q:<queue>:external:ready`): ready
    /// job ids of the lane, scored by priority then arrival.
    pub fn ready(&self, shard: u32, queue: &str, lane: Lane) -> String {
        self.lane_key(shard, queue, lane, READY_SUFFIX)
    }

    /// ZSET `{p:s}:q:<queue>:delayed` (or `…:external:delayed`): job ids of the lane scored
    /// by due time (ms).
    pub fn delayed(&self, shard: u32, queue: &str, lane: Lane) -> String {
        self.lane_key(shard, queue, lane, DELAYED_SUFFIX)
    }

    /// ZSET `{p:s}:q:<queue>:since` (or `…:external:since`): ready job ids of the lane,
    /// score = when each became ready (for the oldest waiting age). A sibling of the ready
    /// set: scripts derive it from the ready key by replacing [`READY_SUFFIX`]. Owner: the
    /// scripts that move jobs in and out of the ready set.
    pub fn queue_since(&self, shard: u32, queue: &str, lane: Lane) -> String {
        self.lane_key(shard, queue, lane, SINCE_SUFFIX)
    }

    /// HASH `{p:s}:q:<queue>:stats` (or `…:external:stats`): outcome counters (`completed`,
    /// `failed`, `retried`, `cancelled`) of the lane's jobs since the queue first held a
    /// job. Sibling of the ready set. Owner: `settle`, `cancel`, `operate`.
    pub fn queue_stats(&self, shard: u32, queue: &str, lane: Lane) -> String {
        self.lane_key(shard, queue, lane, STATS_SUFFIX)
    }

    /// STRING `{p:s}:q:<queue>:paused` (or `…:external:paused`): present while the queue
    /// is paused (no lease hands out the lane's jobs); pause and resume set both lanes.
    /// Sibling of the ready set. Owner: queue pause/resume.
    pub fn queue_paused(&self, shard: u32, queue: &str, lane: Lane) -> String {
        self.lane_key(shard, queue, lane, PAUSED_SUFFIX)
    }

    /// ZSET `{p:g}:workers`: worker ids, score = last heartbeat (ms). Owner: workers.
    pub fn workers(&self) -> String {
        format!("{{{}:g}}:workers", self.prefix)
    }

    /// HASH `{p:g}:worker:<id>`: what a worker runs (`queues`, `concurrency`, `host`,
    /// `pid`, `started_at`, `version`); expires unless refreshed. Owner: that worker.
    pub fn worker(&self, id: &str) -> String {
        format!("{{{}:g}}:worker:{id}", self.prefix)
    }

    /// ZSET `{p:s}:leased`: ids of reserved or running jobs, scored by lease deadline (ms).
    pub fn leased(&self, shard: u32) -> String {
        format!("{}:leased", self.tag(shard))
    }

    /// STRING `{p:s}:seq`: counter giving ready jobs their arrival order.
    pub fn seq(&self, shard: u32) -> String {
        format!("{}:seq", self.tag(shard))
    }

    /// SET `{p:s}:queues`: names of the queues that ever held a job in this shard.
    pub fn queues(&self, shard: u32) -> String {
        format!("{}:queues", self.tag(shard))
    }

    /// STREAM `{p:s}:events`: the shard's event stream, capped.
    pub fn events(&self, shard: u32) -> String {
        format!("{}:events", self.tag(shard))
    }

    /// HASH `{p:s}:ex:<id>`: one execution: `doc` (JSON), `status`, `rev`.
    pub fn execution(&self, shard: u32, id: &str) -> String {
        format!("{}{id}", self.execution_prefix(shard))
    }

    /// Prefix of every execution key of a shard (an execution id appended gives
    /// [`Keys::execution`], and [`EXECUTION_EVENTS_SUFFIX`] after that its event list).
    pub fn execution_prefix(&self, shard: u32) -> String {
        format!("{}:ex:", self.tag(shard))
    }

    /// STRING `{p:s}:target:<target>`: id of the live execution holding the target.
    pub fn target(&self, shard: u32, target: &str) -> String {
        format!("{}:target:{target}", self.tag(shard))
    }

    /// STRING `{p:s}:idem:<key>`: id of the execution started with this idempotency key.
    pub fn idempotency(&self, shard: u32, key: &str) -> String {
        format!("{}:idem:{key}", self.tag(shard))
    }

    /// STRING `{p:s}:dedupe:<queue>:<key>`: id of the pending job holding this dedupe key.
    pub fn dedupe(&self, shard: u32, queue: &str, key: &str) -> String {
        format!("{}:dedupe:{queue}:{key}", self.tag(shard))
    }

    /// HASH `{p:g}:pipeline:<id>`: `version`, `digest`, `def:<n>` per version.
    pub fn pipeline(&self, id: &str) -> String {
        format!("{{{}:g}}:pipeline:{id}", self.prefix)
    }

    /// SET `{p:g}:pipelines`: every pipeline id.
    pub fn pipelines(&self) -> String {
        format!("{{{}:g}}:pipelines", self.prefix)
    }

    /// LIST `{p:s}:ex:<id>:events`: the execution's own events (JSON `{id, type, data}`,
    /// `id` being the shard stream's entry id), oldest first, capped. Owner: the scripts
    /// that append events.
    pub fn execution_events(&self, shard: u32, id: &str) -> String {
        format!("{}{EXECUTION_EVENTS_SUFFIX}", self.execution(shard, id))
    }

    /// ZSET `{p:s}:exs`: every execution id of the shard, score = creation time (ms).
    /// Owner: `start_execution`.
    pub fn executions_all(&self, shard: u32) -> String {
        format!("{}:exs", self.tag(shard))
    }

    /// ZSET `{p:s}:exs:status:<status>`: executions currently in `status`, score =
    /// creation time. Owner: every script that writes an execution.
    pub fn executions_by_status(&self, shard: u32, status: &str) -> String {
        format!("{}:exs:status:{status}", self.tag(shard))
    }

    /// ZSET `{p:s}:exs:pipeline:<id>`: executions of a pipeline, score = creation time.
    /// Owner: `start_execution`.
    pub fn executions_by_pipeline(&self, shard: u32, pipeline: &str) -> String {
        format!("{}:exs:pipeline:{pipeline}", self.tag(shard))
    }

    /// ZSET `{p:s}:exs:target:<target>`: executions of a target, score = creation time.
    /// Owner: `start_execution`.
    pub fn executions_by_target(&self, shard: u32, target: &str) -> String {
        format!("{}:exs:target:{target}", self.tag(shard))
    }

    /// HASH `{p:s}:sch:<id>`: one schedule: `doc` (JSON definition), `rev` (compare-and-set
    /// revision of the definition), `next_run_at` (absent while disabled), `last_run_at`.
    /// The shard is its target's. Owner: `put_schedule`, `fire_schedule`.
    pub fn schedule(&self, shard: u32, id: &str) -> String {
        format!("{}:sch:{id}", self.tag(shard))
    }

    /// ZSET `{p:s}:sch:<id>:runs`: the ids of a schedule's history rows, score = when each
    /// was recorded (ms). Owner: `fire_schedule` (which prunes it by age and count).
    pub fn schedule_runs(&self, shard: u32, id: &str) -> String {
        format!("{}:runs", self.schedule(shard, id))
    }

    /// HASH `{p:s}:sch:<id>:rows`: a schedule's history rows, row id → JSON. Owner:
    /// `fire_schedule`, beside [`Keys::schedule_runs`].
    pub fn schedule_rows(&self, shard: u32, id: &str) -> String {
        format!("{}:rows", self.schedule(shard, id))
    }

    /// ZSET `{p:s}:schs:due`: ids of the shard's enabled schedules, score = when a scheduler
    /// should next look at each (its `next_run_at`, or shortly after a fire skipped while
    /// its target was busy). Due selection is one range query on it. Owner:
    /// `put_schedule`, `fire_schedule`, `delete_schedule`.
    pub fn schedules_due(&self, shard: u32) -> String {
        format!("{}:schs:due", self.tag(shard))
    }

    /// HASH `{p:g}:schedule_names`: schedule name → id (names are unique). Owner:
    /// `schedule_name`.
    pub fn schedule_names(&self) -> String {
        format!("{{{}:g}}:schedule_names", self.prefix)
    }

    /// ZSET `{p:g}:schedules`: every schedule name, score 0 (listed in name order). Owner:
    /// `schedule_name`.
    pub fn schedule_index(&self) -> String {
        format!("{{{}:g}}:schedules", self.prefix)
    }

    /// SET `{p:g}:schedules:file`: names of the schedules defined in files. Owner:
    /// `schedule_name`.
    pub fn schedules_from_files(&self) -> String {
        format!("{{{}:g}}:schedules:file", self.prefix)
    }

    /// Pub/Sub channel `<p>:cancel`: carries the id of a running job whose execution was
    /// stopped; the worker running it kills it. A channel, not a key.
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// Pub/Sub channel prefix: `<p>:notify:` + a lane's stem ([`Lane::stem`]) is published
    /// when a job of that lane becomes ready. A channel, not a key.
    pub fn notify_prefix(&self) -> String {
        format!("{}:notify:", self.prefix)
    }

    /// Pub/Sub channel `<p>:notify:<queue>` (external lane: `<p>:notify:<queue>:external`):
    /// published when a job of the lane becomes ready. A channel, not a key.
    pub fn notify_channel(&self, queue: &str, lane: Lane) -> String {
        format!("{}{}", self.notify_prefix(), lane.stem(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extracts the hash tag Redis Cluster uses to place a key.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("tag");
        let close = key[open..].find('}').expect("tag end") + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_shard_shares_one_hash_tag() {
        let k = Keys::new("sluice", 4);
        let keys = [
            k.job(3, "job_3_X"),
            k.job_results(3, "job_3_X"),
            k.ready(3, "deploy", Lane::Builtin),
            k.delayed(3, "deploy", Lane::Builtin),
            k.ready(3, "deploy", Lane::External),
            k.delayed(3, "deploy", Lane::External),
            k.leased(3),
            k.seq(3),
            k.queues(3),
            k.events(3),
            k.execution(3, "ex_3_X"),
            k.target(3, "repo:acme/{web}"),
            k.idempotency(3, "abc"),
            k.dedupe(3, "default", "k"),
            k.execution_events(3, "ex_3_X"),
            k.executions_all(3),
            k.executions_by_status(3, "running"),
            k.executions_by_pipeline(3, "release"),
            k.executions_by_target(3, "repo:acme/{web}"),
            k.queue_since(3, "deploy", Lane::Builtin),
            k.queue_stats(3, "deploy", Lane::Builtin),
            k.queue_paused(3, "deploy", Lane::Builtin),
            k.queue_since(3, "deploy", Lane::External),
            k.queue_stats(3, "deploy", Lane::External),
            k.queue_paused(3, "deploy", Lane::External),
            k.schedule(3, "sch_3_X"),
            k.schedule_runs(3, "sch_3_X"),
            k.schedule_rows(3, "sch_3_X"),
            k.schedules_due(3),
        ];
        for key in &keys {
            assert_eq!(hash_tag(key), "sluice:3", "{key}");
        }
        assert_eq!(hash_tag(&k.pipeline("release")), "sluice:g");
        assert_eq!(k.job(0, "a"), format!("{}a", k.job_prefix(0)));
        assert_eq!(k.ready(1, "q", Lane::Builtin), format!("{}q{READY_SUFFIX}", k.queue_prefix(1)));
        assert_eq!(
            k.ready(1, "q", Lane::External),
            format!("{}q{EXTERNAL_SEGMENT}{READY_SUFFIX}", k.queue_prefix(1))
        );
        assert_eq!(k.execution_events(2, "ex_2_X"), format!("{}ex_2_X{EXECUTION_EVENTS_SUFFIX}", k.execution_prefix(2)));
        assert_eq!(hash_tag(&k.workers()), "sluice:g");
        assert_eq!(hash_tag(&k.worker("w1")), "sluice:g");
        for key in [k.schedule_names(), k.schedule_index(), k.schedules_from_files()] {
            assert_eq!(hash_tag(&key), "sluice:g", "{key}");
        }
    }

    /// `sibling` in `lua/lib.lua` finds a queue's other keys by cutting the ready suffix
    /// (6 characters) off the ready set's key.
    #[test]
    fn queue_siblings_share_the_ready_sets_stem() {
        let k = Keys::new("sluice", 2);
        assert_eq!(READY_SUFFIX.len(), 6);
        for lane in Lane::ALL {
            let ready = k.ready(1, "deploy.eu", lane);
            let stem = &ready[..ready.len() - READY_SUFFIX.len()];
            assert_eq!(k.queue_since(1, "deploy.eu", lane), format!("{stem}{SINCE_SUFFIX}"));
            assert_eq!(k.queue_stats(1, "deploy.eu", lane), format!("{stem}{STATS_SUFFIX}"));
            assert_eq!(k.queue_paused(1, "deploy.eu", lane), format!("{stem}{PAUSED_SUFFIX}"));
            assert_eq!(k.delayed(1, "deploy.eu", lane), format!("{stem}{DELAYED_SUFFIX}"));
            // The lane's channel carries the same stem as its keys.
            assert!(stem.ends_with(&*lane.stem("deploy.eu")));
            assert_eq!(k.notify_channel("deploy.eu", lane), format!("{}{}", k.notify_prefix(), lane.stem("deploy.eu")));
        }
    }

    #[test]
    fn the_lane_follows_the_job_kind() {
        for kind in sluice_core::pipeline::BUILTIN_JOB_KINDS {
            assert_eq!(Lane::of_kind(kind), Lane::Builtin, "{kind}");
        }
        for kind in ["external", "resize-image", "acme.build-v2"] {
            assert_eq!(Lane::of_kind(kind), Lane::External, "{kind}");
        }
        let k = Keys::new("sluice", 1);
        assert_ne!(k.ready(0, "q", Lane::Builtin), k.ready(0, "q", Lane::External));
    }

    #[test]
    fn redis_keys_doc_lists_every_key() {
        let doc = include_str!("../../docs/redis-keys.md");
        for pattern in [
            "{p:s}:job:<id>",
            "{p:s}:job:<id>:results",
            "{p:s}:q:<queue>:ready",
            "{p:s}:q:<queue>:external:ready",
            "{p:s}:q:<queue>:external:delayed",
            "{p:s}:q:<queue>:external:since",
            "{p:s}:q:<queue>:external:stats",
            "{p:s}:q:<queue>:external:paused",
            "<p>:notify:<queue>:external",
            "{p:s}:q:<queue>:delayed",
            "{p:s}:leased",
            "{p:s}:seq",
            "{p:s}:queues",
            "{p:s}:events",
            "{p:s}:ex:<id>",
            "{p:s}:target:<target>",
            "{p:s}:idem:<key>",
            "{p:s}:dedupe:<queue>:<key>",
            "{p:g}:pipeline:<id>",
            "{p:g}:pipelines",
            "<p>:notify:<queue>",
            "<p>:cancel",
            "{p:s}:ex:<id>:events",
            "{p:s}:exs",
            "{p:s}:exs:status:<status>",
            "{p:s}:exs:pipeline:<id>",
            "{p:s}:exs:target:<target>",
            "{p:s}:q:<queue>:since",
            "{p:s}:q:<queue>:stats",
            "{p:s}:q:<queue>:paused",
            "{p:g}:workers",
            "{p:g}:worker:<id>",
            "{p:s}:sch:<id>",
            "{p:s}:sch:<id>:runs",
            "{p:s}:sch:<id>:rows",
            "{p:s}:schs:due",
            "{p:g}:schedule_names",
            "{p:g}:schedules",
            "{p:g}:schedules:file",
        ] {
            assert!(doc.contains(pattern), "docs/redis-keys.md does not list {pattern}");
        }
    }
}
