//! Training: learn the outcome model from tern's own history in PostgreSQL, judge it on a later
//! period, and register it. `tern train` and the daemon's scheduled training both call
//! [`train_and_register`].
//!
//! The history is read once, user by user ([`tern_store::Store::training_history`]), turned into
//! feature rows with labels ([`crate::features`] builds the features exactly as the planner's
//! predictor does), and spilled to an unlinked temporary file; every epoch then streams that file
//! in chunks of [`CHUNK_ROWS`] rows, in a seeded order. Memory stays at one user plus one chunk,
//! however long the history, and the database is scanned once rather than once per epoch.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tern_core::{OutcomeKind, SplitMix64};
use tern_model::{
    Batch, Batches, Dataset, FeatureSpec, Head, Model, ModelError, Part, TrainConfig,
    TrainingWindow, UserState, ValueConfig, ValueFit, ValueFunction, HEADS, NO_SEND,
};
use tern_store::{NewModel, Store, TrainingUser};

use crate::error::{Context, Error};
use crate::features::{self, Candidate, Past};

type Result<T, E = Error> = std::result::Result<T, E>;

/// Rows per chunk of the spill file: the unit the trainer shuffles within (its minibatches are
/// drawn from one chunk) and the unit whose order is shuffled per epoch. 64k rows are ~15 MB and
/// span thousands of users, so a minibatch is never one user's history.
const CHUNK_ROWS: usize = 65_536;

/// The default cap on a row's weight: 1, so rows are not weighted. Among the would-be sends,
/// withholding is a coin of one known probability, so the model of the outcome given the
/// features and the action is unbiased without weights; weighting the withheld rows up to
/// `1/withhold` (and the explored sends up to the inverse of their small propensities) only adds
/// variance. Measured on the demo (docs/model.md): caps of 5 and 20 sent fewer messages but
/// converted less and kept no more users, and at 20 a young installation's models stopped
/// beating the base rate.
pub const MAX_WEIGHT: f64 = 1.0;

/// How outcomes become labels. Stored with the model's metrics in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    /// A message engaged if opened or clicked within this many hours of the send.
    pub engagement_hours: u32,
    /// A message converted if a conversion followed within this many days.
    pub conversion_days: u32,
    /// Reachability was lost if an unsubscribe, push-disabled or complaint outcome followed
    /// within this many days.
    pub reachability_days: u32,
    /// Retention: the user was active during the last week of this many days after the send (the
    /// objective's horizon in the policies).
    pub retention_days: u32,
}

/// What one training run needs besides the store: the part of `tern train`'s arguments that the
/// daemon's training job shares.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub days: u32,
    pub valid_fraction: f64,
    pub config: TrainConfig,
    pub labels: Labels,
    /// The most a row may weigh. A row weighs the inverse of the probability with which the
    /// logging policy took its action (sent it, or withheld it at random), capped here so that
    /// a few unlikely actions cannot dominate the fit; 1 turns weighting off.
    pub max_weight: f64,
    pub work_dir: PathBuf,
    /// Where progress lines go: the CLI prints them; without one they are logged.
    pub progress: Option<fn(&str)>,
}

/// A model trained and registered as a candidate.
pub struct Trained {
    pub version: String,
    pub model: Model,
    pub bytes: Vec<u8>,
    pub metrics: tern_model::Metrics,
}

