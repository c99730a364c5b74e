//! The Lua scripts, each loaded once with the shared helpers of `lua/lib.lua` prepended.
//!
//! Every script file opens with a header giving its KEYS, ARGV, return value and invariant.
//! `redis::Script` sends `EVALSHA` and falls back to `EVAL` when the server does not know the
//! script yet (after a restart), so a Redis restart needs no special handling.

use redis::Script;

use crate::batch::Batcher;

const LIB: &str = include_str!("../lua/lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// A script called once per job attempt, batched (see [`crate::batch`]).
fn batched(body: &str) -> Batcher {
    Batcher::new(LIB, body)
}

/// All scripts of the store.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub lease: Script,
    pub lease_external: Script,
    pub start: Batcher,
    pub heartbeat: Script,
    pub settle: Batcher,
    pub cancel: Script,
    pub release: Script,
    pub promote: Script,
    pub reclaim: Script,
    pub start_execution: Script,
    pub put_pipeline: Script,
    pub operate: Script,
    pub schedule_name: Script,
    pub put_schedule: Script,
    pub delete_schedule: Script,
    pub fire_schedule: Script,
}

impl Scripts {
    pub(crate) fn load() -> Self {
        Self {
            enqueue: with_lib(include_str!("../lua/enqueue.lua")),
            lease: with_lib(include_str!("../lua/lease.lua")),
            lease_external: with_lib(include_str!("../lua/lease_external.lua")),
            start: batched(include_str!("../lua/start.lua")),
            heartbeat: with_lib(include_str!("../lua/heartbeat.lua")),
            settle: batched(include_str!("../lua/settle.lua")),
            cancel: with_lib(include_str!("../lua/cancel.lua")),
            release: with_lib(include_str!("../lua/release.lua")),
            promote: with_lib(include_str!("../lua/promote.lua")),
            reclaim: with_lib(include_str!("../lua/reclaim.lua")),
            start_execution: with_lib(include_str!("../lua/start_execution.lua")),
            put_pipeline: with_lib(include_str!("../lua/put_pipeline.lua")),
            operate: with_lib(include_str!("../lua/operate.lua")),
            schedule_name: with_lib(include_str!("../lua/schedule_name.lua")),
            put_schedule: with_lib(include_str!("../lua/put_schedule.lua")),
            delete_schedule: with_lib(include_str!("../lua/delete_schedule.lua")),
            fire_schedule: with_lib(include_str!("../lua/fire_schedule.lua")),
        }
    }

    /// Every script, for loading them all up front (`/readyz` reports "scripts loaded").
    pub(crate) fn all(&self) -> [&Script; 19] {
        let [start, start_batch] = self.start.scripts();
        let [settle, settle_batch] = self.settle.scripts();
        [
            &self.enqueue,
            &self.lease,
            &self.lease_external,
            start,
            start_batch,
            &self.heartbeat,
            settle,
            settle_batch,
            &self.cancel,
            &self.release,
            &self.promote,
            &self.reclaim,
            &self.start_execution,
            &self.put_pipeline,
            &self.operate,
            &self.schedule_name,
            &self.put_schedule,
            &self.delete_schedule,
            &self.fire_schedule,
        ]
    }
}
