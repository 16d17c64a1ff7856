//! `tern`: the daemon and its command-line tool.
//!
//! The daemon and the analyses are libraries (`tern-daemon`, `tern-analysis`); this crate is
//! the command line around them.
//!
//! # Layout
//! - `main.rs` (this file): the command line (clap), logging, and the one place where errors
//!   become a single `error: ...` line and an exit code.
//! - `db.rs`: `DATABASE_URL`, or a private throwaway PostgreSQL when it is unset.
//! - `config.rs`: `--config FILE`, settings from a TOML file.
//! - `output.rs`: stdout that survives a closed pipe.
//! - Thin command files, flags mapped onto the libraries: `migrate.rs`, `policy.rs` (`tern
//!   policy check|diff|schema|simulate`), `activate.rs` (`tern policy watch`), `plan.rs` (`tern
//!   plan`), `train.rs` (`tern train`), `registry.rs` (`tern model ...`), `serve.rs` (`tern
//!   serve`: flags onto `tern_daemon::ServiceConfig`, then SIGTERM), `experiment.rs` (`tern
//!   experiment report`), `evaluate.rs` (`tern evaluate`, `tern policy simulate` and their
//!   renderings), `coverage.rs` (`tern bench ope`), `bench.rs` (`tern bench ingest|plan|...`,
//!   the benchmarks behind docs/benchmarks.md).
//! - `demo/` and `report/`: `tern demo`, the simulated population driven through the gRPC API
//!   of an in-process service (`driver.rs`), beside the no-planner baseline (`fcfs.rs`) and
//!   checked by its own cap checker (`caps.rs`); and its HTML page (`page.rs`, with the SVG
//!   charting kit in `svg.rs`).
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (clap's convention).

mod activate;
mod bench;
mod bench_replan;
mod config;
mod coverage;
mod db;
mod demo;
mod evaluate;
mod experiment;
mod migrate;
mod output;
mod plan;
mod policy;
mod registry;
mod report;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tern decides which message reaches which user, through which channel and when — or that
/// nothing should be sent.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, propagate_version = true)]
struct Cli {
    /// PostgreSQL connection string. When unset, commands that need a database start a private
    /// throwaway PostgreSQL from the locally installed server binaries and remove it on exit.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Settings from a TOML file, with the flags' names (`listen = "0.0.0.0:50051"`). Flags and
    /// environment variables take precedence over it.
    #[arg(long, env = "TERN_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,

    /// Log lines as human-readable text or as one JSON object per line (for log collectors).
    /// The filter is TERN_LOG (e.g. `info`, `tern=debug`).
    #[arg(
        long,
        env = "TERN_LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole loop on a simulated population whose truth tern never sees: submit, plan,
    /// deliver, report, train nightly; a summary per day, an optional HTML report, and
    /// (with --compare) tern against first-come-first-served and greedy-on-click.
    Demo(demo::DemoArgs),
    /// Apply the database migrations embedded in this binary (safe to run from several replicas
    /// at once), or list them with --status.
    Migrate(migrate::Args),
    /// Check a policy bundle, diff two bundles, print the policy language's JSON Schema, or
    /// follow a bundle directory as the daemon does.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the planner offline on a JSON Lines file of users, under a policy bundle, and write
    /// the schedule and the suppression reasons as JSON Lines (or explain one user's plan).
    Plan(plan::PlanArgs),
    /// Run the daemon: the gRPC API for upstream systems, delivery services and operators, the
    /// policy watcher, and replans.
    Serve(serve::ServeArgs),
    /// Learn the outcome model from the history in the database, evaluate it on a later period
    /// beside two baselines, and register it (optionally promote it).
    Train(train::TrainArgs),
    /// List, inspect, promote, roll back and export registered models.
    #[command(subcommand)]
    Model(registry::ModelCommand),
    /// Measure tern's own hot paths against their naive baselines (release builds only).
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Report on a running experiment: each arm's users, messages and outcomes, differences
    /// against control with intervals, the sample-ratio check and the guardrails' verdict.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Estimate from the logged decisions what a candidate policy bundle would have earned, per
    /// objective (IPS, SNIPS and doubly robust, with bootstrap intervals), before it ships.
    Evaluate(evaluate::EvaluateArgs),
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(path) = &cli.config {
        match config::settings(path) {
            Ok(settings) => {
                for (var, value) in settings {
                    // Single-threaded still: nothing else reads the environment yet.
                    std::env::set_var(var, value);
                }
                cli = Cli::parse();
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    // A report piped into `head` ends when the reader goes away, as for any Unix tool, instead
    // of panicking on the first write to the closed pipe. The long-running commands keep
    // ignoring SIGPIPE: a daemon must not die because its stdout reader did.
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        // SAFETY: called before any thread is started; it only resets one signal's handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let url = cli.database_url.as_deref().filter(|u| !u.is_empty());
        match cli.command {
            Command::Demo(args) => demo::run(url, args).await,
            Command::Migrate(args) => migrate::run(url, args).await,
            Command::Bench(bench) => bench::run(url, bench).await,
            Command::Policy(cmd) => policy::run(url, cmd).await,
            Command::Plan(args) => plan::run(args),
            Command::Train(args) => train::run(url, args).await,
            Command::Serve(args) => serve::run(url, args).await,
            Command::Model(cmd) => registry::run(url, cmd).await,
            Command::Experiment(cmd) => experiment::run(url, cmd).await,
            Command::Evaluate(args) => evaluate::run(url, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, the whole causal chain, no backtrace: the reader is an operator.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
