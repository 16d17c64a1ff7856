//! tern's gRPC API (`proto/tern/v1`, package `tern.v1`), and the only crate that speaks gRPC.
//!
//! # Layout
//! - [`pb`]: the types and service traits generated from the `.proto` files at build time.
//! - [`Api`] (in `api.rs`): one value implementing every service, over the [`Store`], a
//!   [`Clock`] and a [`Control`] for what the daemon itself does (replans, status).
//! - `convert.rs`: wire ↔ domain conversions, each refusing malformed input with a sentence.
//! - `errors.rs`: store and control errors → gRPC status codes, in one place.
//! - [`metrics`]: the Prometheus registry and the `/metrics` endpoint.
//! - [`serve`]: the server with health (NOT_SERVING while the database does not answer),
//!   reflection (`grpc.reflection.v1` and `v1alpha`), message-size limits, the token check
//!   ([`auth`]) and graceful shutdown.
//!
//! # Invariants
//! - A malformed request changes nothing and gets INVALID_ARGUMENT with what is wrong; a batch
//!   is checked whole before anything is written, except opportunity rows, which are reported
//!   one by one (a bad row must not block the good ones of an upstream system).
//! - A database that is away is UNAVAILABLE (retryable, nothing was written), never INTERNAL.
//! - Handlers read time from the [`Clock`], never from the system directly, so a simulation can
//!   drive tern's time.

mod api;
pub mod auth;
mod convert;
mod errors;
mod limit;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tonic::transport::Server;

pub use api::{Api, MAX_BATCH, MAX_EVENT_USERS};
pub use auth::{AuthLayer, Scope, Tokens, TokensError};
pub use errors::ControlError;
pub use metrics::{serve_metrics, Metrics};

/// The generated protocol types and service traits.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tern.v1");
}

impl pb::AckItem {
    /// The ack that reports a leased item as sent: what a delivery service sends after
    /// handing the item to its provider.
    pub fn sent(item: &pb::LeasedItem) -> pb::AckItem {
        pb::AckItem {
            user_id: item.user_id.clone(),
            item_id: item.item_id,
            lease_token: item.lease_token.clone(),
            status: pb::AckStatus::Sent as i32,
        }
    }
}

/// A time as the wire carries it.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    convert::time(t)
}

/// The encoded descriptors of every tern.v1 file (and the well-known types they import), served
/// by reflection so that `grpcurl` works without the `.proto` files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tern_descriptor.bin"));

/// Where handlers get the current time. The daemon uses the system clock; a simulation can
/// substitute its own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: tern's simulation mode (`tern serve --simulate-from`,
/// `tern demo`), where a driver advances time through `AdminService.AdvanceClock` and simulated
/// weeks pass in minutes.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new(start))
    }

    /// Moves the clock to `to`; refused (returning the current time) when `to` is earlier,
    /// because time that runs backwards would let leases and plans run backwards too.
    pub fn advance(&self, to: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if to < *now {
            return Err(*now);
        }
        *now = to;
        Ok(())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A plan's summary, as `AdminService.Replan` and `GetStatus` report it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplanSummary {
    pub plan_id: i64,
    pub trigger: String,
    pub policy_version: String,
    pub model_version: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub published_at: Option<DateTime<Utc>>,
    pub candidates: u64,
    pub chosen_per_channel: std::collections::BTreeMap<String, u64>,
    pub suppressed_per_reason: std::collections::BTreeMap<String, u64>,
    pub duration_seconds: f64,
}

/// The daemon's state, as `AdminService.GetStatus` reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DaemonStatus {
    pub policy_version: Option<String>,
    pub last_reload_error: Option<String>,
    pub rejected_policy_version: Option<String>,
    pub model_version: Option<String>,
    pub recent_plans: Vec<ReplanSummary>,
    /// Replan document name and its next run.
    pub next_runs: Vec<(String, DateTime<Utc>)>,
    pub serving: bool,
}

