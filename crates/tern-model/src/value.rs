//! The long-term value of a user's state, learned from logged user-day transitions, and what a
//! send does to it.
//!
//! The outcome heads say what a message causes within its label windows. What they cannot say is
//! what the message leaves behind: one more send in the user's fatigue windows, one more open in
//! their engagement history, a channel that may be gone. Those carry into every later day. This
//! module values them.
//!
//! # What it learns
//! [`ValueFunction`] is `V(s)`: the expected discounted number of days, from the start of a day in
//! state `s` on, on which the user is active, under the way they were being messaged (the logging
//! policy). It is linear in [`state features`](ValueFunction::feature_names) that bend where the
//! behaviour bends (squares, buckets, the interaction of fatigue with activity), and it is fitted
//! by least-squares temporal differences (LSTD(0)): one transition per user and day,
//! `(s_d, active on d, s_{d+1})`, and the weights that solve
//! `Σ φ(s_d) (φ(s_d) − γ φ(s_{d+1}))ᵀ w = Σ φ(s_d) r_d` with a small ridge. That is the fixed point
//! of fitted value iteration with a linear model, reached in one solve instead of many passes: the
//! same answer every time for the same data, and bounded memory (a few `F × F` sums and one
//! user's days) however many users stream through.
//!
//! **One intercept per user.** The logging policy is not a coin: it messages the users it
//! expects most from, and those are the engaged users, who are active more whatever they get.
//! Fitted across users, more messages "predict" more active days, and every send looks good
//! (measured on the demo's logs: a pooled fit valued one more email to a user with three sends
//! this week, active half the days, at about +0.16 discounted active days). So
//! each user has their own intercept, fitted by the within transformation: every state's
//! features, reward and next state are taken from the user's own mean before the sums. Who the
//! user is then sits in the intercept, which no send changes, and the weights learn only from how
//! one user's days differ: this week more messages than last (the arrivals drive that), and
//! what followed. [`ValueFunction::value`] is therefore relative, and only differences between
//! states of one user, which is all a send's effect needs, carry meaning.

//! # What a send is worth
//! [`ValueFunction::effect`] compares the state right after the send with the state without it:
//! the send adds to the channel's fatigue counts; with the model's chance of an open it also adds
//! an open; with its chance of losing the channel, the channel is gone. The difference of `V` is
//! the send's long-term effect, in active days.
//!
//! # The conservative penalty
//! The transitions come from one logging policy: a state it rarely produced (a user sent far more
//! than usual) is where a fitted value is least supported and most tempting to exploit. Following
//! the pessimism of offline reinforcement learning, the value is fitted again on bootstrap
//! resamples of the users, and a send is valued at its effect minus `kappa` times the spread of
//! that effect across them ([`Effect::conservative`]): where the data cannot tell, a send is not
//! credited with a future it may not have.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::features::{ChannelHistory, UserContext};
use crate::rng;

/// Features per user, before the channels' (see [`ValueFunction::feature_names`]).
const USER_FEATURES: usize = 9;
/// Features per declared channel.
const CHANNEL_FEATURES: usize = 8;

/// What the value function sees of a user at one moment: the same fatigue history and activity
/// summary the outcome model's features are built from, and the channels already lost.
#[derive(Debug, Clone, Copy)]
pub struct UserState<'a> {
    pub user: UserContext,
    /// Recent history per channel, in any order; channels missing here count as never messaged.
    pub history: &'a [ChannelHistory<'a>],
    /// Channels on which the user can no longer be reached (unsubscribed, push off, no address).
    pub lost: &'a [String],
}

/// A send whose long-term effect is asked for: its channel, and the outcome model's chances that
/// it is opened and that it costs the channel.
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    pub channel: &'a str,
    pub p_open: f64,
    pub p_loss: f64,
}

/// A send's long-term effect on the user's active days: the estimate, and its spread across the
/// bootstrap fits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Effect {
    /// Active days gained (negative: lost) over the discounted future.
    pub days: f64,
    /// Standard deviation of `days` across the bootstrap fits.
    pub spread: f64,
    /// How many spreads [`conservative`](Self::conservative) subtracts.
    pub kappa: f64,
}

impl Effect {
    /// The effect less `kappa` spreads: what the planner weighs.
    pub fn conservative(&self) -> f64 {
        self.days - self.kappa * self.spread
    }
}