/// Reads the history up to `until`, trains, and registers the model as a candidate.
pub async fn train_and_register(
    store: &Store,
    settings: &TrainSettings,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Trained> {
    let from = until - TimeDelta::days(i64::from(settings.days));
    let from = store
        .first_message_at(from, until)
        .await?
        .unwrap_or(from)
        .max(from);
    // Sends in the last `shortest` before `until` have no observable label yet, so the split
    // is made over the time before that: otherwise a short history (7 days, the last 20% held
    // out) would validate on a period with no label at all. The validation part still runs to
    // `until`; its newest rows only have their labels masked.
    let shortest = settings.labels.shortest();
    let labelled_until = if until - shortest > from {
        until - shortest
    } else {
        until
    };
    let mut window = TrainingWindow::split(from, labelled_until, settings.valid_fraction)?;
    window.valid_until = until;
    let spec = FeatureSpec::default();
    let started = std::time::Instant::now();
    if !(settings.max_weight >= 1.0 && settings.max_weight.is_finite()) {
        return Err(Error::Training(format!(
            "the largest row weight must be a number ≥ 1, got {}",
            settings.max_weight
        )));
    }
    let spilled = spill(store, &spec, &window, settings).await?;
    let read = format!(
        "read {} messages of {} users in {:.1}s: {} training rows, {} validation rows, {} of them withheld sends ({} without any observable label left out)",
        spilled.messages,
        spilled.users,
        started.elapsed().as_secs_f64(),
        spilled.train.rows,
        spilled.valid.rows,
        spilled.untreated,
        spilled.unlabelled
    );
    match settings.progress {
        Some(say) => say(&read),
        None => tracing::info!("{read}"),
    }
    if spilled.train.rows == 0 || spilled.valid.rows == 0 {
        return Err(Error::NotEnoughHistory(format!(
            "not enough history to train on between {} and {}: {} training and {} validation rows with an observable label; a label is observable {} after a send at the earliest, so train on a longer period (--days, now {}) or with more traffic",
            window.train_from,
            window.valid_until,
            spilled.train.rows,
            spilled.valid.rows,
            tern_policy::format_duration(shortest),
            settings.days
        )));
    }

    let seed = settings.config.seed;
    let config = settings.config.clone();
    let mut train = spilled.train.reader(Some(seed));
    let mut valid = spilled.valid.reader(None);
    let mut model = tokio::task::spawn_blocking(move || {
        tern_model::train(&spec, &config, &mut train, &mut valid, Some(window))
    })
    .await
    .context("the training thread failed")??;
    model.value = match spilled.value.finish() {
        Ok(value) => {
            let line = describe_value(&value);
            match settings.progress {
                Some(say) => say(&line),
                None => tracing::info!("{line}"),
            }
            Some(value)
        }
        Err(e) => {
            tracing::info!("no value function yet: {e}");
            None
        }
    };

    let bytes = model.to_bytes()?;
    let version = model_version(until, &model);
    let metrics = model
        .metrics
        .clone()
        .context("a trained model carries metrics")?;
    let summary = model
        .training
        .as_ref()
        .context("a trained model carries its summary")?;
    for e in &summary.epochs {
        let line = format!(
            "epoch {:>2}: train loss {:.5}, validation loss {:.5}, {:.0} rows/s",
            e.epoch + 1,
            e.train_loss,
            e.valid_loss,
            e.rows_per_second
        );
        match settings.progress {
            Some(say) => say(&line),
            None => tracing::debug!("{line}"),
        }
    }
    store
        .register_model(
            &NewModel {
                version: version.clone(),
                feature_version: model.feature_version().to_string(),
                artifact: bytes.clone(),
                metrics: serde_json::json!({
                    "validation": metrics,
                    "labels": settings.labels,
                    "rows": {
                        "train": spilled.train.rows,
                        "valid": spilled.valid.rows,
                        "withheld": spilled.untreated,
                    },
                    "max_weight": settings.max_weight,
                    "value_function": model.value.as_ref().map(|v| serde_json::json!({
                        "users": v.users,
                        "user_days": v.transitions,
                        "active_share": v.active_share,
                    })),
                    "best_epoch": summary.best_epoch + 1,
                    "epochs": summary.epochs.len(),
                }),
                train_from: Some(window.train_from),
                train_until: Some(window.valid_until),
            },
            now,
        )
        .await?;
    Ok(Trained {
        version,
        model,
        bytes,
        metrics,
    })
}

impl Labels {
    /// The shortest label window: before it has passed since a send, no label of that send is
    /// observable.
    pub fn shortest(&self) -> TimeDelta {
        Head::ALL
            .into_iter()
            .map(|h| self.window(h))
            .min()
            .unwrap_or_default()
    }

    /// How long after a send its label for `head` is settled.
    pub fn window(&self, head: Head) -> TimeDelta {
        match head {
            Head::Engagement => TimeDelta::hours(i64::from(self.engagement_hours)),
            Head::Conversion => TimeDelta::days(i64::from(self.conversion_days)),
            Head::ReachabilityLoss => TimeDelta::days(i64::from(self.reachability_days)),
            Head::Retention => TimeDelta::days(i64::from(self.retention_days)),
            // Its last day is the one after retention's last week ends.
            Head::Activity => TimeDelta::days(i64::from(self.retention_days) + 1),
        }
    }
}

impl Default for Labels {
    /// The same as `tern train`'s flag defaults.
    fn default() -> Self {
        Labels {
            engagement_hours: 48,
            conversion_days: 7,
            reachability_days: 7,
            retention_days: 28,
        }
    }
}

/// `m-<until>-<digest of the feature version and weights>`: sortable by the end of its
/// history, and the same for the same weights (the artifact also holds timings, which differ
/// from run to run), so a repeated training run is recognised as such.
fn model_version(until: DateTime<Utc>, model: &Model) -> String {
    let mut h = Sha256::new();
    h.update(model.feature_version().as_bytes());
    for p in model.params() {
        for x in p {
            h.update(x.to_le_bytes());
        }
    }
    if let Some(v) = &model.value {
        for x in v.weights.iter().chain(v.members.iter().flatten()) {
            h.update(x.to_le_bytes());
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("m-{}-{hex}", until.format("%Y%m%dT%H%M%SZ"))
}

/// What one pass over the history produced.
struct Spilled {
    users: u64,
    messages: u64,
    /// Rows left out because none of their labels was observable yet.
    unlabelled: u64,
    /// Rows of would-be messages withheld (the action "no send").
    untreated: u64,
    train: Spill,
    valid: Spill,
    /// The user-day transitions of the window, summed for the value function.
    value: ValueFit,
}

async fn spill(
    store: &Store,
    spec: &FeatureSpec,
    window: &TrainingWindow,
    settings: &TrainSettings,
) -> Result<Spilled> {
    let labels = &settings.labels;
    let dir = settings.work_dir.as_path();
    let weigh = Weigh(settings.max_weight);
    let horizon = TimeDelta::days(i64::from(labels.retention_days));
    // 28 days before the window feed the fatigue features of its first rows.
    let history_from = window.train_from - TimeDelta::days(28);
    let as_of = window.valid_until;
    let mut out = Spilled {
        users: 0,
        messages: 0,
        unlabelled: 0,
        untreated: 0,
        train: Spill::create(dir, spec.width())?,
        valid: Spill::create(dir, spec.width())?,
        value: ValueFit::new(
            spec.declaration().channels.clone(),
            ValueConfig::for_horizon(f64::from(labels.retention_days), settings.config.seed),
        )?,
    };
    let mut users = std::pin::pin!(store.training_history(
        history_from,
        as_of,
        history_from.date_naive() - TimeDelta::days(28),
        as_of.date_naive(),
    ));
    let mut row = vec![0.0f32; spec.width()];
    let mut history = Vec::new();
    while let Some(user) = users.try_next().await? {
        out.users += 1;
        out.messages += user.messages.len() as u64;
        rows_of_user(
            spec,
            window,
            labels,
            weigh,
            horizon,
            &user,
            &mut row,
            &mut history,
            &mut out,
        )?;
    }
    out.train.finish()?;
    out.valid.finish()?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn rows_of_user<'s>(
    spec: &'s FeatureSpec,
    window: &TrainingWindow,
    labels: &Labels,
    weigh: Weigh,
    horizon: TimeDelta,
    user: &TrainingUser,
    row: &mut [f32],
    history: &mut Vec<tern_model::ChannelHistory<'s>>,
    out: &mut Spilled,
) -> Result<()> {
    let as_of = window.valid_until;
    let tz = features::zone(user.timezone.as_deref());
    // Only what had happened by `as_of` exists for this training run.
    let known: Vec<Vec<(OutcomeKind, DateTime<Utc>)>> = user
        .messages
        .iter()
        .map(|m| {
            m.outcomes
                .iter()
                .copied()
                .filter(|(_, t)| *t < as_of)
                .collect()
        })
        .collect();
    let past: Vec<Past<'_>> = user
        .messages
        .iter()
        .zip(&known)
        .map(|(m, o)| Past {
            channel: &m.channel,
            sent_at: m.sent_at,
            opened_at: first(o, |k| {
                matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked)
            }),
        })
        .collect();
    for (i, m) in user.messages.iter().enumerate() {
        let Some(part) = window.part(m.sent_at) else {
            continue;
        };
        let t = m.sent_at;
        let (y, mask) = label(labels, &known[i], &user.active_days, t, horizon, as_of);
        if !mask.iter().any(|m| *m) {
            out.unlabelled += 1;
            continue;
        }
        encode(spec, user, tz, m, &m.channel, &past[..i], history, row)?;
        let w = weigh.of(m.propensity);
        match part {
            Part::Train => out.train.push(row, &y, &mask, w)?,
            Part::Valid => out.valid.push(row, &y, &mask, w)?,
        }
    }

    // The would-be messages withheld: the action "no send", at the moment the message would
    // have gone out, labelled like a send without outcomes: nothing was opened, converted or
    // lost (0 once each window has passed, as for a sent message), and retention is what the
    // user did. These rows are what lets the model tell the effect of a send.
    for m in &user.withheld {
        let Some(part) = window.part(m.sent_at) else {
            continue;
        };
        let t = m.sent_at;
        let (y, mask) = label(labels, &[], &user.active_days, t, horizon, as_of);
        if !mask.iter().any(|m| *m) {
            out.unlabelled += 1;
            continue;
        }
        let before = user.messages.partition_point(|p| p.sent_at < t);
        encode(spec, user, tz, m, NO_SEND, &past[..before], history, row)?;
        out.untreated += 1;
        let w = weigh.of(m.propensity);
        match part {
            Part::Train => out.train.push(row, &y, &mask, w)?,
            Part::Valid => out.valid.push(row, &y, &mask, w)?,
        }
    }
    days_of_user(spec, window, user, &past, &known, &mut out.value);
    Ok(())
}

/// The user's days inside the window as value-function transitions: the state at each UTC
/// midnight (fatigue history, activity, lost channels, all as known then), whether they were
/// active that day, and the state at the next midnight. Only days over by the end of the history
/// count, so every reward is observed.
fn days_of_user<'s>(
    spec: &'s FeatureSpec,
    window: &TrainingWindow,
    user: &TrainingUser,
    past: &[Past<'_>],
    known: &[Vec<(OutcomeKind, DateTime<Utc>)>],
    fit: &mut ValueFit,
) {
    let as_of = window.valid_until;
    let channels = &spec.declaration().channels;
    let first_day = window
        .train_from
        .max(user.first_seen_at.unwrap_or(window.train_from))
        .date_naive();
    let last = as_of.date_naive();
    if first_day >= last {
        return;
    }
    let tz = features::zone(user.timezone.as_deref());
    let losses: Vec<(&str, DateTime<Utc>)> = user
        .messages
        .iter()
        .zip(known)
        .filter_map(|(m, o)| {
            first(o, OutcomeKind::loses_reachability).map(|t| (m.channel.as_str(), t))
        })
        .collect();
    let state_at = |day: NaiveDate, history: &mut Vec<tern_model::ChannelHistory<'s>>| {
        let at = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        let sent = past.partition_point(|p| p.sent_at < at);
        features::channel_history(channels, &past[..sent], at, history);
        let activity = features::activity_as_of(user.first_seen_at, &user.active_days, at);
        let mut lost: Vec<String> = losses
            .iter()
            .filter(|(_, t)| *t < at)
            .map(|(c, _)| c.to_string())
            .collect();
        lost.sort_unstable();
        lost.dedup();
        (features::user_context(&activity, tz, at), lost)
    };
    fit.user(tern_core::fnv1a64(user.user_id.as_bytes()));
    let (mut history, mut next_history) = (Vec::new(), Vec::new());
    let mut day = first_day;
    let (mut context, mut lost) = state_at(day, &mut history);
    while day < last {
        let next = day + TimeDelta::days(1);
        let (next_context, next_lost) = state_at(next, &mut next_history);
        let active = user.active_days.binary_search(&day).is_ok();
        fit.push(
            &UserState {
                user: context,
                history: &history,
                lost: &lost,
            },
            active,
            &UserState {
                user: next_context,
                history: &next_history,
                lost: &next_lost,
            },
        );
        std::mem::swap(&mut history, &mut next_history);
        (context, lost, day) = (next_context, next_lost, next);
    }
}

/// One progress line on the fitted value function: its data, and what it says a week's push
/// costs a user in the future.
fn describe_value(v: &ValueFunction) -> String {
    let weight = |name: &str| {
        v.feature_names()
            .iter()
            .position(|n| n == name)
            .map_or(0.0, |i| v.weights[i])
    };
    format!(
        "value function: {} user-days of {} users, {:.1}% active (γ {:.3}); weight of a week's sends across channels {:+.3} discounted active days",
        v.transitions,
        v.users,
        100.0 * v.active_share,
        v.config.gamma,
        weight("sent_7d_all"),
    )
}

/// A row's weight: the inverse of its action's logged propensity, at most the cap. An action
/// without a propensity (imported history) weighs 1.
#[derive(Debug, Clone, Copy)]
struct Weigh(f64);

impl Weigh {
    fn of(self, propensity: Option<f64>) -> f32 {
        match propensity {
            Some(p) if p > 0.0 => (1.0 / p).clamp(1.0, self.0) as f32,
            _ => 1.0,
        }
    }
}

/// Encodes message `m` of `user` as the action `channel` (or [`NO_SEND`]) at its send time, with
/// `past` (the sends before it) as its fatigue history.
#[allow(clippy::too_many_arguments)]
fn encode<'s>(
    spec: &'s FeatureSpec,
    user: &TrainingUser,
    tz: chrono_tz::Tz,
    m: &tern_store::TrainingMessage,
    channel: &str,
    past: &[Past<'_>],
    history: &mut Vec<tern_model::ChannelHistory<'s>>,
    row: &mut [f32],
) -> Result<()> {
    let t = m.sent_at;
    features::channel_history(&spec.declaration().channels, past, t, history);
    let activity = features::activity_as_of(user.first_seen_at, &user.active_days, t);
    let ctx = features::context(
        &Candidate {
            channel,
            category: &m.category,
            template: &m.template,
            signals: &m.signals,
            created_at: m.opportunity_created_at,
            expires_at: m.opportunity_expires_at,
        },
        features::user_context(&activity, tz, t),
        history,
        tz,
        t,
    );
    spec.encode(&ctx, row)?;
    Ok(())
}

/// The labels of an action at `t` with these `outcomes` (none for a withheld send), each with
/// whether it is observable by `as_of`.
fn label(
    labels: &Labels,
    outcomes: &[(OutcomeKind, DateTime<Utc>)],
    active_days: &[NaiveDate],
    t: DateTime<Utc>,
    horizon: TimeDelta,
    as_of: DateTime<Utc>,
) -> ([f32; HEADS], [bool; HEADS]) {
    let mut y = [0.0f32; HEADS];
    let mut mask = [false; HEADS];
    for head in [Head::Engagement, Head::Conversion, Head::ReachabilityLoss] {
        let window = labels.window(head);
        let kinds = |k: OutcomeKind| match head {
            Head::Engagement => matches!(k, OutcomeKind::Opened | OutcomeKind::Clicked),
            Head::Conversion => k == OutcomeKind::Converted,
            _ => k.loses_reachability(),
        };
        let hit = outcomes
            .iter()
            .any(|(k, at)| kinds(*k) && *at >= t && *at < t + window);
        y[head.index()] = f32::from(u8::from(hit));
        mask[head.index()] = t + window <= as_of;
    }
    let (retained, observable) = retained(active_days, t, horizon, as_of);
    y[Head::Retention.index()] = retained;
    mask[Head::Retention.index()] = observable;
    let (share, observable) = activity(active_days, t, horizon, as_of);
    y[Head::Activity.index()] = share;
    mask[Head::Activity.index()] = observable;
    (y, mask)
}

/// Activity after a send at `t`: the share of the days after the send's day, up to
/// `t + horizon`'s day, on which the user was active. Observable, like retention, once the last
/// of those days is over by `as_of`.
pub fn activity(
    days: &[NaiveDate],
    t: DateTime<Utc>,
    horizon: TimeDelta,
    as_of: DateTime<Utc>,
) -> (f32, bool) {
    let first = t.date_naive() + TimeDelta::days(1);
    let end = (t + horizon).date_naive() + TimeDelta::days(1);
    let span = (end - first).num_days().max(1);
    let today = as_of.date_naive();
    let active = days
        .iter()
        .filter(|d| **d >= first && **d < end && **d < today)
        .count();
    (active as f32 / span as f32, end <= today)
}

/// Retention of a message sent at `t`: was the user active on some day of the last week (or the
/// whole horizon, if shorter) before `t + horizon`? Observable once that week is over by `as_of`.
///
/// Like every label, it is observable only when its whole window has passed, even when a
/// positive is already visible: taking early positives while the negatives of the same sends are
/// still masked would inflate the rate on the most recent period, which is the validation period.
pub fn retained(
    days: &[NaiveDate],
    t: DateTime<Utc>,
    horizon: TimeDelta,
    as_of: DateTime<Utc>,
) -> (f32, bool) {
    let span = horizon.min(TimeDelta::days(7));
    let first = (t + horizon - span).date_naive();
    let end = (t + horizon).date_naive();
    let today = as_of.date_naive();
    let hit = days.iter().any(|d| *d >= first && *d < end && *d < today);
    (f32::from(u8::from(hit)), end <= today)
}

fn first(
    outcomes: &[(OutcomeKind, DateTime<Utc>)],
    kind: impl Fn(OutcomeKind) -> bool,
) -> Option<DateTime<Utc>> {
    outcomes
        .iter()
        .filter(|(k, _)| kind(*k))
        .map(|(_, t)| *t)
        .min()
}

/// Feature rows with labels and masks in an unlinked temporary file, written once and read back
/// chunk by chunk. A row is `width` features, then `HEADS` labels, then `HEADS` masks (0 or 1),
/// then its weight, all little-endian `f32`.
struct Spill {
    file: Arc<File>,
    writer: Option<BufWriter<File>>,
    width: usize,
    rows: u64,
}

impl Spill {
    fn create(dir: &Path, width: usize) -> Result<Spill> {
        let path = dir.join(format!(
            "tern-train-{}-{}.rows",
            std::process::id(),
            SplitMix64::new(Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64).next_u64()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create a spill file in {}", dir.display()))?;
        // Unlinked at once: the space comes back when the process ends, however it ends.
        std::fs::remove_file(&path).with_context(|| format!("cannot unlink {}", path.display()))?;
        Ok(Spill {
            writer: Some(BufWriter::with_capacity(1 << 20, file.try_clone()?)),
            file: Arc::new(file),
            width,
            rows: 0,
        })
    }

    fn push(
        &mut self,
        row: &[f32],
        labels: &[f32; HEADS],
        masks: &[bool; HEADS],
        weight: f32,
    ) -> Result<()> {
        let w = self.writer.as_mut().context("spill already finished")?;
        for x in row.iter().chain(labels) {
            w.write_all(&x.to_le_bytes())?;
        }
        for m in masks {
            w.write_all(&f32::from(u8::from(*m)).to_le_bytes())?;
        }
        w.write_all(&weight.to_le_bytes())?;
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush().context("writing the spill file")?;
        }
        Ok(())
    }

    /// A [`Dataset`] over the spilled rows; `shuffle_seed` permutes the chunks per epoch.
    fn reader(&self, shuffle_seed: Option<u64>) -> SpillReader {
        SpillReader {
            file: Arc::clone(&self.file),
            width: self.width,
            rows: self.rows,
            shuffle_seed,
        }
    }
}

struct SpillReader {
    file: Arc<File>,
    width: usize,
    rows: u64,
    shuffle_seed: Option<u64>,
}

impl SpillReader {
    fn chunk(&self, index: u64) -> Result<Batch, ModelError> {
        let record = self.width + 2 * HEADS + 1;
        let start = index * CHUNK_ROWS as u64;
        let rows = (self.rows - start).min(CHUNK_ROWS as u64) as usize;
        let mut bytes = vec![0u8; rows * record * 4];
        self.file
            .read_exact_at(&mut bytes, start * record as u64 * 4)
            .map_err(|e| ModelError::Source(Box::new(e)))?;
        let mut features = Vec::with_capacity(rows * self.width);
        let mut labels = Vec::with_capacity(rows);
        let mut masks = Vec::with_capacity(rows);
        let mut weights = Vec::with_capacity(rows);
        for r in bytes.chunks_exact(record * 4) {
            let v: Vec<f32> = r
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            features.extend_from_slice(&v[..self.width]);
            let mut l = [0.0; HEADS];
            l.copy_from_slice(&v[self.width..self.width + HEADS]);
            let mut m = [false; HEADS];
            for (m, x) in m
                .iter_mut()
                .zip(&v[self.width + HEADS..self.width + 2 * HEADS])
            {
                *m = *x != 0.0;
            }
            labels.push(l);
            masks.push(m);
            weights.push(v[self.width + 2 * HEADS]);
        }
        Batch::new(self.width, features, labels, masks)?.with_weights(weights)
    }
}

impl Dataset for SpillReader {
    fn batches(&mut self, epoch: usize) -> Batches<'_> {
        let chunks = self.rows.div_ceil(CHUNK_ROWS as u64);
        let mut order: Vec<u64> = (0..chunks).collect();
        if let Some(seed) = self.shuffle_seed {
            SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .shuffle(&mut order);
        }
        Box::new(order.into_iter().map(move |c| self.chunk(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn activity_is_the_share_of_the_horizons_days_and_masked_until_the_last_is_over() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let sent = t("2026-06-01T10:00:00Z");
        let h = TimeDelta::days(7);
        // June 2 to June 8: seven days. The send's own day and June 9 do not count.
        let days = [
            d("2026-06-01"),
            d("2026-06-02"),
            d("2026-06-05"),
            d("2026-06-09"),
        ];
        assert_eq!(
            activity(&days, sent, h, t("2026-06-08T12:00:00Z")),
            (2.0 / 7.0, false)
        );
        assert_eq!(
            activity(&days, sent, h, t("2026-06-09T00:00:00Z")),
            (2.0 / 7.0, true)
        );
        assert_eq!(
            activity(&[], sent, h, t("2026-07-01T00:00:00Z")),
            (0.0, true)
        );
        let every: Vec<NaiveDate> = (2..=8).map(|k| d(&format!("2026-06-0{k}"))).collect();
        assert_eq!(
            activity(&every, sent, h, t("2026-07-01T00:00:00Z")),
            (1.0, true)
        );
    }

    #[test]
    fn retention_is_masked_until_the_horizon_has_passed() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let sent = t("2026-06-01T10:00:00Z");
        let h = TimeDelta::days(14);
        // Last week of the horizon: June 8 to June 14 (June 15 excluded).
        assert_eq!(
            retained(&[], sent, h, t("2026-06-10T00:00:00Z")),
            (0.0, false)
        );
        assert_eq!(
            retained(&[], sent, h, t("2026-06-16T00:00:00Z")),
            (0.0, true)
        );
        assert_eq!(
            retained(&[d("2026-06-09")], sent, h, t("2026-06-10T00:00:00Z")),
            (1.0, false),
            "an early positive stays masked until the negatives of its period are known too"
        );
        assert_eq!(
            retained(&[d("2026-06-09")], sent, h, t("2026-06-15T00:00:00Z")),
            (1.0, true)
        );
        assert_eq!(
            retained(&[d("2026-06-09")], sent, h, t("2026-06-09T12:00:00Z")),
            (0.0, false),
            "a day still in progress at as_of is not yet known"
        );
        assert_eq!(
            retained(&[d("2026-06-03")], sent, h, t("2026-06-20T00:00:00Z")),
            (0.0, true),
            "activity early in the horizon is not retention"
        );
    }

    #[test]
    fn the_spill_reads_back_what_was_written_in_chunks() {
        let mut s = Spill::create(&std::env::temp_dir(), 3).unwrap();
        for i in 0..(CHUNK_ROWS + 5) {
            let x = i as f32;
            s.push(
                &[x, x + 0.5, -x],
                &[1.0, 0.0, 1.0, 0.0, 0.5],
                &[true, true, false, true, true],
                1.0 + x / 2.0,
            )
            .unwrap();
        }
        s.finish().unwrap();
        let mut r = s.reader(Some(7));
        let batches: Vec<Batch> = r.batches(0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        let total: usize = batches.iter().map(Batch::rows).sum();
        assert_eq!(total, CHUNK_ROWS + 5);
        let last = batches.iter().find(|b| b.rows() == 5).unwrap();
        assert_eq!(
            last.row(0),
            &[
                CHUNK_ROWS as f32,
                CHUNK_ROWS as f32 + 0.5,
                -(CHUNK_ROWS as f32)
            ]
        );
        assert_eq!(
            last.labels()[0],
            [1.0, 0.0, 0.0, 0.0, 0.5],
            "masked labels read as 0"
        );
        assert_eq!(last.masks()[0], [true, true, false, true, true]);
        assert_eq!(last.weights()[0], 1.0 + CHUNK_ROWS as f32 / 2.0);
    }

    #[test]
    fn a_row_weighs_the_inverse_of_its_propensity_up_to_the_cap() {
        let w = Weigh(20.0);
        assert_eq!(w.of(Some(1.0)), 1.0);
        assert_eq!(w.of(Some(0.5)), 2.0);
        assert_eq!(w.of(Some(0.05)), 20.0);
        assert_eq!(w.of(Some(0.001)), 20.0, "capped");
        assert_eq!(w.of(None), 1.0, "imported history has no propensity");
        assert_eq!(
            Weigh(1.0).of(Some(0.05)),
            1.0,
            "a cap of 1 turns weighting off"
        );
    }
}