/// What the daemon does beyond storing and serving data: planning and reporting its state. The
/// binary implements it; this crate only exposes it over gRPC.
#[tonic::async_trait]
pub trait Control: Send + Sync + 'static {
    /// Plans now (only `users` when not empty) and publishes the schedule.
    async fn replan(&self, users: Vec<String>) -> Result<ReplanSummary, ControlError>;
    async fn status(&self) -> Result<DaemonStatus, ControlError>;
    /// Runs the event-triggered generators of the active policy on these (validated) events.
    async fn submit_events(&self, events: Vec<Event>) -> Result<EventsSummary, ControlError>;
    /// Simulation mode: moves the clock to `to` and runs the cron jobs that fell due; returns
    /// each job run with its firing.
    async fn advance_clock(
        &self,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, ControlError>;
    /// Called once `Submit` has stored new opportunities, with each one's user and priority
    /// class: the daemon plans at once the users who got a message that must go out now.
    async fn submitted(&self, _created: &[(String, String)]) {}
    /// The names the active policy declares, which `Submit` holds each row to; `None` when
    /// there is no policy to hold them to (every well-formed name is accepted then).
    fn vocabulary(&self) -> Option<Vocabulary> {
        None
    }
}

/// The names an opportunity may use: what the active policy declares. A row naming anything
/// else would only ever be suppressed (an unknown channel) or silently escape the rules meant
/// for it (an undeclared category, a misspelt priority class), so `Submit` refuses it at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vocabulary {
    /// The priority classes of the policy language.
    pub priorities: Vec<String>,
    /// The declared channels.
    pub channels: Vec<String>,
    /// The declared categories; empty when the policy declares none (any name is accepted).
    pub categories: Vec<String>,
}

impl Vocabulary {
    /// Why a row's names are not all declared, naming the ones that are.
    pub fn check(&self, priority: &str, channels: &[String], category: &str) -> Result<(), String> {
        if !self.priorities.iter().any(|p| p == priority) {
            return Err(format!(
                "priority {priority:?} is not a priority class; use one of: {}",
                self.priorities.join(", ")
            ));
        }
        if let Some(c) = channels.iter().find(|c| !self.channels.contains(c)) {
            return Err(format!(
                "channel {c:?} is not declared by the active policy; declared: {}",
                self.channels.join(", ")
            ));
        }
        if !self.categories.is_empty() && !self.categories.iter().any(|c| c == category) {
            return Err(format!(
                "category {category:?} is not declared by the active policy; declared: {}",
                self.categories.join(", ")
            ));
        }
        Ok(())
    }
}

/// An upstream event, validated: a name for its type, a non-empty id, at least one user id,
/// finite numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub event_type: String,
    pub event_id: String,
    pub user_ids: Vec<String>,
    pub numbers: std::collections::BTreeMap<String, f64>,
    pub strings: std::collections::BTreeMap<String, String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// What the generators made of a batch of events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventsSummary {
    pub opportunities_created: u64,
    /// Opportunities the generators proposed that existed already (same user and dedupe key).
    pub opportunities_duplicate: u64,
    pub duplicate_events: u64,
    /// Users for whom a generator's expression failed; they got nothing from that generator.
    pub evaluation_errors: u64,
    /// The first few such errors, as sentences.
    pub error_samples: Vec<String>,
    /// Per submitted event, in request order: what it created.
    pub results: Vec<EventResult>,
}

/// What one event created.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventResult {
    pub event_id: String,
    /// Seen before (or earlier in the same request): it created nothing now.
    pub duplicate_event: bool,
    pub opportunities: Vec<GeneratedOpportunity>,
}

/// One opportunity a generator proposed for an event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeneratedOpportunity {
    pub generator: String,
    pub user_id: String,
    pub dedupe_key: String,
    /// The new opportunity's id; `None` when the same user and key existed already.
    pub opportunity_id: Option<i64>,
}

/// The health name that says only "this process works": SERVING until shutdown begins, whatever
/// the database does. A liveness probe asks for it, so that a database outage (which turns
/// every other name NOT_SERVING, taking the replica out of load balancing) does not also get
/// the process restarted, which would not bring the database back.
pub const LIVENESS: &str = "liveness";

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest request accepted; bigger ones are refused with RESOURCE_EXHAUSTED before their
    /// bytes are buffered (see `limit.rs`).
    pub max_message_bytes: usize,
    /// After shutdown is requested, health reports NOT_SERVING for this long before the listener
    /// closes, so that load balancers stop routing here first.
    pub drain_delay: Duration,
    /// Bearer tokens; none configured means no authentication. Health and reflection never
    /// require one (probes and `grpcurl list` must work).
    pub tokens: Tokens,
    /// TLS certificate chain and private key (PEM); plaintext when absent.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// How often the database is asked `SELECT 1`; health is NOT_SERVING from the first probe
    /// that gets no answer (within this interval) until one gets an answer again.
    pub health_probe: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_message_bytes: 16 * 1024 * 1024,
            drain_delay: Duration::ZERO,
            tokens: Tokens::none(),
            tls: None,
            health_probe: Duration::from_secs(2),
        }
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection could not be built: {0}")]
    Reflection(String),
}