/// How the value function is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueConfig {
    /// The per-day discount: `1 − 1/horizon` looks about one horizon ahead.
    pub gamma: f64,
    /// Bootstrap resamples for the spread (0: no penalty).
    pub members: usize,
    /// Spreads subtracted from an effect.
    pub kappa: f64,
    /// Ridge added to the LSTD system, per transition.
    pub ridge: f64,
    /// Seed of the bootstrap draws.
    pub seed: u64,
    /// The fewest days per user, on average, to fit on.
    pub min_days: f64,
}

impl ValueConfig {
    /// The settings for an objective horizon of `horizon_days`: γ = 1 − 1/horizon, 8 bootstrap
    /// fits, one spread of pessimism, and at least a horizon's days per user (two weeks at
    /// most).
    pub fn for_horizon(horizon_days: f64, seed: u64) -> ValueConfig {
        ValueConfig {
            gamma: 1.0 - 1.0 / horizon_days.max(2.0),
            members: 8,
            kappa: 1.0,
            ridge: 1e-3,
            seed,
            min_days: horizon_days.clamp(2.0, 14.0),
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        if !(self.gamma > 0.0 && self.gamma < 1.0) {
            return Err(ModelError::InvalidConfig(format!(
                "the value function's discount must be in (0, 1), got {}",
                self.gamma
            )));
        }
        if !(self.kappa >= 0.0 && self.kappa.is_finite() && self.ridge > 0.0) {
            return Err(ModelError::InvalidConfig(format!(
                "the value function's kappa must be ≥ 0 and its ridge > 0, got {} and {}",
                self.kappa, self.ridge
            )));
        }
        Ok(())
    }
}

/// `V(s)`, fitted: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueFunction {
    /// The channels whose features it reads, in feature order.
    pub channels: Vec<String>,
    pub config: ValueConfig,
    /// The weights fitted on every transition.
    pub weights: Vec<f64>,
    /// The weights fitted on each bootstrap resample of the users.
    pub members: Vec<Vec<f64>>,
    /// What it was fitted on.
    pub users: u64,
    pub transitions: u64,
    /// The share of those user-days that were active.
    pub active_share: f64,
}

impl ValueFunction {
    /// The state features' names, in order: what [`weights`](Self::weights) multiply.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "bias",
            "active_share_28d",
            "active_share_28d^2",
            "active_within_1d",
            "active_within_3d",
            "active_within_7d",
            "tenure_28d",
            "sent_7d_all",
            "sent_7d_all^2",
        ]
        .map(String::from)
        .to_vec();
        for c in &self.channels {
            for f in [
                "sent_1d",
                "sent_7d",
                "sent_7d^2",
                "sent_28d",
                "opened_28d",
                "open_rate_28d",
                "sent_7d_x_active_share",
                "lost",
            ] {
                names.push(format!("{c}.{f}"));
            }
        }
        names
    }

    fn width(&self) -> usize {
        width(self.channels.len())
    }

    /// The fitted value of `state`, in discounted active days, up to the user's own intercept
    /// (which no send changes): only differences between states of one user mean anything.
    pub fn value(&self, state: &UserState<'_>) -> f64 {
        let mut phi = vec![0.0; self.width()];
        features(&self.channels, state, &mut phi);
        dot(&self.weights, &phi)
    }

    /// The long-term effect of `send` on a user in `state`: the state right after it, in
    /// expectation over its open and its loss of the channel, against the state without it. A
    /// channel the value function does not know has no effect.
    pub fn effect(&self, state: &UserState<'_>, send: &Send<'_>) -> Effect {
        self.marginal(state, send.channel)
            .map_or_else(Effect::default, |m| m.effect(send.p_open, send.p_loss))
    }

    /// What a send on `channel` does to a user in `state`, before its chances of an open and of a
    /// loss are known: the planner scores many candidates of one user and channel, and each
    /// then costs three multiplications per fit. `None` for a channel it does not know.
    pub fn marginal(&self, state: &UserState<'_>, channel: &str) -> Option<Marginal> {
        let c = self.channels.iter().position(|c| c == channel)?;
        let n = self.width();
        let mut before = vec![0.0; n];
        features(&self.channels, state, &mut before);
        let mut history: Vec<ChannelHistory<'_>> = self
            .channels
            .iter()
            .map(|name| {
                state
                    .history
                    .iter()
                    .find(|h| h.channel == name)
                    .copied()
                    .unwrap_or(ChannelHistory {
                        channel: name,
                        ..ChannelHistory::default()
                    })
            })
            .collect();
        let h = &mut history[c];
        h.sent_1d += 1;
        h.sent_7d += 1;
        h.sent_28d += 1;
        h.hours_since_last = Some(0.0);
        let after = |history: &[ChannelHistory<'_>], lost: &[String]| {
            let mut phi = vec![0.0; n];
            features(
                &self.channels,
                &UserState {
                    user: state.user,
                    history,
                    lost,
                },
                &mut phi,
            );
            phi
        };
        let sent = after(&history, state.lost);
        history[c].opened_28d += 1;
        let opened = after(&history, state.lost);
        history[c].opened_28d -= 1;
        let mut lost = state.lost.to_vec();
        lost.push(channel.to_string());
        let gone = after(&history, &lost);
        let diff =
            |x: &[f64], y: &[f64]| -> Vec<f64> { x.iter().zip(y).map(|(a, b)| a - b).collect() };
        let (sent_d, open_d, lost_d) = (
            diff(&sent, &before),
            diff(&opened, &sent),
            diff(&gone, &sent),
        );
        let terms = std::iter::once(&self.weights)
            .chain(&self.members)
            .map(|w| [dot(w, &sent_d), dot(w, &open_d), dot(w, &lost_d)])
            .collect();
        Some(Marginal {
            terms,
            kappa: self.config.kappa,
        })
    }
}

