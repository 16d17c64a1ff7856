//! The whole service in one call: the gRPC API ([`tern_server`]), the metrics endpoint, the policy
//! watcher with its activation loop, the daemon, and (on the system clock) the cron loop, all
//! sharing one stop signal. `tern serve` maps its flags onto a [`ServiceConfig`] and calls
//! [`start`]; tests and the demo do the same in process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tern_policy::{WatchOptions, Watcher};
use tern_server::{serve_metrics, ManualClock, Metrics, ServeOptions, Tokens};
use tern_store::Store;
use tokio::net::TcpListener;

use crate::{Daemon, DaemonConfig, Error, Training};

/// What the service is started with: plain data, no flags.
pub struct ServiceConfig {
    /// Where the gRPC API listens (port 0: any free port; [`Service::address`] says which).
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served (`GET /metrics`).
    pub metrics_listen: SocketAddr,
    /// The policy bundle directory, followed for changes.
    pub policies: PathBuf,
    /// Between two reads of the policy directory.
    pub policy_poll: Duration,
    /// How long the policy files must stay unchanged before they are validated.
    pub policy_settle: Duration,
    /// Bearer tokens; none means no authentication.
    pub tokens: Tokens,
    /// TLS certificate chain and private key (PEM); plaintext when absent.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Largest accepted request, in bytes.
    pub max_message_bytes: usize,
    /// Between health turning NOT_SERVING and the listener closing.
    pub drain_delay: Duration,
    /// Simulation mode: the clock starts here and moves only through `AdvanceClock`.
    pub simulate_from: Option<DateTime<Utc>>,
    /// Model training on a schedule, if any.
    pub training: Option<Training>,
    /// This replica's name in `cron_runs`.
    pub holder: String,
    /// How full replans are paged.
    pub paging: crate::Paging,
    /// Where the policy loop's lines go (`activated <version> ...`, `rejected <digest> ...`):
    /// `tern serve` prints them; [`ServiceConfig::local`] logs them.
    pub announce: fn(&str),
}

impl ServiceConfig {
    /// Loopback on free ports, the given policies, quick policy polling, no tokens, no TLS:
    /// what a test or an in-process simulation wants, before it changes what it needs.
    pub fn local(policies: impl Into<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            policies: policies.into(),
            policy_poll: Duration::from_millis(50),
            policy_settle: Duration::from_millis(100),
            tokens: Tokens::none(),
            tls: None,
            max_message_bytes: ServeOptions::default().max_message_bytes,
            drain_delay: Duration::ZERO,
            simulate_from: None,
            training: None,
            holder: crate::cron::holder(),
            paging: crate::Paging::default(),
            announce: |line| tracing::info!("{line}"),
        }
    }
}

/// A service started in this process: the API, the metrics endpoint, the policy loop and (on
/// the system clock) the cron loop.
pub struct Service {
    /// Where the gRPC API listens.
    pub address: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_address: SocketAddr,
    /// The daemon behind the API.
    pub daemon: Arc<Daemon>,
    /// The gRPC server; it ends when the service stops (or fails).
    pub server: tokio::task::JoinHandle<Result<(), tern_server::ServeError>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Asks everything to stop: health turns NOT_SERVING, new work is refused, in-flight calls
    /// finish.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the server to drain, at most `grace`, then ends the background tasks.
    pub async fn finish(mut self, grace: Duration) -> Result<(), Error> {
        let result = match tokio::time::timeout(grace, &mut self.server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "the grace period ended with connections still open; exiting"
                );
                self.server.abort();
                Ok(Ok(()))
            }
        };
        for t in &self.tasks {
            t.abort();
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Serve(e.to_string())),
            Err(e) => Err(Error::Serve(format!("the server task failed: {e}"))),
        }
    }

    /// Ends the background tasks: for a caller whose server ended on its own (it failed).
    pub fn abort_background(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops and waits at most `grace`: what a test does at its end.
    pub async fn shutdown(self, grace: Duration) -> Result<(), Error> {
        self.stop();
        self.finish(grace).await
    }
}

/// Loads the policies and starts serving on `store`. A bundle that does not load is refused
/// before anything listens ([`Error::InvalidBundle`], with every finding).
pub async fn start(store: Store, config: ServiceConfig) -> Result<Service, Error> {
    store.check_schema().await?;
    let watcher = match Watcher::start(
        &config.policies,
        WatchOptions {
            poll_interval: config.policy_poll,
            settle: config.policy_settle,
        },
    ) {
        Ok(w) => Arc::new(w),
        Err(findings) => {
            return Err(Error::InvalidBundle {
                dir: config.policies.clone(),
                findings,
            })
        }
    };
    let active = watcher.active();
    let unrecorded = crate::activate::record(&store, &active)
        .await
        .err()
        .map(|()| active.clone());

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener.local_addr()?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            Error::Io(format!(
                "cannot listen on {} for metrics: {e}",
                config.metrics_listen
            ))
        })?;
    let metrics_address = metrics_listener.local_addr()?;
    let metrics = Metrics::new();
    metrics.set_info("tern_policy_info", "version", &active.version);
    let simulated = config.simulate_from.map(|t| Arc::new(ManualClock::new(t)));
    let daemon = Arc::new(Daemon::new(
        store.clone(),
        watcher.clone(),
        metrics.clone(),
        DaemonConfig {
            holder: config.holder,
            simulated: simulated.clone(),
            training: config.training,
            paging: config.paging,
        },
    ));
    let api = tern_server::api(
        store.clone(),
        daemon.clock(),
        daemon.clone(),
        metrics.clone(),
    );

    // One stop signal, seen by the server, the policy loop, the metrics and the cron loop.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let events = crate::activate::forward(&watcher);
    let announce = config.announce;
    let mut tasks = Vec::new();
    {
        let store = store.clone();
        let stop = stopped(stop_rx.clone());
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move {
            crate::activate::run_loop(&store, unrecorded, events, stop, Some(metrics), announce)
                .await
        }));
    }
    tasks.push(tokio::spawn(serve_metrics(
        metrics_listener,
        metrics,
        stopped(stop_rx.clone()),
    )));
    // On a simulated clock the driver runs the cron jobs through AdvanceClock.
    if simulated.is_none() {
        tasks.push(tokio::spawn(crate::run_cron(
            daemon.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    let server = tokio::spawn(tern_server::serve(
        listener,
        api,
        ServeOptions {
            max_message_bytes: config.max_message_bytes,
            drain_delay: config.drain_delay,
            tokens: config.tokens,
            tls: config.tls,
            ..ServeOptions::default()
        },
        stopped(stop_rx.clone()),
    ));
    Ok(Service {
        address,
        metrics_address,
        daemon,
        server,
        stop,
        tasks,
    })
}
