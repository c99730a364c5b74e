//! Encoding of engine plans for the scripts.
//!
//! A script receives the keys it touches in `KEYS` (all built by [`crate::keys`]) and a JSON
//! plan that refers to them by their 1-based index. The first three keys of every
//! plan-carrying script are fixed: the shard's event stream, sequence counter and queue set.

use serde_json::{Value, json};
use sluice_core::Millis;
use sluice_core::execution::Plan;
use sluice_core::ids;
use sluice_core::job::NewJob;

use crate::codec;
use crate::keys::Keys;

/// The `KEYS` of one script call.
#[derive(Debug, Default)]
pub(crate) struct KeyList {
    keys: Vec<String>,
}

impl KeyList {
    /// Starts with the three shard-wide keys every plan-carrying script uses.
    pub(crate) fn for_shard(keys: &Keys, shard: u32) -> Self {
        Self { keys: vec![keys.events(shard), keys.seq(shard), keys.queues(shard)] }
    }

    /// Appends a key and returns its 1-based index.
    pub(crate) fn add(&mut self, key: String) -> usize {
        self.keys.push(key);
        self.keys.len()
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.keys
    }
}

/// The plan entry that creates `job` (see `create_job` in `lua/lib.lua`).
pub(crate) fn job_entry(keys: &Keys, list: &mut KeyList, shard: u32, job: &NewJob, now: Millis) -> Value {
    let key = list.add(keys.job(shard, &job.id));
    let ready = list.add(keys.ready(shard, &job.queue));
    let delayed = list.add(keys.delayed(shard, &job.queue));
    let dedupe = job.dedupe_key.as_ref().map(|d| list.add(keys.dedupe(shard, &job.queue, d)));
    let mut entry = json!({
        "key": key,
        "ready": ready,
        "delayed": delayed,
        "id": job.id,
        "queue": job.queue,
        "priority": job.priority.clamp(-sluice_core::job::MAX_PRIORITY, sluice_core::job::MAX_PRIORITY),
        "due": job.run_at.unwrap_or(0),
        "fields": Value::Object(codec::new_job_fields(job, now)),
    });
    // Absent, not null: cjson decodes null to a value Lua treats as true.
    if let (Some(d), Some(map)) = (dedupe, entry.as_object_mut()) {
        map.insert("dedupe".into(), json!(d));
    }
    entry
}

/// The common tail of a plan: execution write guarded by `expected_rev` (-1: create),
/// target release, new jobs, events.
pub(crate) fn tail(keys: &Keys, list: &mut KeyList, shard: u32, plan: &Plan, expected_rev: i64, now: Millis) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(exec) = &plan.execution {
        let key = list.add(keys.execution(shard, &exec.id));
        out.insert(
            "exec".into(),
            json!({
                "key": key,
                "rev": expected_rev,
                "doc": codec::execution_doc(exec),
                "status": exec.status.as_str(),
            }),
        );
        if let Some(target) = &plan.release_target {
            let key = list.add(keys.target(shard, target));
            out.insert("release".into(), json!({ "key": key, "owner": exec.id }));
        }
    }
    if !plan.jobs.is_empty() {
        let jobs: Vec<Value> = plan
            .jobs
            .iter()
            .map(|j| {
                let job_shard = ids::shard_of(&j.id, ids::JOB).unwrap_or(shard);
                debug_assert_eq!(job_shard, shard, "a plan's jobs live in its execution's shard");
                job_entry(keys, list, shard, j, now)
            })
            .collect();
        out.insert("jobs".into(), Value::Array(jobs));
    }
    if !plan.events.is_empty() {
        let mut flat = Vec::with_capacity(plan.events.len() * 2);
        for e in &plan.events {
            flat.push(Value::String(e.kind.clone()));
            flat.push(Value::String(e.data.to_string()));
        }
        out.insert("events".into(), Value::Array(flat));
    }
    Value::Object(out)
}