/// A send's effect on one user and channel, per fit, as `sent + p_open · open + p_loss · lost`:
/// what [`ValueFunction::marginal`] precomputes.
#[derive(Debug, Clone, PartialEq)]
pub struct Marginal {
    /// Per fit (all data first, then each bootstrap member): the effect of a send that is
    /// neither opened nor costs the channel, what an open adds, what a loss adds.
    terms: Vec<[f64; 3]>,
    kappa: f64,
}

impl Marginal {
    /// The effect of the send with these chances of an open and of losing the channel.
    pub fn effect(&self, p_open: f64, p_loss: f64) -> Effect {
        let p_loss = p_loss.clamp(0.0, 1.0);
        let p_open = p_open.clamp(0.0, 1.0 - p_loss);
        let of = |t: &[f64; 3]| t[0] + p_open * t[1] + p_loss * t[2];
        let days = of(&self.terms[0]);
        let members = &self.terms[1..];
        let spread = if members.len() >= 2 {
            let mean = members.iter().map(of).sum::<f64>() / members.len() as f64;
            let var = members.iter().map(|t| (of(t) - mean).powi(2)).sum::<f64>()
                / (members.len() - 1) as f64;
            var.sqrt()
        } else {
            0.0
        };
        Effect {
            days,
            spread,
            kappa: self.kappa,
        }
    }
}

