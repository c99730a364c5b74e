//! The figures of one run, as a table or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{Latency, Rate, RedisCost};

/// Draining a backlog of no-op jobs at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    /// Jobs run at once by the one worker.
    pub concurrency: usize,
    /// Jobs waiting when the worker started.
    pub backlog: usize,
    /// Jobs per second.
    pub rate: Rate,
    /// Redis work per job.
    pub redis: RedisCost,
}

/// 5-step no-op pipelines run by one worker at concurrency 64.
#[derive(Debug, Clone, Serialize)]
pub struct Pipelines {
    /// Steps per second.
    pub steps: Rate,
    /// Executions per second.
    pub executions: Rate,
    /// Redis work per step.
    pub redis_per_step: RedisCost,
}

/// One apalis-redis configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ApalisRun {
    /// `defaults` or `recommended`.
    pub settings: String,
    /// Drain of the backlog at concurrency 64.
    pub drain: Rate,
    /// Redis work per job of the drain.
    pub redis: RedisCost,
    /// Idle pickup latency.
    pub pickup: Latency,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// sluice: one job per `enqueue` call.
    pub enqueue_single: Option<Rate>,
    /// sluice: `enqueue` of 1 000 jobs per call.
    pub enqueue_bulk: Option<Rate>,
    /// sluice: `used_memory` growth per pending job.
    pub memory_per_pending_job_bytes: Option<f64>,
    /// sluice: drains of `--jobs` jobs at each concurrency.
    pub drain: Vec<Drain>,
    /// sluice: drains at concurrency 64 of each `--backlogs` size.
    pub backlog_drain: Vec<Drain>,
    /// sluice: idle pickup latency.
    pub pickup: Option<Latency>,
    /// sluice: 5-step pipelines.
    pub pipelines: Option<Pipelines>,
    /// apalis-redis: enqueue, one task per `push`.
    pub apalis_enqueue_single: Option<Rate>,
    /// apalis-redis: `push_bulk` of 1 000 tasks per call.
    pub apalis_enqueue_bulk: Option<Rate>,
    /// apalis-redis: `used_memory` growth per pending task.
    pub apalis_memory_per_pending_job_bytes: Option<f64>,
    /// apalis-redis baselines.
    pub apalis: Vec<ApalisRun>,
    /// Why the apalis-redis baseline stopped early, if it did.
    pub apalis_error: Option<String>,
    /// `redis-benchmark` output lines, or why there are none.
    pub redis_benchmark: Vec<String>,
}

fn rate(r: &Rate) -> String {
    let capped = if r.capped { " (cut off)" } else { "" };
    format!(
        "{:>10.0}/s  ({} in {:.2} s){capped}",
        r.per_second, r.count, r.seconds
    )
}

fn cost(c: &RedisCost) -> String {
    format!(
        "{:.2} calls, {:.1} commands, CPU {:.1} µs Redis + {:.1} µs worker",
        c.calls_per_item, c.commands_per_item, c.redis_cpu_us_per_item, c.client_cpu_us_per_item
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

fn latency(l: &Latency) -> String {
    let mut s = format!(
        "p50 {}  p99 {}  max {}  ({} samples)",
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.max_ms),
        l.samples
    );
    if l.timed_out > 0 {
        let cap = l
            .timeout_ms
            .map_or_else(|| "its cap".into(), |c| format!("{:.0} s", c / 1000.0));
        let _ = write!(
            s,
            "; {} sample(s) not picked up within {cap}: > {cap}",
            l.timed_out
        );
    }
    s
}

impl Report {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<44} {value}");
        };
        if let Some(r) = &self.enqueue_single {
            row("sluice enqueue, 1 job per call", rate(r));
        }
        if let Some(r) = &self.enqueue_bulk {
            row("sluice enqueue, 1000 jobs per call", rate(r));
        }
        if let Some(m) = self.memory_per_pending_job_bytes {
            row(
                "sluice Redis memory per pending job",
                format!("{m:.0} bytes"),
            );
        }
        for d in &self.drain {
            row(
                &format!("sluice drain, concurrency {}", d.concurrency),
                rate(&d.rate),
            );
            row(
                &format!("  Redis per job, concurrency {}", d.concurrency),
                cost(&d.redis),
            );
        }
        for d in &self.backlog_drain {
            row(
                &format!("sluice drain, backlog {}, concurrency 64", d.backlog),
                rate(&d.rate),
            );
            row(
                &format!("  Redis per job, backlog {}", d.backlog),
                cost(&d.redis),
            );
        }
        if let Some(l) = &self.pickup {
            row("sluice idle pickup", latency(l));
        }
        if let Some(p) = &self.pipelines {
            row("sluice 5-step pipelines, steps", rate(&p.steps));
            row("sluice 5-step pipelines, executions", rate(&p.executions));
            row("  Redis per step", cost(&p.redis_per_step));
        }
        if let Some(r) = &self.apalis_enqueue_single {
            row("apalis-redis enqueue, 1 task per push", rate(r));
        }
        if let Some(r) = &self.apalis_enqueue_bulk {
            row("apalis-redis enqueue, push_bulk of 1000", rate(r));
        }
        if let Some(m) = self.apalis_memory_per_pending_job_bytes {
            row(
                "apalis-redis Redis memory per pending task",
                format!("{m:.0} bytes"),
            );
        }
        for a in &self.apalis {
            row(
                &format!("apalis-redis ({}) drain, concurrency 64", a.settings),
                rate(&a.drain),
            );
            row("  Redis per task", cost(&a.redis));
            row(
                &format!("apalis-redis ({}) idle pickup", a.settings),
                latency(&a.pickup),
            );
        }
        if let Some(e) = &self.apalis_error {
            row("apalis-redis baseline stopped", e.clone());
        }
        for line in &self.redis_benchmark {
            row("redis-benchmark", line.clone());
        }
        out
    }
}

/// Runs `redis-benchmark -q -t ping,set,lpush,zadd -n 100000` against the Redis of `url`.
pub(crate) async fn redis_benchmark(url: &str) -> Vec<String> {
    let info = match redis::Client::open(url) {
        Ok(c) => c.get_connection_info().clone(),
        Err(e) => return vec![format!("not run: {e}")],
    };
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => return vec![format!("not run: {other} is not a plain TCP address")],
    };
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h",
            &host,
            "-p",
            &port.to_string(),
            "-q",
            "-t",
            "ping,set,lpush,zadd",
            "-n",
            "100000",
        ])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| l.contains("requests per second"))
            .map(str::to_string)
            .collect(),
        Ok(o) => vec![format!(
            "failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )],
        Err(e) => vec![format!("not run: {e}")],
    }
}
