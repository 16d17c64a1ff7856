//! `tern serve`: the daemon. The gRPC API ([`tern_server`]), the policy watcher, replans, and a
//! graceful shutdown on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tern_policy::{WatchOptions, Watcher};
use tern_server::{serve_metrics, Metrics, ServeOptions, SystemClock, Tokens};
use tokio::net::TcpListener;

use crate::activate;
use crate::daemon::Daemon;
use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the gRPC API listens (port 0: any free port, printed on start).
    #[arg(long, env = "TERN_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Where Prometheus metrics are served (`GET /metrics`, plain HTTP).
    #[arg(long, env = "TERN_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// The policy bundle directory, followed for changes.
    #[arg(long, env = "TERN_POLICIES", default_value = "policies")]
    policies: PathBuf,
    /// Seconds that in-flight calls get to finish after SIGTERM before the process exits.
    #[arg(long, env = "TERN_SHUTDOWN_GRACE", default_value_t = 20)]
    shutdown_grace: u64,
    /// Milliseconds between health turning NOT_SERVING and the listener closing, for load
    /// balancers to notice.
    #[arg(long, env = "TERN_DRAIN_DELAY_MS", default_value_t = 0)]
    drain_delay_ms: u64,
    /// Milliseconds between two reads of the policy directory.
    #[arg(long, env = "TERN_POLICY_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    policy_poll_ms: u64,
    /// Milliseconds the policy files must stay unchanged before they are validated.
    #[arg(long, env = "TERN_POLICY_SETTLE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    policy_settle_ms: u64,
    /// Bearer tokens, one client per line: `NAME TOKEN CHANNELS` (channels it may pull,
    /// comma-separated, or `*`). Without it, no authentication.
    #[arg(long, env = "TERN_TOKENS")]
    tokens: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, gRPC is served over TLS.
    #[arg(long, env = "TERN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TERN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest accepted request, in bytes.
    #[arg(long, env = "TERN_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
}

pub async fn run(url: Option<&str>, args: ServeArgs) -> Result<ExitCode> {
    // Everything that can be wrong with the command line is found before the database is touched.
    let tokens = match &args.tokens {
        Some(path) => Tokens::load(path)?,
        None => Tokens::none(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        )),
        _ => None,
    };
    let db = Database::open(url).await?;
    db.store.check_schema().await?;
    let watcher = match Watcher::start(
        &args.policies,
        WatchOptions {
            poll_interval: Duration::from_millis(args.policy_poll_ms),
            settle: Duration::from_millis(args.policy_settle_ms),
        },
    ) {
        Ok(w) => Arc::new(w),
        Err(findings) => {
            eprint!("{}", findings.to_text());
            bail!(
                "{} is not a valid policy bundle; not starting without a valid policy",
                args.policies.display()
            );
        }
    };
    let active = watcher.active();
    let unrecorded = activate::record(&db.store, &active)
        .await
        .err()
        .map(|()| active.clone());

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let metrics_address = metrics_listener.local_addr()?;
    let metrics = Metrics::new();
    metrics.set_info("tern_policy_info", "version", &active.version);
    let clock = Arc::new(SystemClock);
    let daemon = Arc::new(Daemon::new(
        db.store.clone(),
        watcher.clone(),
        clock.clone(),
        metrics.clone(),
    ));
    let api = tern_server::api(
        db.store.clone(),
        clock.clone(),
        daemon.clone(),
        metrics.clone(),
    );

    // One shutdown signal, seen by the server, the policy loop and the grace timer.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        activate::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let events = activate::forward(&watcher);
    let policy_loop = {
        let store = db.store.clone();
        let stop = stopped(stop_rx.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            activate::run_loop(&store, unrecorded, events, stop, Some(metrics)).await
        })
    };
    let metrics_loop = tokio::spawn(serve_metrics(
        metrics_listener,
        metrics,
        stopped(stop_rx.clone()),
    ));
    let cron_loop = {
        let stop = stopped(stop_rx.clone());
        tokio::spawn(crate::cron::run(
            daemon,
            db.store.clone(),
            watcher.clone(),
            clock,
            crate::cron::holder(),
            stop,
        ))
    };
    let mut server = tokio::spawn(tern_server::serve(
        listener,
        api,
        ServeOptions {
            max_message_bytes: args.max_message_bytes,
            drain_delay: Duration::from_millis(args.drain_delay_ms),
            tokens,
            tls,
        },
        stopped(stop_rx.clone()),
    ));
    activate::say(&format!(
        "serving tern.v1 on {address}, metrics on {metrics_address}, policy {} ({} documents)",
        active.version,
        active.documents().len()
    ));

    let grace = Duration::from_secs(args.shutdown_grace);
    let result = tokio::select! {
        r = &mut server => r,
        () = stopped(stop_rx.clone()) => match tokio::time::timeout(grace, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("warning: the {}s grace period ended with connections still open; exiting", args.shutdown_grace);
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    policy_loop.abort();
    cron_loop.abort();
    metrics_loop.abort();
    db.close().await;
    result.context("the server task failed")??;
    activate::say("stopped");
    Ok(ExitCode::SUCCESS)
}
