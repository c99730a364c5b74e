//! Encoding of engine plans for the scripts.
//!
//! A script receives the keys it touches in `KEYS` (all built by [`crate::keys`]) and a JSON
//! plan that refers to them by their 1-based index. The first three keys of every
//! plan-carrying script are fixed: the shard's event stream, sequence counter and queue set.

use serde_json::{Value, json};
use sluice_core::Millis;
use sluice_core::execution::Plan;
use sluice_core::Execution;
use sluice_core::ids;
use sluice_core::job::NewJob;

use crate::codec;
use crate::keys::{Keys, Lane};

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
    let lane = Lane::of_kind(&job.kind);
    let key = list.add(keys.job(shard, &job.id));
    let ready = list.add(keys.ready(shard, &job.queue, lane));
    let delayed = list.add(keys.delayed(shard, &job.queue, lane));
    let dedupe = job.dedupe_key.as_ref().map(|d| list.add(keys.dedupe(shard, &job.queue, d)));
    let mut entry = json!({
        "key": key,
        "ready": ready,
        "delayed": delayed,
        "id": job.id,
        "queue": job.queue,
        "stem": lane.stem(&job.queue),
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

/// The execution's own event list, when the plan's events are about one execution.
fn log_key(keys: &Keys, shard: u32, plan: &Plan) -> Option<String> {
    let from_exec = plan.execution.as_ref().map(|e| e.id.clone());
    let from_events = || plan.events.iter().find_map(|e| e.data.get("execution_id")?.as_str().map(str::to_string));
    from_exec.or_else(from_events).map(|id| keys.execution_events(shard, &id))
}

/// The common tail of a plan: the execution write guarded by the revision of `base` (the
/// execution the plan was made from; `None`: the plan creates it), its index moves, target
/// claim and release, jobs to stop and create, events. See `apply_tail` in `lua/lib.lua`.
pub(crate) fn tail(keys: &Keys, list: &mut KeyList, shard: u32, plan: &Plan, base: Option<&Execution>, now: Millis) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(exec) = &plan.execution {
        let key = list.add(keys.execution(shard, &exec.id));
        let status = exec.status.as_str();
        let mut index = serde_json::Map::new();
        match base {
            None => {
                index.insert("all".into(), json!(list.add(keys.executions_all(shard))));
                index.insert("pipeline".into(), json!(list.add(keys.executions_by_pipeline(shard, &exec.pipeline_id))));
                if let Some(t) = &exec.target {
                    index.insert("target".into(), json!(list.add(keys.executions_by_target(shard, t))));
                }
                index.insert("new".into(), json!(list.add(keys.executions_by_status(shard, status))));
            }
            Some(old) if old.status != exec.status => {
                index.insert("old".into(), json!(list.add(keys.executions_by_status(shard, old.status.as_str()))));
                index.insert("new".into(), json!(list.add(keys.executions_by_status(shard, status))));
            }
            Some(_) => {}
        }
        let mut entry = json!({
            "key": key,
            "id": exec.id,
            "rev": base.map_or(-1, |b| i64::try_from(b.rev).unwrap_or(i64::MAX)),
            "doc": codec::execution_doc(exec),
            "status": status,
        });
        if !index.is_empty() {
            index.insert("score".into(), json!(exec.created_at));
            entry["index"] = Value::Object(index);
        }
        out.insert("exec".into(), entry);
        if let Some(target) = &plan.release_target {
            let key = list.add(keys.target(shard, target));
            out.insert("release".into(), json!({ "key": key, "owner": exec.id }));
        }
        if let Some(target) = &plan.claim_target {
            let key = list.add(keys.target(shard, target));
            out.insert("claim".into(), json!({ "key": key, "owner": exec.id }));
        }
    }
    if !plan.stop_jobs.is_empty() {
        let jobs: Vec<Value> = plan
            .stop_jobs
            .iter()
            .map(|j| {
                let lane = Lane::of_kind(&j.kind);
                json!({
                    "key": list.add(keys.job(shard, &j.id)),
                    "ready": list.add(keys.ready(shard, &j.queue, lane)),
                    "delayed": list.add(keys.delayed(shard, &j.queue, lane)),
                    "id": j.id,
                })
            })
            .collect();
        let leased = list.add(keys.leased(shard));
        out.insert(
            "stop".into(),
            json!({ "jobs": jobs, "leased": leased, "channel": keys.cancel_channel(), "reason": "execution stopped" }),
        );
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
        if let Some(log) = log_key(keys, shard, plan) {
            out.insert("log".into(), json!(list.add(log)));
        }
    }
    Value::Object(out)
}
