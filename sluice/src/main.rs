//! `sluice`: one binary for every role (worker, scheduler, API, all-in-one `up`) and the CLI
//! that drives a running deployment over its HTTP API.
//!
//! Thin by design: parse arguments, load the layered configuration, set up logging and
//! signals, and hand over to the library crates.

mod cadence;
mod client;
mod config;
mod events;
mod files;
mod metrics;
mod private_redis;
mod reload;
mod schedules;
mod serve;
mod signals;
mod systemd;
mod telemetry;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Overrides;

/// mimalloc instead of the system allocator: a busy worker allocates and frees for every job
/// (replies, events, JSON), and glibc's malloc took a quarter of its CPU time (see
/// docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sluice: pipelines and jobs on Redis.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Config file (default: /etc/sluice/sluice.toml when it exists).
    #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides redis.url.
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Base URL of the sluice API: http:// or https:// (whose certificate is verified
    /// against the system's trust store, or the PEM file named by SSL_CERT_FILE).
    #[arg(long, global = true, env = "SLUICE_API_URL", default_value = "http://127.0.0.1:7070")]
    api: String,
    /// Bearer token.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The Redis to measure against (nothing is started).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Jobs per enqueue and drain scenario.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Idle pickup samples.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Executions of the 5-step pipeline scenario.
    #[arg(long, default_value_t = 2_000)]
    pipelines: usize,
    /// Worker concurrencies of the drain scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrencies: Vec<usize>,
    /// Backlog sizes of the drain-at-backlog scenario (concurrency 64), comma-separated;
    /// `0` leaves the scenario out.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    backlogs: Vec<usize>,
    /// Leave out the apalis-redis baseline.
    #[arg(long)]
    no_apalis: bool,
    /// Leave out redis-benchmark.
    #[arg(long)]
    no_redis_benchmark: bool,
    /// Run only the no-op drain on the Redis Cluster that `--redis-url` is a node of, its
    /// `--jobs` spread over `--shards` shards (see docs/SCALING.md).
    #[arg(long)]
    cluster: bool,
    /// With `--cluster`: shards the jobs are spread over.
    #[arg(long, default_value_t = 8, requires = "cluster")]
    shards: u32,
    /// With `--cluster`: in-process workers draining the shards.
    #[arg(long, default_value_t = 2, requires = "cluster")]
    workers: usize,
    /// With `--cluster`: concurrency of each worker.
    #[arg(long, default_value_t = 64, requires = "cluster")]
    concurrency: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// API, scheduler and worker in one process (starts a private redis-server if none answers).
    Up {
        #[command(flatten)]
        serve: ServeArgs,
        /// Overrides api.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// The HTTP control API.
    Api {
        #[command(flatten)]
        serve: ServeArgs,
        /// Overrides api.listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// A worker: leases jobs from its queues and runs them.
    Worker {
        #[command(flatten)]
        serve: ServeArgs,
        /// Overrides worker.queues (comma-separated).
        #[arg(long, value_delimiter = ',')]
        queues: Option<Vec<String>>,
        /// Overrides worker.concurrency.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Serves Prometheus metrics at http://ADDR/metrics (overrides metrics.listen).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// The scheduler: fires due schedules, promotes due delayed jobs and reclaims expired leases.
    Scheduler {
        #[command(flatten)]
        serve: ServeArgs,
        /// Serves Prometheus metrics at http://ADDR/metrics (overrides metrics.listen).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// The configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Checks the configuration and every pipeline file; exits non-zero on any problem.
    Validate {
        #[command(flatten)]
        serve: ServeArgs,
        /// Extra pipeline files to check.
        files: Vec<PathBuf>,
    },
    /// Pipelines.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Executions.
    Exec {
        #[command(subcommand)]
        command: ExecCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queues: their figures, pause and resume.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Schedules.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Probes a running API: `/readyz` (it serves, and Redis answers), or `/healthz` with
    /// `--live` (the process serves HTTP). Exits 0 when it answers 2xx, 1 otherwise; meant
    /// for container and load-balancer health checks.
    Health {
        /// Probe liveness (`/healthz`) instead of readiness.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measures enqueue and drain rates, idle pickup latency, pipeline steps per second and
    /// Redis cost per job against a Redis of your own, with apalis-redis as a baseline.
    /// Use a private, otherwise idle Redis: its command statistics are reset.
    Bench(BenchArgs),
    /// Prints a shell completion script, e.g. `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints events: those kept (from the oldest, or after --after), or with --follow new
    /// ones as they happen, until Ctrl-C.
    Events {
        /// Start after this cursor (the `id` of an event, or 0 for the oldest kept).
        #[arg(long)]
        after: Option<String>,
        /// Only this execution's events.
        #[arg(long)]
        execution: Option<String>,
        /// Only events whose type starts with this (e.g. `execution.` or `job.failed`).
        #[arg(long = "type", value_name = "PREFIX")]
        kind: Option<String>,
        /// Keep printing new events as they happen (from now on, or after --after);
        /// reconnects when the connection drops.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the effective configuration: defaults, then the file, then `SLUICE_…`
    /// variables, then flags (secrets shown as `<redacted>`).
    Show {
        #[command(flatten)]
        serve: ServeArgs,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// Validates a pipeline file and applies it (a new version when it changed).
    Apply {
        /// A `.toml` or `.json` pipeline file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ExecCommand {
    /// Starts an execution of a pipeline.
    Start {
        /// Pipeline id.
        pipeline: String,
        /// Input: inline JSON, or @file.
        #[arg(long)]
        input: Option<String>,
        /// Target (at most one live execution per target).
        #[arg(long)]
        target: Option<String>,
        /// Starts with the same key return the same execution.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the execution to settle, showing progress; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Shows an execution.
    Get {
        /// Execution id.
        id: String,
    },
    /// Lists executions, newest first.
    List {
        /// Only this status (running, blocked, paused, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Page size (1 to 200).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancels a live execution (its running command is killed).
    Cancel {
        /// Execution id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retries a failed or cancelled execution from its first step that did not succeed.
    Retry {
        /// Execution id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Wait for the execution to settle, showing progress; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Runs an execution again from a step (name or index).
    Restart {
        /// Execution id.
        id: String,
        /// The step to run again from: its name or index (from 0).
        #[arg(long = "from")]
        from_step: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Wait for the execution to settle, showing progress; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Pauses an execution at its next step boundary.
    Pause {
        /// Execution id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approves a step waiting for approval (one vote per token subject).
    Approve {
        /// Execution id.
        id: String,
        /// The step: its name, or its index from 0.
        step: String,
        /// A comment kept with the vote.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Rejects a step waiting for approval: the execution fails with kind `rejected`.
    Reject {
        /// Execution id.
        id: String,
        /// The step: its name, or its index from 0.
        step: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Asks for changes: the step (or, for an approval step, the one before it) runs again
    /// with the feedback in its context.
    RequestChanges {
        /// Execution id.
        id: String,
        /// The step: its name, or its index from 0.
        step: String,
        /// What to change.
        #[arg(long)]
        feedback: String,
    },
    /// Resumes a paused execution.
    Resume {
        /// Execution id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lists an execution's events.
    Events {
        /// Execution id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Enqueues a standalone job, e.g. `sluice job enqueue --queue mail -- ./send-digest --daily`.
    Enqueue {
        #[command(flatten)]
        spec: Box<client::JobSpec>,
        /// Wait for the job to settle, showing its progress; exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
    },
    /// Shows a job.
    Get {
        /// Job id.
        id: String,
    },
    /// Cancels a pending job.
    Cancel {
        /// Job id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Shows the figures of every queue, or of one: jobs by status, oldest ready job, paused,
    /// live workers.
    Stats {
        /// Only this queue.
        queue: Option<String>,
    },
    /// Pauses a queue: workers lease none of its jobs (running ones finish) until it is resumed.
    Pause {
        /// Queue name.
        queue: String,
    },
    /// Resumes a paused queue.
    Resume {
        /// Queue name.
        queue: String,
    },
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Prints the next fire times of a cron expression or an interval, in UTC and local time.
    ///
    /// Worked out locally: no API is needed. Examples:
    /// `sluice schedule next "0 9 * * 1-5" --tz Europe/Berlin --count 3`,
    /// `sluice schedule next 6h --every --weekdays 1,2,3,4,5 --hours 22-6`.
    Next(cadence::NextArgs),
    /// Creates a schedule, e.g. `sluice schedule create nightly --pipeline release --cron "0 2 * * *" --tz Europe/Berlin`.
    Create(schedules::CreateArgs),
    /// Lists schedules in name order.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only enabled schedules.
        #[arg(long, conflicts_with = "disabled")]
        enabled: bool,
        /// Only disabled schedules.
        #[arg(long)]
        disabled: bool,
        /// Page size (1 to 200).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Shows a schedule.
    Get {
        /// Schedule id or name.
        id: String,
    },
    /// Lists a schedule's runs, newest first: each fire with its execution and outcome, and
    /// each fire that started nothing (skipped, failed).
    Runs {
        /// Schedule id or name.
        id: String,
        /// Page size (1 to 200).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Fires a schedule now (refused while its target is busy, unless overlap is allow).
    RunNow {
        /// Schedule id or name.
        id: String,
    },
    /// Enables a schedule: its next run is the first fire time from now.
    Enable {
        /// Schedule id or name.
        id: String,
    },
    /// Disables a schedule: it fires no more until enabled (run-now still works).
    Disable {
        /// Schedule id or name.
        id: String,
    },
    /// Deletes a schedule and its history (the executions it started are kept).
    Delete {
        /// Schedule id or name.
        id: String,
    },
}

fn load(serve: &ServeArgs, mut extra: Vec<(&'static str, String)>) -> anyhow::Result<(config::Config, PathBuf)> {
    if let Some(url) = &serve.redis_url {
        extra.push(("redis.url", url.clone()));
    }
    config::load(serve.config.as_deref(), &Overrides(extra))
}

fn run_service<F, Fut>(serve: &ServeArgs, extra: Vec<(&'static str, String)>, f: F) -> i32
where
    F: FnOnce(config::Config, PathBuf, serve::Lifecycle) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let extra_again = extra.clone();
    let (cfg, base) = match load(serve, extra) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let set_filter = telemetry::init(&cfg.log.filter, &cfg.log.format);
    let loader: reload::ConfigLoader = {
        let serve = ServeArgs { config: serve.config.clone(), redis_url: serve.redis_url.clone() };
        let extra = extra_again;
        Box::new(move || load(&serve, extra.clone()))
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let shutdown = match signals::install() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return 1;
            }
        };
        if let Err(e) = reload::install(loader, set_filter) {
            tracing::error!(error = %e, "cannot install the SIGHUP handler");
            return 1;
        }
        let lifecycle = serve::Lifecycle { shutdown, systemd: systemd::Systemd::from_env() };
        match f(cfg, base, lifecycle).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "stopped with an error");
                1
            }
        }
    })
}

fn config_show(serve: &ServeArgs, json: bool) -> i32 {
    let (cfg, _) = match load(serve, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return 1;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())
    } else {
        toml::to_string_pretty(&cfg).map_err(|e| e.to_string())
    };
    match text {
        Ok(t) => {
            println!("{}", t.trim_end());
            0
        }
        Err(e) => {
            eprintln!("error: cannot print the configuration: {e}");
            1
        }
    }
}

fn validate(serve: &ServeArgs, files: &[PathBuf]) -> i32 {
    let mut problems = 0;
    let (cfg, base) = match load(serve, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return 1;
        }
    };
    let mut paths: Vec<(PathBuf, _)> = Vec::new();
    if let Some(dir) = &cfg.pipelines.dir {
        let dir = if dir.is_absolute() { dir.clone() } else { base.join(dir) };
        match files::read_pipeline_dir(&dir) {
            Ok(list) => paths.extend(list),
            Err(e) => {
                eprintln!("{e:#}");
                problems += 1;
            }
        }
    }
    for f in files.iter().filter(|f| f.file_name().and_then(|n| n.to_str()) != Some(files::SCHEDULES_FILE)) {
        match files::read_pipeline(f) {
            Ok(r) => paths.push((f.clone(), r)),
            Err(e) => {
                eprintln!("{e:#}");
                problems += 1;
            }
        }
    }
    for (path, result) in &paths {
        match result {
            Ok(p) => println!("ok: {} (pipeline `{}`, {} steps)", path.display(), p.id, p.steps.len()),
            Err(list) => {
                let is_toml = path.extension().is_none_or(|e| e != "json");
                let text = if is_toml { std::fs::read_to_string(path).unwrap_or_default() } else { String::new() };
                for p in list {
                    let at = match files::line_of(&text, &p.field) {
                        Some(line) => format!("{}:{line}", path.display()),
                        None => path.display().to_string(),
                    };
                    eprintln!("{at}: {}: {}", if p.field.is_empty() { "(file)" } else { &p.field }, p.message);
                    problems += 1;
                }
            }
        }
    }
    let dir = cfg.pipelines.dir.as_ref().map(|d| if d.is_absolute() { d.clone() } else { base.join(d) });
    problems += validate_schedules(dir.as_deref(), files);
    if problems == 0 {
        println!("configuration and {} pipeline file(s) are valid", paths.len());
        0
    } else {
        eprintln!("{problems} problem(s) found");
        1
    }
}

/// Checks the schedules the files define (`[[schedules]]` tables of the pipeline files of
/// `dir` and of `files`, and `schedules.toml`); prints each problem and returns how many.
fn validate_schedules(dir: Option<&std::path::Path>, files: &[PathBuf]) -> usize {
    let mut problems = 0;
    let mut list = Vec::new();
    if let Some(dir) = dir {
        match files::read_schedule_dir(dir) {
            Ok(found) => list.extend(found),
            Err(e) => {
                eprintln!("{e:#}");
                problems += 1;
            }
        }
    }
    for f in files {
        match files::read_schedules(f) {
            Ok(r) => list.push((f.clone(), r)),
            Err(e) => {
                eprintln!("{e:#}");
                problems += 1;
            }
        }
    }
    let mut count = 0;
    for (path, parsed) in list {
        match parsed {
            Ok(specs) => {
                for s in &specs {
                    println!("ok: {} (schedule `{}` of pipeline `{}`: {})", path.display(), s.name, s.pipeline, s.cadence);
                }
                count += specs.len();
            }
            Err(found) => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let pipeline_file = path.file_name().and_then(|n| n.to_str()) != Some(files::SCHEDULES_FILE);
                // A pipeline file that does not parse was reported with the pipelines already.
                for p in found.iter().filter(|p| !(pipeline_file && p.field.is_empty())) {
                    let at = match files::line_of(&text, &p.field) {
                        Some(line) => format!("{}:{line}", path.display()),
                        None => path.display().to_string(),
                    };
                    eprintln!("{at}: {}: {}", if p.field.is_empty() { "(file)" } else { &p.field }, p.message);
                    problems += 1;
                }
            }
        }
    }
    if problems == 0 && count > 0 {
        println!("{count} schedule(s) are valid");
    }
    problems
}

fn run_client(args: &ClientArgs, f: impl AsyncFnOnce(&client::Client) -> Result<i32, client::ClientError>) -> i32 {
    let c = match client::Client::new(&args.api, args.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            e.report();
            return e.exit_code();
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(f(&c)) {
        Ok(code) => code,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

/// Makes `sluice … | head` end quietly: printing to a closed pipe panics inside `println!`,
/// and this hook turns exactly that panic into the exit a shell expects (141, as if killed by
/// SIGPIPE) instead of a panic message. Every other panic is reported as before.
fn exit_quietly_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Prints the completion script of `shell`. A closed pipe (`| head`) is not an error.
fn completions(shell: clap_complete::Shell) -> i32 {
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            1
        }
    }
}

/// `sluice bench --cluster`.
fn bench_cluster(args: &BenchArgs, rt: &tokio::runtime::Runtime) -> i32 {
    let options = sluice_bench::cluster::ClusterOptions {
        seed: args.redis_url.clone(),
        shards: args.shards.clamp(1, 1024),
        jobs: args.jobs.max(1),
        workers: args.workers.max(1),
        concurrency: args.concurrency.max(1),
    };
    match rt.block_on(sluice_bench::cluster::run(&options)) {
        Ok(drain) if args.json => {
            println!("{}", serde_json::to_string_pretty(&drain).unwrap_or_default());
            0
        }
        Ok(drain) => {
            print!("{}", drain.text());
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// `sluice bench`.
fn bench(args: BenchArgs) -> i32 {
    let options = sluice_bench::Options {
        jobs: args.jobs.max(1),
        latency_samples: args.samples.max(1),
        pipelines: args.pipelines.max(1),
        concurrencies: args.concurrencies.iter().copied().filter(|c| *c > 0).collect(),
        backlogs: args.backlogs.iter().copied().filter(|b| *b > 0).collect(),
        apalis: !args.no_apalis,
        redis_benchmark: !args.no_redis_benchmark,
        ..sluice_bench::Options::new(args.redis_url.clone())
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    if args.cluster {
        return bench_cluster(&args, &rt);
    }
    match rt.block_on(sluice_bench::run(&options)) {
        Ok(report) if args.json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn main() {
    exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Up { serve, listen } => {
            let extra = listen.map(|l| vec![("api.listen", l)]).unwrap_or_default();
            run_service(&serve, extra, serve::up)
        }
        Command::Api { serve, listen } => {
            let extra = listen.map(|l| vec![("api.listen", l)]).unwrap_or_default();
            run_service(&serve, extra, serve::api)
        }
        Command::Worker { serve, queues, concurrency, metrics_listen } => {
            let mut extra = Vec::new();
            if let Some(c) = concurrency {
                extra.push(("worker.concurrency", c.to_string()));
            }
            extra.extend(metrics_listen.map(|a| ("metrics.listen", a)));
            let queues = queues.clone();
            run_service(&serve, extra, move |mut cfg, _base, lifecycle| async move {
                if let Some(q) = queues {
                    cfg.worker.queues = q;
                }
                serve::worker(cfg, lifecycle).await
            })
        }
        Command::Scheduler { serve, metrics_listen } => {
            let extra = metrics_listen.map(|a| vec![("metrics.listen", a)]).unwrap_or_default();
            run_service(&serve, extra, |cfg, _base, lifecycle| serve::scheduler(cfg, lifecycle))
        }
        Command::Validate { serve, files } => validate(&serve, &files),
        Command::Config { command: ConfigCommand::Show { serve, json } } => config_show(&serve, json),
        Command::Pipeline { command: PipelineCommand::Apply { file }, client } => {
            let json = client.json;
            run_client(&client, async move |c| client::pipeline_apply(c, &file, json).await.map(|()| 0))
        }
        Command::Exec { command, client } => {
            let json = client.json;
            match command {
                ExecCommand::Start { pipeline, input, target, idempotency_key, wait } => {
                    run_client(&client, async move |c| {
                        let input = client::parse_input(input.as_deref())?;
                        client::exec_start(c, &pipeline, input, target, idempotency_key, wait, json).await
                    })
                }
                ExecCommand::Get { id } => run_client(&client, async move |c| client::exec_get(c, &id, json).await.map(|()| 0)),
                ExecCommand::List { status, pipeline, target, limit, cursor } => run_client(&client, async move |c| {
                    let filter = client::ListFilter { status, pipeline, target, limit, cursor };
                    client::exec_list(c, &filter, json).await.map(|()| 0)
                }),
                ExecCommand::Cancel { id, reason } => {
                    run_client(&client, async move |c| client::exec_action(c, &id, "cancel", reason, None, false, json).await)
                }
                ExecCommand::Retry { id, reason, wait } => {
                    run_client(&client, async move |c| client::exec_action(c, &id, "retry", reason, None, wait, json).await)
                }
                ExecCommand::Restart { id, from_step, reason, wait } => run_client(&client, async move |c| {
                    client::exec_action(c, &id, "restart", reason, Some(from_step), wait, json).await
                }),
                ExecCommand::Pause { id, reason } => {
                    run_client(&client, async move |c| client::exec_action(c, &id, "pause", reason, None, false, json).await)
                }
                ExecCommand::Approve { id, step, comment } => run_client(&client, async move |c| {
                    client::exec_vote(c, &id, &step, "approve", comment.map(|t| ("comment", t)), json).await
                }),
                ExecCommand::Reject { id, step, reason } => run_client(&client, async move |c| {
                    client::exec_vote(c, &id, &step, "reject", Some(("reason", reason)), json).await
                }),
                ExecCommand::RequestChanges { id, step, feedback } => run_client(&client, async move |c| {
                    client::exec_vote(c, &id, &step, "request-changes", Some(("feedback", feedback)), json).await
                }),
                ExecCommand::Resume { id, reason } => {
                    run_client(&client, async move |c| client::exec_action(c, &id, "resume", reason, None, false, json).await)
                }
                ExecCommand::Events { id } => run_client(&client, async move |c| client::exec_events(c, &id, json).await.map(|()| 0)),
            }
        }
        Command::Events { after, execution, kind, follow, client } => {
            let options = events::Options { after, execution, kind, follow, json: client.json };
            run_client(&client, async move |c| events::run(c, &options).await)
        }
        Command::Job { command, client } => {
            let json = client.json;
            match command {
                JobCommand::Enqueue { spec, wait } => run_client(&client, async move |c| client::job_enqueue(c, &spec, wait, json).await),
                JobCommand::Get { id } => run_client(&client, async move |c| client::job_get(c, &id, json).await.map(|()| 0)),
                JobCommand::Cancel { id } => run_client(&client, async move |c| client::job_cancel(c, &id, json).await.map(|()| 0)),
            }
        }
        Command::Queue { command, client } => {
            let json = client.json;
            match command {
                QueueCommand::Stats { queue } => run_client(&client, async move |c| client::queue_stats(c, queue.as_deref(), json).await.map(|()| 0)),
                QueueCommand::Pause { queue } => run_client(&client, async move |c| client::queue_action(c, &queue, "pause", json).await.map(|()| 0)),
                QueueCommand::Resume { queue } => run_client(&client, async move |c| client::queue_action(c, &queue, "resume", json).await.map(|()| 0)),
            }
        }
        Command::Schedule { command, client } => {
            let json = client.json;
            match command {
                ScheduleCommand::Next(args) => cadence::next(&args, json),
                ScheduleCommand::Create(args) => run_client(&client, async move |c| schedules::create(c, &args, json).await.map(|()| 0)),
                ScheduleCommand::List { pipeline, target, enabled, disabled, limit, cursor } => run_client(&client, async move |c| {
                    let enabled = match (enabled, disabled) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    };
                    let filter = schedules::ListFilter { pipeline, target, enabled, limit, cursor };
                    schedules::list(c, &filter, json).await.map(|()| 0)
                }),
                ScheduleCommand::Get { id } => run_client(&client, async move |c| schedules::get(c, &id, json).await.map(|()| 0)),
                ScheduleCommand::Runs { id, limit, cursor } => {
                    run_client(&client, async move |c| schedules::runs(c, &id, limit, cursor.as_deref(), json).await.map(|()| 0))
                }
                ScheduleCommand::RunNow { id } => run_client(&client, async move |c| schedules::run_now(c, &id, json).await.map(|()| 0)),
                ScheduleCommand::Enable { id } => {
                    run_client(&client, async move |c| schedules::set_enabled(c, &id, true, json).await.map(|()| 0))
                }
                ScheduleCommand::Disable { id } => {
                    run_client(&client, async move |c| schedules::set_enabled(c, &id, false, json).await.map(|()| 0))
                }
                ScheduleCommand::Delete { id } => run_client(&client, async move |c| schedules::delete(c, &id, json).await.map(|()| 0)),
            }
        }
        Command::Health { live, client } => {
            let json = client.json;
            let path = if live { "/healthz" } else { "/readyz" };
            run_client(&client, async move |c| Ok(client::health(c, path, json).await))
        }
        Command::Completions { shell } => completions(shell),
        Command::Bench(args) => bench(args),
    };
    std::process::exit(code);
}
