//! The Lua scripts, each loaded once with the shared helpers of `lua/lib.lua` prepended.
//!
//! Every script file opens with a header giving its KEYS, ARGV, return value and invariant.
//! `redis::Script` sends `EVALSHA` and falls back to `EVAL` when the server does not know the
//! script yet (after a restart), so a Redis restart needs no special handling.

use redis::Script;

const LIB: &str = include_str!("../lua/lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// All scripts of the store.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub lease: Script,
    pub lease_external: Script,
    pub start: Script,
    pub heartbeat: Script,
    pub settle: Script,
    pub cancel: Script,
    pub release: Script,
    pub promote: Script,
    pub reclaim: Script,
    pub start_execution: Script,
    pub put_pipeline: Script,
    pub operate: Script,
}

impl Scripts {
    pub(crate) fn load() -> Self {
        Self {
            enqueue: with_lib(include_str!("../lua/enqueue.lua")),
            lease: with_lib(include_str!("../lua/lease.lua")),
            lease_external: with_lib(include_str!("../lua/lease_external.lua")),
            start: with_lib(include_str!("../lua/start.lua")),
            heartbeat: with_lib(include_str!("../lua/heartbeat.lua")),
            settle: with_lib(include_str!("../lua/settle.lua")),
            cancel: with_lib(include_str!("../lua/cancel.lua")),
            release: with_lib(include_str!("../lua/release.lua")),
            promote: with_lib(include_str!("../lua/promote.lua")),
            reclaim: with_lib(include_str!("../lua/reclaim.lua")),
            start_execution: with_lib(include_str!("../lua/start_execution.lua")),
            put_pipeline: with_lib(include_str!("../lua/put_pipeline.lua")),
            operate: with_lib(include_str!("../lua/operate.lua")),
        }
    }

    /// Every script, for loading them all up front (`/readyz` reports "scripts loaded").
    pub(crate) fn all(&self) -> [&Script; 13] {
        [
            &self.enqueue,
            &self.lease,
            &self.lease_external,
            &self.start,
            &self.heartbeat,
            &self.settle,
            &self.cancel,
            &self.release,
            &self.promote,
            &self.reclaim,
            &self.start_execution,
            &self.put_pipeline,
            &self.operate,
        ]
    }
}