fn width(channels: usize) -> usize {
    USER_FEATURES + CHANNEL_FEATURES * channels
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// φ(s): bounded, so that a state far outside the data cannot produce an unbounded value.
fn features(channels: &[String], state: &UserState<'_>, out: &mut [f64]) {
    let u = &state.user;
    let active = (u.active_days_28d / 28.0).clamp(0.0, 1.0);
    let since = u.hours_since_active.unwrap_or(f64::INFINITY);
    let find = |c: &str| state.history.iter().find(|h| h.channel == c);
    let sent_7d_all: f64 = channels
        .iter()
        .filter_map(|c| find(c))
        .map(|h| f64::from(h.sent_7d).min(21.0) / 7.0)
        .sum();
    let user = [
        1.0,
        active,
        active * active,
        f64::from(u8::from(since <= 24.0)),
        f64::from(u8::from(since <= 72.0)),
        f64::from(u8::from(since <= 168.0)),
        (u.tenure_days / 28.0).clamp(0.0, 1.0),
        sent_7d_all,
        sent_7d_all * sent_7d_all,
    ];
    out[..USER_FEATURES].copy_from_slice(&user);
    for (i, c) in channels.iter().enumerate() {
        let h = find(c).copied().unwrap_or_default();
        let sent_7d = f64::from(h.sent_7d).min(14.0) / 7.0;
        let sent_28d = f64::from(h.sent_28d).min(56.0) / 28.0;
        let opened = f64::from(h.opened_28d.min(h.sent_28d));
        let lost = state.lost.iter().any(|l| l == c);
        let row = [
            f64::from(h.sent_1d.min(4)) / 4.0,
            sent_7d,
            sent_7d * sent_7d,
            sent_28d,
            opened.min(28.0) / 7.0,
            if h.sent_28d > 0 {
                opened / f64::from(h.sent_28d)
            } else {
                0.0
            },
            sent_7d * active,
            f64::from(u8::from(lost)),
        ];
        let at = USER_FEATURES + i * CHANNEL_FEATURES;
        out[at..at + CHANNEL_FEATURES].copy_from_slice(&row);
    }
}

/// The running sums of an LSTD fit with user fixed effects, on all users and on each bootstrap
/// resample; memory is `(members + 1) × F²` plus one user's days, whatever the number of users.
pub struct ValueFit {
    channels: Vec<String>,
    config: ValueConfig,
    /// Per fit (all, then each member): `A` (row-major `F × F`) and `b`.
    a: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>,
    /// The current user's weight in each fit: 1 in the first, a Poisson(1) draw in the others.
    user_weights: Vec<f64>,
    /// The current user's days: `φ(s_d)`, `r_d`, `φ(s_{d+1})`, flushed as one block.
    days: Vec<(Vec<f64>, f64, Vec<f64>)>,
    users: u64,
    transitions: u64,
    active: f64,
}

impl ValueFit {
    pub fn new(channels: Vec<String>, config: ValueConfig) -> Result<ValueFit, ModelError> {
        config.check()?;
        let n = width(channels.len());
        let fits = config.members + 1;
        Ok(ValueFit {
            channels,
            config,
            a: vec![vec![0.0; n * n]; fits],
            b: vec![vec![0.0; n]; fits],
            user_weights: vec![1.0; fits],
            days: Vec::new(),
            users: 0,
            transitions: 0,
            active: 0.0,
        })
    }

    /// Starts the transitions of a new user, identified by a stable `key` (a hash of the user
    /// id): the bootstrap resamples users, not days, because one user's days are not
    /// independent, and a user's draws depend only on the seed and the key, not on the order in
    /// which users stream in.
    pub fn user(&mut self, key: u64) {
        self.flush();
        self.users += 1;
        for (m, w) in self.user_weights.iter_mut().enumerate().skip(1) {
            *w = poisson1(&mut rng::derive(
                self.config.seed,
                0x7661_6c75 + m as u64,
                key,
            ));
        }
    }

    /// One day of the current user: the state at its start, whether they were active on it,
    /// and the state at the start of the next.
    pub fn push(&mut self, state: &UserState<'_>, active: bool, next: &UserState<'_>) {
        let n = width(self.channels.len());
        let (mut phi, mut phi_next) = (vec![0.0; n], vec![0.0; n]);
        features(&self.channels, state, &mut phi);
        features(&self.channels, next, &mut phi_next);
        let r = f64::from(u8::from(active));
        self.transitions += 1;
        self.active += r;
        self.days.push((phi, r, phi_next));
    }

    /// Adds the current user's days to the sums, each taken from the user's own mean: the
    /// within transformation, which fits one intercept per user without storing any. What a
    /// user is like (engaged, and so both messaged more and active more) is in their intercept,
    /// and the weights learn only from how the same user's days differ.
    fn flush(&mut self) {
        let days = std::mem::take(&mut self.days);
        if days.len() < 2 {
            return;
        }
        let n = width(self.channels.len());
        let count = days.len() as f64;
        let (mut mean, mut mean_next, mut mean_r) = (vec![0.0; n], vec![0.0; n], 0.0);
        for (phi, r, next) in &days {
            for i in 0..n {
                mean[i] += phi[i] / count;
                mean_next[i] += next[i] / count;
            }
            mean_r += r / count;
        }
        let gamma = self.config.gamma;
        let mut z = vec![0.0; n];
        let mut x = vec![0.0; n];
        for (phi, r, next) in &days {
            for i in 0..n {
                z[i] = phi[i] - mean[i];
                x[i] = z[i] - gamma * (next[i] - mean_next[i]);
            }
            let y = r - mean_r;
            for (fit, w) in self.user_weights.iter().enumerate() {
                if *w == 0.0 {
                    continue;
                }
                let (a, b) = (&mut self.a[fit], &mut self.b[fit]);
                for i in 0..n {
                    let wi = w * z[i];
                    if wi == 0.0 {
                        continue;
                    }
                    b[i] += wi * y;
                    for (aij, xj) in a[i * n..(i + 1) * n].iter_mut().zip(&x) {
                        *aij += wi * xj;
                    }
                }
            }
        }
        self.days = days;
        self.days.clear();
    }

    /// Solves each fit. Fails when there are too few days per user to learn from (fewer than
    /// [`ValueConfig::min_days`] on average: a value over a horizon needs the days that show how
    /// a state plays out over it), or a system is singular even with the ridge.
    pub fn finish(mut self) -> Result<ValueFunction, ModelError> {
        self.flush();
        let per_user = self.transitions as f64 / self.users.max(1) as f64;
        if self.transitions == 0 || per_user < self.config.min_days {
            return Err(ModelError::NoData(format!(
                "{} user-days of {} users: the value function needs {} days per user on average",
                self.transitions, self.users, self.config.min_days
            )));
        }
        let n = width(self.channels.len());
        let ridge = self.config.ridge * self.transitions as f64;
        let mut fits = Vec::with_capacity(self.a.len());
        for (mut a, b) in self.a.into_iter().zip(self.b) {
            for i in 0..n {
                a[i * n + i] += ridge;
            }
            fits.push(solve(a, b, n).ok_or_else(|| {
                ModelError::InvalidData("the value function's system is singular".into())
            })?);
        }
        let weights = fits.remove(0);
        Ok(ValueFunction {
            channels: self.channels,
            config: self.config,
            weights,
            members: fits,
            users: self.users,
            transitions: self.transitions,
            active_share: self.active / self.transitions as f64,
        })
    }
}

/// Gaussian elimination with partial pivoting on a row-major `n × n` system.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[pivot * n + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(col * n + k, pivot * n + k);
            }
            b.swap(col, pivot);
        }
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            if f == 0.0 {
                continue;
            }
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row * n + row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// A Poisson(1) draw (Knuth's method): the bootstrap's weight of one user.
fn poisson1(rng: &mut tern_core::SplitMix64) -> f64 {
    let limit = (-1.0f64).exp();
    let mut k = 0.0;
    let mut p = rng.next_f64();
    while p > limit {
        k += 1.0;
        p *= rng.next_f64();
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A world where the truth is known in shape: activity falls with the week's sends (fatigue)
    /// and an opened message lifts the user's engagement for good. The logging policy messages
    /// engaged users more, so across users more messages go with more activity; within a user,
    /// the daily coin decides.
    fn fit(seed: u64, users: u64, members: usize) -> ValueFunction {
        let channels = vec!["push".to_string(), "email".to_string()];
        let mut config = ValueConfig::for_horizon(14.0, seed);
        config.members = members;
        let mut fit = ValueFit::new(channels.clone(), config).unwrap();
        for u in 0..users {
            let mut r = rng::derive(99, 1, u);
            fit.user(u);
            let mut engagement = r.next_f64() * 4.0 - 2.0;
            let rate = 0.1 + 0.8 / (1.0 + (-2.0 * engagement).exp());
            let mut sends: Vec<(u32, bool)> = Vec::new(); // (day, opened)
            let mut active_days: Vec<u32> = Vec::new();
            let state_at = |day: u32, sends: &[(u32, bool)], active_days: &[u32]| {
                let recent = |w: u32| sends.iter().filter(move |(d, _)| *d + w >= day && *d < day);
                let h = ChannelHistory {
                    channel: "push",
                    sent_1d: recent(1).count() as u32,
                    sent_7d: recent(7).count() as u32,
                    sent_28d: recent(28).count() as u32,
                    opened_28d: recent(28).filter(|(_, o)| *o).count() as u32,
                    hours_since_last: sends.last().map(|(d, _)| f64::from(day - d) * 24.0),
                };
                let active_28d = active_days.iter().filter(|d| **d + 28 >= day).count();
                let since = active_days.last().map(|d| f64::from(day - d - 1) * 24.0);
                (
                    UserContext {
                        tenure_days: f64::from(day),
                        utc_offset_minutes: 0,
                        active_days_28d: active_28d as f64,
                        hours_since_active: since,
                    },
                    h,
                )
            };
            for day in 0..40u32 {
                let (user, h) = state_at(day, &sends, &active_days);
                let fatigue = f64::from(h.sent_7d);
                if r.next_f64() < rate {
                    let opened = r.next_f64() < 0.4;
                    if opened {
                        engagement += 0.15;
                    }
                    sends.push((day, opened));
                }
                let p = 1.0 / (1.0 + (-(engagement - 0.35 * fatigue)).exp());
                let active = r.next_f64() < p;
                if active {
                    active_days.push(day);
                }
                let (next_user, next_h) = state_at(day + 1, &sends, &active_days);
                let (hs, nhs) = ([h], [next_h]);
                fit.push(
                    &UserState {
                        user,
                        history: &hs,
                        lost: &[],
                    },
                    active,
                    &UserState {
                        user: next_user,
                        history: &nhs,
                        lost: &[],
                    },
                );
            }
        }
        fit.finish().unwrap()
    }

    fn tired_user() -> (UserContext, ChannelHistory<'static>) {
        (
            UserContext {
                tenure_days: 30.0,
                utc_offset_minutes: 0,
                active_days_28d: 14.0,
                hours_since_active: Some(10.0),
            },
            ChannelHistory {
                channel: "push",
                sent_1d: 1,
                sent_7d: 5,
                sent_28d: 15,
                opened_28d: 5,
                hours_since_last: Some(20.0),
            },
        )
    }

    #[test]
    fn fatigue_costs_and_opens_pay() {
        let v = fit(7, 3_000, 4);
        let (user, h) = tired_user();
        let hs = [h];
        let state = UserState {
            user,
            history: &hs,
            lost: &[],
        };
        let unopened = v.effect(
            &state,
            &Send {
                channel: "push",
                p_open: 0.0,
                p_loss: 0.0,
            },
        );
        let opened = v.effect(
            &state,
            &Send {
                channel: "push",
                p_open: 1.0,
                p_loss: 0.0,
            },
        );
        assert!(
            unopened.days < 0.0,
            "a send nobody opens only tires: {unopened:?}"
        );
        assert!(
            opened.days > unopened.days,
            "an open lifts the future: {opened:?} vs {unopened:?}"
        );
        assert!(unopened.spread > 0.0);
        assert!(unopened.conservative() < unopened.days);
        // A channel it does not know has no effect.
        let none = v.effect(
            &state,
            &Send {
                channel: "sms",
                p_open: 0.5,
                p_loss: 0.0,
            },
        );
        assert_eq!(none, Effect::default());
        assert_eq!(v.feature_names().len(), v.weights.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_fit() {
        let a = fit(3, 300, 3);
        let b = fit(3, 300, 3);
        assert_eq!(a, b);
        let c = fit(4, 300, 3);
        assert_eq!(a.weights, c.weights, "the seed only draws the bootstrap");
        assert_ne!(a.members, c.members);
    }

    #[test]
    fn nothing_to_fit_is_an_error_and_bad_settings_are_refused() {
        let fit = ValueFit::new(vec!["push".into()], ValueConfig::for_horizon(28.0, 1)).unwrap();
        assert!(matches!(fit.finish(), Err(ModelError::NoData(_))));
        // Three days per user cannot show a horizon of seven.
        let mut fit = ValueFit::new(vec!["push".into()], ValueConfig::for_horizon(7.0, 1)).unwrap();
        let history = [ChannelHistory::default()];
        let state = UserState {
            user: UserContext::default(),
            history: &history,
            lost: &[],
        };
        for u in 0..10 {
            fit.user(u);
            for _ in 0..3 {
                fit.push(&state, true, &state);
            }
        }
        assert!(matches!(fit.finish(), Err(ModelError::NoData(m)) if m.contains("7 days")));
        let mut bad = ValueConfig::for_horizon(28.0, 1);
        bad.gamma = 1.0;
        assert!(ValueFit::new(vec![], bad).is_err());
    }
}
