//! `tern serve`: the daemon. The gRPC API ([`tern_server`]), the policy watcher, replans, and a
//! graceful shutdown on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tern_daemon::train::{Labels, TrainSettings};
use tern_daemon::{Service, ServiceConfig, Training};
use tern_model::TrainConfig;
use tern_policy::CronSchedule;
use tern_server::Tokens;
use tern_store::Store;

use crate::activate;
use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the gRPC API listens (port 0: any free port, printed on start).
    #[arg(long, env = "TERN_LISTEN", default_value = "0.0.0.0:50051")]
    pub(crate) listen: SocketAddr,
    /// Where Prometheus metrics are served (`GET /metrics`, plain HTTP).
    #[arg(long, env = "TERN_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub(crate) metrics_listen: SocketAddr,
    /// The policy bundle directory, followed for changes.
    #[arg(long, env = "TERN_POLICIES", default_value = "policies")]
    pub(crate) policies: PathBuf,
    /// Seconds that in-flight calls get to finish after SIGTERM before the process exits.
    #[arg(long, env = "TERN_SHUTDOWN_GRACE", default_value_t = 20)]
    pub(crate) shutdown_grace: u64,
    /// Milliseconds between health turning NOT_SERVING and the listener closing, for load
    /// balancers to notice.
    #[arg(long, env = "TERN_DRAIN_DELAY_MS", default_value_t = 0)]
    pub(crate) drain_delay_ms: u64,
    /// Milliseconds between two reads of the policy directory.
    #[arg(long, env = "TERN_POLICY_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(crate) policy_poll_ms: u64,
    /// Milliseconds the policy files must stay unchanged before they are validated.
    #[arg(long, env = "TERN_POLICY_SETTLE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(crate) policy_settle_ms: u64,
    /// Bearer tokens, one client per line: `NAME TOKEN SCOPES`, SCOPES a comma-separated list
    /// of submit, pull:CHANNEL, pull:*, ack, report, users, admin, read, or `*` for all (see
    /// deploy/README.md). Without it, no authentication.
    #[arg(long, env = "TERN_TOKENS")]
    pub(crate) tokens: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, gRPC is served over TLS.
    #[arg(long, env = "TERN_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TERN_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// A full replan has one page per this many open opportunities; each page is read,
    /// planned and published on its own, so a replan's memory follows the page, not the
    /// population.
    #[arg(long, env = "TERN_PAGE_OPPORTUNITIES", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(100..=100_000_000))]
    pub(crate) page_opportunities: u64,
    /// Seconds a replica holds a page of a full replan before another replica may take it
    /// over (it died, or is too slow).
    #[arg(long, env = "TERN_PAGE_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) page_lease_secs: u64,
    /// Pages of a full replan this replica plans at once: while one page is read or published
    /// by PostgreSQL, another is planned here.
    #[arg(long, env = "TERN_PAGE_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) page_workers: u32,
    /// Largest accepted request, in bytes.
    #[arg(long, env = "TERN_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub(crate) max_message_bytes: usize,
    /// Simulation mode: the daemon's clock starts at this instant (RFC 3339) and moves only
    /// when `AdminService.AdvanceClock` moves it, which also runs the cron jobs due by then.
    /// For `tern demo` and other simulations; never in production.
    #[arg(long, env = "TERN_SIMULATE_FROM")]
    pub(crate) simulate_from: Option<DateTime<Utc>>,
    /// Train the model on this cron schedule (UTC, `sec min hour day month weekday`), e.g.
    /// "0 0 2 * * *" for nightly; one replica runs each firing.
    #[arg(long, env = "TERN_TRAIN_SCHEDULE")]
    pub(crate) train_schedule: Option<String>,
    /// Days of history each scheduled training reads.
    #[arg(long, env = "TERN_TRAIN_DAYS", default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(crate) train_days: u32,
    /// The retention label of scheduled training: active in the last week of this many days
    /// after a send (see `tern train --retention-days`).
    #[arg(long, env = "TERN_TRAIN_RETENTION_DAYS", default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub(crate) train_retention_days: u32,
    /// The engagement label of scheduled training: opened or clicked within this many hours.
    #[arg(long, env = "TERN_TRAIN_ENGAGEMENT_HOURS", default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub(crate) train_engagement_hours: u32,
    /// Promote each scheduled model that beats the base rate on validation.
    #[arg(long, env = "TERN_TRAIN_PROMOTE")]
    pub(crate) train_promote: bool,
    /// Without DATABASE_URL, serve from a private throwaway PostgreSQL that is deleted on exit,
    /// with everything stored in it. Without this flag, a missing DATABASE_URL is refused.
    #[arg(long)]
    pub(crate) ephemeral: bool,
}