/// Serves every tern.v1 service, health and reflection on `listener` until `shutdown`
/// completes; then health turns NOT_SERVING, new connections are refused, and the call returns
/// once in-flight calls have finished (the caller bounds that with its grace period).
pub async fn serve(
    listener: TcpListener,
    api: Api,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use pb::admin_service_server::AdminServiceServer;
    use pb::feedback_service_server::FeedbackServiceServer;
    use pb::opportunity_service_server::OpportunityServiceServer;
    use pb::schedule_service_server::ScheduleServiceServer;
    use pb::user_service_server::UserServiceServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        "tern.v1.OpportunityService",
        "tern.v1.ScheduleService",
        "tern.v1.UserService",
        "tern.v1.FeedbackService",
        "tern.v1.AdminService",
    ];
    for name in names.into_iter().chain([LIVENESS]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // Both reflection versions: grpcurl and newer tools speak v1, many older clients only
    // v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let probe = tokio::spawn(probe_database(
        api.store().clone(),
        health.clone(),
        names,
        api.serving.clone(),
        options.health_probe,
    ));

    let max = options.max_message_bytes;
    let drain = options.drain_delay;
    let serving = api.serving.clone();
    let signal = async move {
        shutdown.await;
        serving.store(false, std::sync::atomic::Ordering::SeqCst);
        probe.abort();
        for name in names.into_iter().chain([LIVENESS]) {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
        tokio::time::sleep(drain).await;
    };
    let mut builder = Server::builder().layer(limit::SizeLimitLayer::new(max));
    if let Some((cert, key)) = &options.tls {
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
    }
    // The token check sees every call's path, so one table decides which scope each method
    // needs (`auth::METHOD_SCOPES`), and the handlers need not know.
    builder
        .layer(AuthLayer::new(options.tokens.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(OpportunityServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(ScheduleServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(UserServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(FeedbackServiceServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(AdminServiceServer::new(api).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, a reply written as a HEADERS and a DATA frame waits for the
            // client's delayed ACK (up to 40 ms on Linux) before its second segment leaves:
            // every unary call of a pulling delivery service would pay it.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        )
        .await?;
    Ok(())
}

/// Asks the database `SELECT 1` every `every` and turns health NOT_SERVING while it does not
/// answer in time (dropped, refusing connections, down), SERVING again once it does. Stops
/// touching health once shutdown has begun (`serving` false): then it stays NOT_SERVING.
async fn probe_database(
    store: tern_store::Store,
    health: tonic_health::server::HealthReporter,
    names: [&'static str; 6],
    serving: Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
) {
    use std::sync::atomic::Ordering;
    let set = |status| {
        let health = health.clone();
        async move {
            for name in names {
                health.set_service_status(name, status).await;
            }
        }
    };
    let mut up = true;
    loop {
        tokio::time::sleep(every).await;
        let answer = tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await;
        let now_up = matches!(answer, Ok(Ok(())));
        if now_up == up || !serving.load(Ordering::SeqCst) {
            continue;
        }
        up = now_up;
        if up {
            tracing::warn!("the database answers again: health is SERVING");
            set(tonic_health::ServingStatus::Serving).await;
            // Shutdown may have begun meanwhile; it owns health from then on.
            if !serving.load(Ordering::SeqCst) {
                set(tonic_health::ServingStatus::NotServing).await;
            }
        } else {
            let why = match answer {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} ms", every.as_millis().max(1000)),
            };
            tracing::warn!(error = %why, "the database does not answer: health is NOT_SERVING");
            set(tonic_health::ServingStatus::NotServing).await;
        }
    }
}

/// Builds an [`Api`].
pub fn api(
    store: tern_store::Store,
    clock: Arc<dyn Clock>,
    control: Arc<dyn Control>,
    metrics: Arc<Metrics>,
) -> Api {
    Api::new(store, clock, control, metrics)
}
