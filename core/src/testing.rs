//! A small in-memory driver for the planning tests: applies plans to an execution the way
//! the store would, keeping the live job, so tests read as a story.

use serde_json::{Value, json};

use crate::Millis;
use crate::execution::{Execution, Plan, StartRequest, plan_settle, plan_start};
use crate::job::{Job, JobStatus, NewJob, Settlement};
use crate::pipeline::{Pipeline, StepDef, StepKind};
use crate::retry::RetryPolicy;

/// A step named `name` of `kind` with default options.
pub(crate) fn step(name: &str, kind: StepKind) -> StepDef {
    StepDef { name: name.into(), queue: "default".into(), timeout_ms: None, retry: RetryPolicy::default(), requires_approval: false, kind }
}

/// A `noop` step.
pub(crate) fn noop(name: &str) -> StepDef {
    step(name, StepKind::Noop { output: None })
}

/// An execution under test with its live job.
pub(crate) struct Driver {
    pub exec: Execution,
    pub job: Option<NewJob>,
    pub events: Vec<String>,
    pub now: Millis,
    next_id: u32,
}

impl Driver {
    /// Starts a pipeline of `steps` at time 0.
    pub fn start(steps: Vec<StepDef>) -> Self {
        let pipeline = Pipeline { id: "p".into(), name: "p".into(), description: None, steps };
        let req = StartRequest { pipeline, pipeline_version: 1, input: json!({}), target: Some("t".into()), idempotency_key: None };
        let plan = plan_start(req, "ex_0_A".into(), "job_0_1".into(), 0);
        let mut d = Self { exec: Execution::clone(plan.execution.as_ref().unwrap()), job: None, events: Vec::new(), now: 0, next_id: 1 };
        d.absorb(plan);
        d
    }

    fn absorb(&mut self, plan: Plan) {
        self.events.extend(plan.events.iter().map(|e| e.kind.clone()));
        if let Some(e) = plan.execution {
            self.exec = e;
        }
        if let Some(job) = plan.jobs.into_iter().last() {
            self.job = Some(job);
        }
    }

    /// Applies a plan made elsewhere (an action or a vote).
    pub fn apply(&mut self, plan: Plan) {
        self.absorb(plan);
    }

    /// A job-id minter for plans made outside the driver.
    pub fn ids(&mut self) -> impl FnMut() -> String + '_ {
        move || {
            self.next_id += 1;
            format!("job_0_{}", self.next_id)
        }
    }

    /// The live job as a worker sees it.
    pub fn live_job(&self) -> Job {
        let j = self.job.clone().expect("no live job");
        Job {
            id: j.id,
            queue: j.queue,
            kind: j.kind,
            payload: j.payload,
            status: JobStatus::Running,
            priority: 0,
            attempts: 1,
            retry: j.retry,
            timeout_ms: j.timeout_ms,
            scheduled_at: j.run_at.unwrap_or(0),
            dedupe_key: None,
            lease: None,
            result: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            started_at: Some(self.now),
            finished_at: None,
            execution_id: j.execution_id,
            step: j.step,
        }
    }

    /// Settles the live job at `now` with `settlement`.
    pub fn settle(&mut self, now: Millis, settlement: Settlement) {
        self.now = now;
        let job = self.live_job();
        let mut n = self.next_id;
        let plan = plan_settle(&self.exec, &job, &settlement, now, &mut || {
            n += 1;
            format!("job_0_{n}")
        });
        self.next_id = n;
        self.job = None;
        self.absorb(plan);
    }

    /// Completes the live job with `output`.
    pub fn complete(&mut self, now: Millis, output: Value) {
        self.settle(now, Settlement::Completed { output });
    }

    /// Whether `kind` was emitted.
    pub fn emitted(&self, kind: &str) -> usize {
        self.events.iter().filter(|e| *e == kind).count()
    }
}