/// Maps the flags onto a [`ServiceConfig`] (everything that can be wrong with the command line
/// is found before anything starts) and starts the service on `store`.
pub async fn start(store: Store, args: &ServeArgs) -> Result<Service> {
    let tokens = match &args.tokens {
        Some(path) => Tokens::load(path)?,
        None => Tokens::none(),
    };
    for warning in tokens.warnings() {
        eprintln!("warning: {warning}");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        )),
        _ => None,
    };
    let training = match &args.train_schedule {
        None => None,
        Some(expr) => Some(Training {
            schedule: CronSchedule::parse(expr)
                .map_err(|e| anyhow::anyhow!("--train-schedule: {e}"))?,
            settings: TrainSettings {
                days: args.train_days,
                valid_fraction: 0.25,
                config: TrainConfig::default(),
                labels: Labels {
                    retention_days: args.train_retention_days,
                    engagement_hours: args.train_engagement_hours,
                    ..Labels::default()
                },
                max_weight: tern_daemon::train::MAX_WEIGHT,
                work_dir: std::env::temp_dir(),
                progress: None,
            },
            promote: args.train_promote,
        }),
    };
    let config = ServiceConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        policies: args.policies.clone(),
        policy_poll: Duration::from_millis(args.policy_poll_ms),
        policy_settle: Duration::from_millis(args.policy_settle_ms),
        tokens,
        tls,
        max_message_bytes: args.max_message_bytes,
        drain_delay: Duration::from_millis(args.drain_delay_ms),
        simulate_from: args.simulate_from,
        training,
        holder: tern_daemon::cron::holder(),
        paging: tern_daemon::Paging {
            page_opportunities: args.page_opportunities,
            lease: chrono::TimeDelta::seconds(args.page_lease_secs as i64),
            workers: args.page_workers,
        },
        announce: crate::output::say,
    };
    match tern_daemon::service::start(store, config).await {
        Ok(service) => Ok(service),
        Err(e @ tern_daemon::Error::InvalidBundle { .. }) => {
            if let tern_daemon::Error::InvalidBundle { findings, .. } = &e {
                eprint!("{}", findings.to_text());
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(url: Option<&str>, args: ServeArgs) -> Result<ExitCode> {
    // A daemon whose environment lost DATABASE_URL must not quietly serve from a database that
    // vanishes, with everything acknowledged to it, on the next restart.
    if url.is_none() && !args.ephemeral {
        eprintln!(
            "error: DATABASE_URL is not set: set it (or --database-url) to the database tern \
             keeps its state in, or pass --ephemeral to serve from a throwaway database that is \
             deleted on exit"
        );
        return Ok(ExitCode::from(2));
    }
    if url.is_some() && args.ephemeral {
        eprintln!(
            "error: --ephemeral serves from a throwaway database, but DATABASE_URL is set too; \
             drop one of them"
        );
        return Ok(ExitCode::from(2));
    }
    let db = Database::open(url).await?;
    let mut started = start(db.store.clone(), &args).await?;
    let bundle = started.daemon.active_policy();
    crate::output::say(&format!(
        "serving tern.v1 on {}, metrics on {}, policy {} ({} documents){}",
        started.address,
        started.metrics_address,
        bundle.version,
        bundle.documents().len(),
        match args.simulate_from {
            Some(t) => format!(", simulated clock from {}", t.to_rfc3339()),
            None => String::new(),
        }
    ));
    let result = tokio::select! {
        r = &mut started.server => {
            started.abort_background();
            r.context("the server task failed").and_then(|r| r.map_err(Into::into))
        }
        () = activate::shutdown_signal() => {
            started.stop();
            started.finish(Duration::from_secs(args.shutdown_grace)).await.map_err(Into::into)
        }
    };
    db.close().await;
    result?;
    crate::output::say("stopped");
    Ok(ExitCode::SUCCESS)
}
