//! The selection loop: values, caps, exploration, send times, and the budget prices around it.
//!
//! [`Planner::plan`] runs [`Planner::plan_user`] for every user in parallel, given one price per
//! channel. Users are independent given the prices, so the only global step is the budget search:
//! bisection on each binding channel's price, then an exact fit that drops the lowest-margin
//! choices. See `docs/planner.md` for the rules in prose.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rayon::prelude::*;

use crate::config::{Compiled, CompiledArm, ConfigError, Limit, PlannerConfig};
use crate::pacing::{self, Pacing, SLOTS, SLOT_SECS};
use crate::random::user_stream;
use crate::time::{build_pieces, Piece};
use crate::types::*;

/// How many bisection passes the budget search runs once a budget binds. Each pass plans every
/// user, so this bounds the cost of a binding budget at `1 + BUDGET_ROUNDS + 1` passes.
pub const BUDGET_ROUNDS: u32 = 20;

/// A validated configuration, ready to plan.
#[derive(Debug, Clone)]
pub struct Planner {
    config: PlannerConfig,
    pub(crate) c: Compiled,
}

/// Why a plan could not run at all. Everything else about bad input is reported per user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("user {0:?} appears more than once in the input")]
    DuplicateUser(String),
}

/// One candidate inside the selection loop.
#[derive(Debug, Clone, Copy)]
struct Cand {
    opp: u32,
    ch: u16,
    /// Not held back by the arm's caps (the arm's cap set exempts its class, or the class
    /// bypasses caps).
    exempt: bool,
    /// Its class bypasses something: placed at the earliest allowed moment, not by profile.
    urgent: bool,
    /// Its class bypasses quiet hours.
    loud: bool,
    /// Its class bypasses budgets: not priced, dropped last.
    unpriced: bool,
    done: bool,
    /// Where in the piece order placement resumes: every earlier piece was unusable or blocked,
    /// and stays so, because choices only add sends.
    cursor: u16,
    /// The reason seen at the most preferred blocked piece so far.
    blocked: Option<Reason>,
    value: f64,
    margin: f64,
    mask: u64,
    earliest: i64,
    latest: i64,
    expires: i64,
    scores: Scores,
}

/// Buffers reused from user to user on one thread, so the hot path allocates only the output.
#[derive(Default)]
pub(crate) struct Scratch {
    segs: Vec<(i64, i32)>,
    pieces: Vec<Piece>,
    order: Vec<u16>,
    /// Piece indices in time order, for urgent candidates.
    by_time: Vec<u16>,
    cands: Vec<Cand>,
    points: Vec<Vec<i64>>,
    allowed: Vec<(usize, i64, i64)>,
    memo: Memo,
    /// Per rule of the user's arm: the value a candidate must reach to take one of its slots.
    paced: Vec<f64>,
}

/// Cap-check results per (rule mask, piece start), valid until the next choice changes the
/// counts. Candidates that share a channel and category share a mask, so a user whose caps are
/// exhausted pays for each piece once per mask instead of once per candidate.
#[derive(Default)]
struct Memo {
    masks: Vec<u64>,
    pieces: usize,
    cells: Vec<Cell>,
}

#[derive(Clone, Copy)]
enum Cell {
    Unknown,
    Pass,
    Block(Reason),
}

impl Memo {
    fn reset(&mut self, pieces: usize) {
        self.masks.clear();
        self.cells.clear();
        self.pieces = pieces;
    }

    fn invalidate(&mut self) {
        self.cells.fill(Cell::Unknown);
    }

    fn base(&mut self, mask: u64) -> usize {
        let i = match self.masks.iter().position(|&m| m == mask) {
            Some(i) => i,
            None => {
                self.masks.push(mask);
                self.cells
                    .resize(self.masks.len() * self.pieces, Cell::Unknown);
                self.masks.len() - 1
            }
        };
        i * self.pieces
    }
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// The value of a candidate under an objective. The reachability weight is a penalty on the
/// probability of losing the channel, hence the minus.
pub fn value_of(o: &crate::config::Objective, s: &Scores) -> f64 {
    o.conversion * s.conversion + o.engagement * s.engagement + o.retention * s.retention
        - o.reachability * s.reachability_loss
}

impl Planner {
    pub fn new(config: PlannerConfig) -> Result<Self, ConfigError> {
        let c = config.compile()?;
        Ok(Planner { config, c })
    }

    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// The experiment arm of a user (index into the compiled arms).
    pub(crate) fn arm_index(&self, user_id: &str) -> usize {
        match &self.c.salt {
            None => 0,
            Some(salt) => {
                let arms = self.c.arms.iter().map(|a| a.name.as_str());
                tern_core::assign::rendezvous(
                    salt,
                    arms.zip(self.c.shares.iter().copied()),
                    user_id,
                )
                .unwrap_or(0)
            }
        }
    }

    /// The arm a user is planned under (index into the compiled arms): the one their input
    /// names, else the one the configured split assigns. `Err` with the name when the input
    /// names an arm that does not exist.
    fn arm_for<'u>(&self, user: &'u UserInput) -> Result<usize, &'u String> {
        match &user.arm {
            Some(name) => self.c.arms.iter().position(|a| &a.name == name).ok_or(name),
            None => Ok(self.arm_index(&user.user_id)),
        }
    }

    pub(crate) fn arm(&self, name: &str) -> Option<&CompiledArm> {
        self.c.arms.iter().find(|a| a.name == name)
    }

    /// The name of the arm a user is assigned to (`default` without an experiment).
    pub fn arm_of(&self, user_id: &str) -> &str {
        &self.c.arms[self.arm_index(user_id)].name
    }

    /// Plans every user. The result depends only on the arguments: not on the number of threads,
    /// nor on the order of `users` (the output is sorted by user id).
    pub fn plan(
        &self,
        users: &[UserInput],
        now: DateTime<Utc>,
        seed: u64,
        predictor: &dyn Predictor,
    ) -> Result<Plan, PlanError> {
        let now = now.timestamp();
        let mut order: Vec<usize> = (0..users.len()).collect();
        order.sort_by(|&a, &b| users[a].user_id.cmp(&users[b].user_id));
        for w in order.windows(2) {
            if users[w[0]].user_id == users[w[1]].user_id {
                return Err(PlanError::DuplicateUser(users[w[0]].user_id.clone()));
            }
        }
        let nch = self.c.channels.len();
        let arms: Vec<Option<usize>> = order
            .iter()
            .map(|&i| self.arm_for(&users[i]).ok())
            .collect();
        // A long-term objective's users are scored at every slot of the next day.
        let slots: Vec<usize> = arms
            .iter()
            .map(|a| match a {
                Some(a) if self.c.arms[*a].objective.long_term => SLOTS,
                _ => 1,
            })
            .collect();
        let scores = score(users, &order, &slots, now, predictor);
        let pacing = self.pacing(users, &order, &arms, &scores, now);
        let run = |prices: &[f64]| -> Vec<UserPlan> {
            order
                .par_iter()
                .zip(&scores)
                .map_init(Scratch::default, |s, (&i, scores)| {
                    self.plan_user(&users[i], now, seed, prices, scores, &pacing, s)
                })
                .collect()
        };
        let mut prices = vec![0.0; nch];
        let mut plans = run(&prices);
        let mut passes = 1;
        let budgets = &self.c.budgets;
        let over = |plans: &[UserPlan], ch: usize| -> bool {
            budgets[ch].is_some_and(|b| count_chosen(plans, ch as u16) > b)
        };

        if (0..nch).any(|ch| over(&plans, ch)) {
            // Bisection per binding channel on [lo, hi]: at hi the channel's volume fitted (or
            // nothing is chosen there at all), at lo it did not.
            let max_min_value = self
                .c
                .arms
                .iter()
                .map(|a| a.objective.min_value.abs())
                .fold(0.0, f64::max);
            let mut bounds: Vec<Option<(f64, f64)>> = vec![None; nch];
            let activate =
                |plans: &[UserPlan], bounds: &mut Vec<Option<(f64, f64)>>, prices: &[f64]| {
                    for ch in 0..nch {
                        if bounds[ch].is_none() && over(plans, ch) {
                            let top = max_chosen_value(plans, ch as u16);
                            bounds[ch] =
                                Some((prices[ch], top.max(prices[ch]) + 2.0 * max_min_value + 1.0));
                        }
                    }
                };
            activate(&plans, &mut bounds, &prices);
            let mut exact = false;
            for _ in 0..BUDGET_ROUNDS {
                for ch in 0..nch {
                    if let Some((lo, hi)) = bounds[ch] {
                        prices[ch] = (lo + hi) / 2.0;
                    }
                }
                plans = run(&prices);
                passes += 1;
                // Every bracketed channel exactly at its budget: these prices are the answer.
                let mut all_exact = true;
                for ch in 0..nch {
                    if let Some((lo, hi)) = bounds[ch] {
                        let n = count_chosen(&plans, ch as u16);
                        let budget = budgets[ch].unwrap_or(u64::MAX);
                        all_exact &= n == budget;
                        bounds[ch] = Some(if n > budget {
                            (prices[ch], hi)
                        } else {
                            (lo, prices[ch])
                        });
                    }
                }
                let active = bounds.iter().filter(|b| b.is_some()).count();
                activate(&plans, &mut bounds, &prices);
                if all_exact && active == bounds.iter().filter(|b| b.is_some()).count() {
                    exact = true;
                    break;
                }
            }
            if !exact {
                // The final pass runs at the low end, where the volume (just) exceeds the budget,
                // and the exact fit below removes the lowest margins. Running at the high end
                // instead could leave the budget underused when many candidates tie in value.
                for ch in 0..nch {
                    if let Some((lo, _)) = bounds[ch] {
                        prices[ch] = lo;
                    }
                }
                plans = run(&prices);
                passes += 1;
            }
        }

        let mut budget_dropped = vec![0u64; nch];
        for ch in 0..nch {
            if let Some(b) = budgets[ch] {
                budget_dropped[ch] = exact_fit(&mut plans, ch as u16, b, prices[ch]);
            }
        }

        let mut stats = Stats {
            users: plans.len() as u64,
            passes,
            ..Stats::default()
        };
        for u in users {
            stats.candidates += u
                .opportunities
                .iter()
                .map(|o| o.channels.len() as u64)
                .sum::<u64>();
        }
        for (ch, name) in self.c.channels.iter().enumerate() {
            stats
                .chosen
                .insert(name.clone(), count_chosen(&plans, ch as u16));
            stats.prices.insert(name.clone(), prices[ch]);
            if budget_dropped[ch] > 0 {
                stats
                    .budget_dropped
                    .insert(name.clone(), budget_dropped[ch]);
            }
        }
        for p in &plans {
            for s in &p.suppressions {
                *stats
                    .suppressed
                    .entry(s.reason.as_str().to_string())
                    .or_default() += 1;
            }
        }
        Ok(Plan {
            channels: self.c.channels.clone(),
            users: plans,
            stats,
        })
    }

    /// What a cap slot is worth, per long-term arm and count rule: the values this plan's
    /// candidates counted by the rule reach, one per opportunity at its best channel and slot
    /// (see [`crate::pacing`]).
    fn pacing(
        &self,
        users: &[UserInput],
        order: &[usize],
        arms: &[Option<usize>],
        scores: &[Vec<Scores>],
        now: i64,
    ) -> Pacing {
        let c = &self.c;
        let mut values: Vec<Vec<Vec<f64>>> = c
            .arms
            .iter()
            .map(|a| {
                vec![
                    Vec::new();
                    if a.objective.long_term {
                        a.rules.len()
                    } else {
                        0
                    }
                ]
            })
            .collect();
        // The best value per rule of one opportunity, reused from opportunity to opportunity.
        let mut best: Vec<f64> = Vec::new();
        for ((&i, arm), scores) in order.iter().zip(arms).zip(scores) {
            let Some(ai) = *arm else { continue };
            let a = &c.arms[ai];
            if !a.objective.long_term || a.rules.is_empty() || a.holdout {
                continue;
            }
            let user = &users[i];
            let n = candidates(user);
            let k = scores.len().checked_div(n).unwrap_or(1).max(1);
            let mut base = 0;
            for o in &user.opportunities {
                let here = base;
                base += o.channels.len();
                let bypass = c.bypass.get(&o.priority).copied().unwrap_or_default();
                if bypass.any()
                    || a.exempt.contains(&o.priority)
                    || o.expires_at.timestamp() <= now
                    || user.opted_out_categories.contains(&o.category)
                {
                    continue;
                }
                best.clear();
                best.resize(a.rules.len(), f64::NEG_INFINITY);
                for (j, name) in o.channels.iter().enumerate() {
                    let Some(ch) = c.channels.iter().position(|n| n == name) else {
                        continue;
                    };
                    if user.opted_out_channels.contains(name)
                        || user.unreachable_channels.contains(name)
                    {
                        continue;
                    }
                    let v = (0..k)
                        .filter_map(|slot| scores.get(slot * n + here + j))
                        .map(|sc| value_of(&a.objective, sc))
                        .filter(|v| v.is_finite())
                        .fold(f64::NEG_INFINITY, f64::max);
                    let mut m = a.mask(Some(ch as u16), &o.category);
                    while m != 0 {
                        let r = m.trailing_zeros() as usize;
                        m &= m - 1;
                        best[r] = best[r].max(v);
                    }
                }
                for (r, &v) in best.iter().enumerate() {
                    if v.is_finite() && matches!(a.rules[r].limit, Limit::Max { .. }) {
                        values[ai][r].push(v);
                    }
                }
            }
        }
        for rules in &mut values {
            for v in rules {
                v.sort_by(f64::total_cmp);
            }
        }
        Pacing { values }
    }

    /// Plans one user given the channel prices.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plan_user(
        &self,
        user: &UserInput,
        now: i64,
        seed: u64,
        prices: &[f64],
        scores: &[Scores],
        pacing: &Pacing,
        s: &mut Scratch,
    ) -> UserPlan {
        let c = &self.c;
        let named = self.arm_for(user);
        let arm_index = match named {
            Ok(a) => a,
            Err(_) => self.arm_index(&user.user_id),
        };
        let arm = &c.arms[arm_index];
        let mut up = UserPlan {
            user_id: user.user_id.clone(),
            arm: arm.name.clone(),
            // Sized once: growing these by doubling was a fifth of the run time in malloc.
            choices: Vec::with_capacity(4),
            suppressions: Vec::with_capacity(
                user.opportunities.iter().map(|o| o.channels.len()).sum(),
            ),
            error: None,
        };
        let suppress = |up: &mut UserPlan,
                        opp: i64,
                        channel: Option<u16>,
                        reason: Reason,
                        value: Option<f64>| {
            up.suppressions.push(Suppression {
                opportunity: opp,
                channel,
                reason,
                value,
                counterfactual: None,
            })
        };

        let tz: Result<Tz, _> = user.timezone.parse();
        let profile = &user.send_time_profile;
        let profile_ok = profile.is_empty()
            || (profile.len() == 24 && profile.iter().all(|w| w.is_finite() && *w >= 0.0));
        let unknown_arm = match named {
            Err(name) => Some(format!("unknown experiment arm {name:?}")),
            Ok(_) => None,
        };
        let tz = match (tz, profile_ok, unknown_arm) {
            (Ok(tz), true, None) => tz,
            (tz, _, unknown_arm) => {
                up.error = Some(if let Some(message) = unknown_arm {
                    message
                } else if tz.is_err() {
                    format!("unknown time zone {:?}", user.timezone)
                } else {
                    "send_time_profile must be empty or 24 finite, non-negative weights".into()
                });
                for o in &user.opportunities {
                    suppress(&mut up, o.id, None, Reason::BadInput, None);
                }
                // Like every other line: by opportunity, whatever the input order.
                up.suppressions.sort_by_key(|a| (a.opportunity, a.channel));
                return up;
            }
        };

        let horizon_end = now + c.horizon;
        let window = c.window;
        build_pieces(tz, now, horizon_end, c, &mut s.segs, &mut s.pieces);
        s.memo.reset(s.pieces.len());
        s.order.clear();
        s.order.extend(0..s.pieces.len() as u16);
        s.by_time.clear();
        s.by_time.extend(0..s.pieces.len() as u16);
        if !profile.is_empty() {
            let pieces = &s.pieces;
            // Stable: equally good pieces stay in time order, so the earliest wins.
            s.order.sort_by(|&a, &b| {
                profile[pieces[b as usize].hour as usize]
                    .total_cmp(&profile[pieces[a as usize].hour as usize])
            });
        }

        // Every send the caps count: history now, this plan's choices as they are made.
        let nrules = arm.rules.len();
        if s.points.len() < nrules {
            s.points.resize_with(nrules, Vec::new);
        }
        for p in &mut s.points[..nrules] {
            p.clear();
        }
        if nrules > 0 {
            for h in &user.history {
                let ch = c
                    .channels
                    .iter()
                    .position(|n| *n == h.channel)
                    .map(|i| i as u16);
                let mut m = arm.mask(ch, &h.category);
                let t = h.sent_at.timestamp();
                while m != 0 {
                    let r = m.trailing_zeros() as usize;
                    m &= m - 1;
                    s.points[r].push(t);
                }
            }
            for p in &mut s.points[..nrules] {
                p.sort_unstable();
            }
        }

        // Candidates: everything that survives the checks that do not depend on other choices.
        s.cands.clear();
        let objective = &arm.objective;
        pacing::thresholds(
            arm,
            arm_index,
            &c.channels,
            user,
            &s.points[..nrules],
            now,
            pacing,
            &mut s.paced,
        );
        let ncands = candidates(user);
        let slots = scores.len().checked_div(ncands).unwrap_or(1).max(1);
        let mut k = 0;
        for (oi, o) in user.opportunities.iter().enumerate() {
            let base = k;
            k += o.channels.len();
            let expires = o.expires_at.timestamp();
            let created = o.created_at.timestamp();
            if expires <= now || expires <= created {
                suppress(&mut up, o.id, None, Reason::Expired, None);
                continue;
            }
            if user.opted_out_categories.contains(&o.category) {
                suppress(&mut up, o.id, None, Reason::OptedOutCategory, None);
                continue;
            }
            let earliest = now.max(created);
            let latest = expires.min(horizon_end);
            let bypass = c.bypass.get(&o.priority).copied().unwrap_or_default();
            let exempt = bypass.caps || arm.exempt.contains(&o.priority);
            let cat_mask = self.category_mask(arm, &o.category);
            for (j, name) in o.channels.iter().enumerate() {
                let Some(ch) = c.channels.iter().position(|n| n == name) else {
                    suppress(&mut up, o.id, None, Reason::UnknownChannel, None);
                    continue;
                };
                let ch = ch as u16;
                if o.channels[..j].contains(name) {
                    suppress(
                        &mut up,
                        o.id,
                        Some(ch),
                        Reason::Duplicate { chosen_channel: ch },
                        None,
                    );
                    continue;
                }
                if user.opted_out_channels.contains(name) {
                    suppress(&mut up, o.id, Some(ch), Reason::OptedOut, None);
                    continue;
                }
                if user.unreachable_channels.contains(name) {
                    suppress(&mut up, o.id, Some(ch), Reason::Unreachable, None);
                    continue;
                }
                let (mut earliest, mut latest) = (earliest, latest);
                let mut scores_at = scores.get(base + j).copied().unwrap_or_default();
                if slots > 1 && !bypass.any() {
                    // Send time by value: the slot worth most among those still open on the
                    // channel before the opportunity expires; the earliest among equals.
                    let mut best: Option<(f64, i64, i64, Scores)> = None;
                    for slot in 0..slots {
                        let a = (now + slot as i64 * SLOT_SECS).max(earliest);
                        let b = (now + (slot as i64 + 1) * SLOT_SECS).min(latest);
                        if a >= b || !open_between(&s.pieces, ch, a, b) {
                            continue;
                        }
                        let sc = scores
                            .get(slot * ncands + base + j)
                            .copied()
                            .unwrap_or_default();
                        let v = value_of(objective, &sc);
                        if best.is_none_or(|(bv, ..)| v > bv) {
                            best = Some((v, a, b, sc));
                        }
                    }
                    if let Some((_, a, b, sc)) = best {
                        (earliest, latest, scores_at) = (a, b, sc);
                    }
                }
                let scores = scores_at;
                let mut value = value_of(objective, &scores);
                if bypass.min_value && value.is_nan() {
                    // A broken model must not stop a message that has to go out.
                    value = 0.0;
                }
                // NaN from a broken model is refused too.
                if value.is_nan() || (value < objective.min_value && !bypass.min_value) {
                    let v = value.is_finite().then_some(value);
                    suppress(&mut up, o.id, Some(ch), Reason::BelowMinValue, v);
                    continue;
                }
                if earliest >= latest {
                    suppress(&mut up, o.id, Some(ch), Reason::Horizon, Some(value));
                    continue;
                }
                let chan_mask = arm.channel_masks.get(ch as usize).copied().unwrap_or(0);
                if !exempt && !bypass.any() {
                    let mut m = chan_mask & cat_mask;
                    let mut threshold = f64::NEG_INFINITY;
                    while m != 0 {
                        let r = m.trailing_zeros() as usize;
                        m &= m - 1;
                        threshold =
                            threshold.max(s.paced.get(r).copied().unwrap_or(f64::NEG_INFINITY));
                    }
                    if value < threshold {
                        suppress(
                            &mut up,
                            o.id,
                            Some(ch),
                            Reason::Paced { threshold },
                            Some(value),
                        );
                        continue;
                    }
                }
                // A class that bypasses budgets is not priced: a password reset must not lose to
                // a price. It still counts toward the budget, and the exact fit drops it last.
                let price = if bypass.budgets {
                    0.0
                } else {
                    prices[ch as usize]
                };
                let margin = value - price;
                // A class that bypasses `min_value` meets the floor only against a price: at
                // price 0 the budget does not bind, and the value alone must not suppress it.
                let priced = !bypass.min_value || price > 0.0;
                if !bypass.budgets && priced && (margin.is_nan() || margin < objective.min_value) {
                    suppress(
                        &mut up,
                        o.id,
                        Some(ch),
                        Reason::Budget { price },
                        Some(value),
                    );
                    continue;
                }
                s.cands.push(Cand {
                    opp: oi as u32,
                    ch,
                    exempt,
                    urgent: bypass.any(),
                    loud: bypass.quiet_hours,
                    unpriced: bypass.budgets,
                    done: false,
                    cursor: 0,
                    blocked: None,
                    value,
                    margin,
                    mask: chan_mask & cat_mask,
                    earliest,
                    latest,
                    expires,
                    scores,
                });
            }
        }
        let opps = &user.opportunities;
        s.cands.sort_by(|a, b| {
            b.exempt
                .cmp(&a.exempt)
                .then(b.margin.total_cmp(&a.margin))
                .then(opps[a.opp as usize].id.cmp(&opps[b.opp as usize].id))
                .then(a.ch.cmp(&b.ch))
        });

        // Decisions. Exempt candidates first and deterministically: nothing blocks them, and
        // placing them first means every later check already counts them.
        let eps = c.exploration;
        let mut rng = user_stream(seed, &user.user_id);
        let n = s.cands.len();
        let mut i = 0;
        while i < n && s.cands[i].exempt {
            let cand = s.cands[i];
            self.decide_fixed(user, arm, cand, window, horizon_end, s, &mut up);
            i += 1;
        }
        if eps == 0.0 {
            // Without exploration the greedy decision at each step is the first remaining
            // candidate that can still be placed; one that cannot be placed now never can later,
            // because choices only add sends. So one pass in margin order is the greedy loop.
            while i < n {
                let cand = s.cands[i];
                self.decide_fixed(user, arm, cand, window, horizon_end, s, &mut up);
                i += 1;
            }
        } else {
            let start = i;
            loop {
                s.allowed.clear();
                for j in start..n {
                    let cand = s.cands[j];
                    if cand.done {
                        continue;
                    }
                    let id = opps[cand.opp as usize].id;
                    if let Some(dup) = self.duplicate_of(&up, id) {
                        suppress(
                            &mut up,
                            id,
                            Some(cand.ch),
                            Reason::Duplicate {
                                chosen_channel: dup,
                            },
                            Some(cand.value),
                        );
                        s.cands[j].done = true;
                        continue;
                    }
                    let order = if cand.urgent { &s.by_time } else { &s.order };
                    match place(
                        arm,
                        &mut s.cands[j],
                        window,
                        horizon_end,
                        &s.pieces,
                        order,
                        &s.points,
                        &mut s.memo,
                    ) {
                        Ok((a, b)) => s.allowed.push((j, a, b)),
                        Err(reason) => {
                            suppress(&mut up, id, Some(cand.ch), reason, Some(cand.value));
                            s.cands[j].done = true;
                        }
                    }
                }
                if s.allowed.is_empty() {
                    break;
                }
                let len = s.allowed.len();
                let explore = rng.next_f64() < eps;
                let pick = if explore { rng.below(len) } else { 0 };
                let propensity = if pick == 0 { 1.0 - eps } else { 0.0 } + eps / len as f64;
                let (j, a, b) = s.allowed[pick];
                s.cands[j].done = true;
                let cand = s.cands[j];
                self.choose(
                    user,
                    arm,
                    &cand,
                    a,
                    b,
                    propensity,
                    explore,
                    &mut s.points,
                    &mut up,
                );
                s.memo.invalidate();
            }
        }

        up.choices.sort_by(|a, b| {
            (a.send_after, a.opportunity, a.channel).cmp(&(b.send_after, b.opportunity, b.channel))
        });
        if arm.holdout {
            // A holdout measures what the policy's choices do; a class that bypasses holdouts
            // (a password reset) is not the policy's choice, so it still goes out.
            let bypasses_holdout = |c: &Choice| {
                user.opportunities
                    .iter()
                    .find(|o| o.id == c.opportunity)
                    .and_then(|o| self.c.bypass.get(&o.priority))
                    .is_some_and(|b| b.holdouts)
            };
            let (kept, held): (Vec<Choice>, Vec<Choice>) = std::mem::take(&mut up.choices)
                .into_iter()
                .partition(bypasses_holdout);
            up.choices = kept;
            for ch in held {
                up.suppressions.push(Suppression {
                    opportunity: ch.opportunity,
                    channel: Some(ch.channel),
                    reason: Reason::Holdout,
                    value: Some(ch.value),
                    counterfactual: Some(Box::new(ch)),
                });
            }
        }
        up.suppressions.sort_by_key(|a| (a.opportunity, a.channel));
        up
    }

    fn category_mask(&self, arm: &CompiledArm, category: &str) -> u64 {
        let mut m = arm.any_category;
        for (i, r) in arm.rules.iter().enumerate() {
            if r.category.as_deref() == Some(category) {
                m |= 1 << i;
            }
        }
        m
    }

    /// The channel this opportunity was already chosen on, or withheld on: a withheld send is
    /// the decision not to send that opportunity at all, so its other channels do not go either.
    fn duplicate_of(&self, up: &UserPlan, opp: i64) -> Option<u16> {
        let withheld = || {
            up.suppressions
                .iter()
                .find(|s| s.opportunity == opp && s.reason == Reason::Withheld)
                .and_then(|s| s.channel)
        };
        if self.c.multi_channel {
            return withheld();
        }
        up.choices
            .iter()
            .find(|c| c.opportunity == opp)
            .map(|c| c.channel)
            .or_else(withheld)
    }

    /// One deterministic decision: choose `cand` if it can be placed (propensity 1), or record why
    /// not.
    #[allow(clippy::too_many_arguments)]
    fn decide_fixed(
        &self,
        user: &UserInput,
        arm: &CompiledArm,
        mut cand: Cand,
        window: i64,
        horizon_end: i64,
        s: &mut Scratch,
        up: &mut UserPlan,
    ) {
        let id = user.opportunities[cand.opp as usize].id;
        let reason = if let Some(dup) = self.duplicate_of(up, id) {
            Reason::Duplicate {
                chosen_channel: dup,
            }
        } else {
            let order = if cand.urgent { &s.by_time } else { &s.order };
            match place(
                arm,
                &mut cand,
                window,
                horizon_end,
                &s.pieces,
                order,
                &s.points,
                &mut s.memo,
            ) {
                Ok((a, b)) => {
                    self.choose(user, arm, &cand, a, b, 1.0, false, &mut s.points, up);
                    s.memo.invalidate();
                    return;
                }
                Err(r) => r,
            }
        };
        up.suppressions.push(Suppression {
            opportunity: id,
            channel: Some(cand.ch),
            reason,
            value: Some(cand.value),
            counterfactual: None,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn choose(
        &self,
        user: &UserInput,
        arm: &CompiledArm,
        cand: &Cand,
        a: i64,
        b: i64,
        propensity: f64,
        explored: bool,
        points: &mut [Vec<i64>],
        up: &mut UserPlan,
    ) {
        let _ = arm;
        let opportunity = user.opportunities[cand.opp as usize].id;
        // Classes that bypass anything must go out; everything else may be withheld at random,
        // by one draw per opportunity, so that every plan makes the same draw.
        let may_withhold = self.c.withhold > 0.0 && !(cand.exempt || cand.urgent || cand.unpriced);
        let choice = |propensity: f64| Choice {
            opportunity,
            channel: cand.ch,
            send_after: ts(a),
            send_before: ts(b),
            value: cand.value,
            margin: cand.margin,
            propensity,
            explored,
            exempt: cand.exempt,
            unpriced: cand.unpriced,
            scores: cand.scores,
        };
        if may_withhold && withheld(&user.user_id, opportunity, self.c.withhold) {
            // Not sent, so it takes no cap slot.
            up.suppressions.push(Suppression {
                opportunity,
                channel: Some(cand.ch),
                reason: Reason::Withheld,
                value: Some(cand.value),
                counterfactual: Some(Box::new(choice(self.c.withhold))),
            });
            return;
        }
        let propensity = if may_withhold {
            propensity * (1.0 - self.c.withhold)
        } else {
            propensity
        };
        let mut m = cand.mask;
        while m != 0 {
            let r = m.trailing_zeros() as usize;
            m &= m - 1;
            let p = &mut points[r];
            let at = p.partition_point(|&x| x <= a);
            p.insert(at, a);
        }
        up.choices.push(choice(propensity));
    }
}

/// Whether the policy withholds opportunity `id` of `user` at random, with probability `share`:
/// a fixed hash of the two, so that every plan (and every replica) draws the same.
pub fn withheld(user: &str, id: i64, share: f64) -> bool {
    let mut key = Vec::with_capacity(user.len() + 18);
    key.extend_from_slice(b"withhold\0");
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_le_bytes());
    let draw = tern_core::SplitMix64::new(tern_core::fnv1a64(&key)).next_f64();
    draw < share
}

/// The best allowed send window for a candidate: the first piece in preference order that is
/// outside the channel's quiet hours (unless the candidate bypasses them), overlaps
/// `[earliest, latest)`, and passes every cap and gap at its start (unless the candidate is
/// exempt). On failure, the reason seen at the most preferred piece that was otherwise open.
///
/// An urgent candidate is given `order` in time order, and its window runs on through the
/// following pieces, as long as they are not quiet for it, up to the send window or `latest`:
/// it is due from the first allowed moment for as long as one window allows.
#[allow(clippy::too_many_arguments)]
fn place(
    arm: &CompiledArm,
    cand: &mut Cand,
    window: i64,
    horizon_end: i64,
    pieces: &[Piece],
    order: &[u16],
    points: &[Vec<i64>],
    memo: &mut Memo,
) -> Result<(i64, i64), Reason> {
    let base = if cand.exempt { 0 } else { memo.base(cand.mask) };
    let from = cand.cursor as usize;
    let (loud, ch) = (cand.loud, cand.ch);
    let quiet = |p: &Piece| !loud && p.quiet >> ch & 1 == 1;
    for (k, &pi) in order.iter().enumerate().skip(from) {
        let p = pieces[pi as usize];
        if quiet(&p) {
            continue;
        }
        let a = p.start.max(cand.earliest);
        let mut b = p.end.min(cand.latest).min(a + window);
        if a >= b {
            continue;
        }
        if cand.urgent {
            let end = cand.latest.min(a + window);
            for q in &pieces[pi as usize + 1..] {
                if q.start >= end || quiet(q) {
                    break;
                }
                b = q.end.min(end);
            }
        }
        if cand.exempt {
            cand.cursor = k as u16;
            return Ok((a, b));
        }
        let verdict = if a == p.start {
            match memo.cells[base + pi as usize] {
                Cell::Pass => None,
                Cell::Block(r) => Some(r),
                Cell::Unknown => {
                    let v = check_caps(arm, cand.mask, a, window, points);
                    memo.cells[base + pi as usize] = v.map_or(Cell::Pass, Cell::Block);
                    v
                }
            }
        } else {
            check_caps(arm, cand.mask, a, window, points)
        };
        match verdict {
            None => {
                cand.cursor = k as u16;
                return Ok((a, b));
            }
            Some(r) => {
                if cand.blocked.is_none() {
                    cand.blocked = Some(r);
                }
            }
        }
    }
    cand.cursor = order.len() as u16;
    Err(cand.blocked.unwrap_or(if cand.expires <= horizon_end {
        Reason::QuietHours
    } else {
        Reason::Horizon
    }))
}

/// Whether a send at `t` keeps every rule in `mask`. Each send is treated as a point at its window
/// start, and every window is widened by the send window, so that however late in its window
/// delivery actually sends, no window of the rule's true length holds more than `max`.
#[inline]
fn check_caps(
    arm: &CompiledArm,
    mask: u64,
    t: i64,
    window: i64,
    points: &[Vec<i64>],
) -> Option<Reason> {
    let mut m = mask;
    while m != 0 {
        let r = m.trailing_zeros() as usize;
        m &= m - 1;
        let pts = &points[r];
        match arm.rules[r].limit {
            Limit::Max { max, window: w } => {
                let w = w + window;
                let lo = pts.partition_point(|&p| p <= t - w);
                let mid = lo + pts[lo..].partition_point(|&p| p <= t);
                let hi = mid + pts[mid..].partition_point(|&p| p < t + w);
                // Windows (e - w, e] that contain t end at t or at a later point before t + w.
                let mut fullest = mid - lo;
                let mut start = lo;
                for j in mid..hi {
                    let e = pts[j];
                    while pts[start] <= e - w {
                        start += 1;
                    }
                    fullest = fullest.max(j + 1 - start);
                }
                if fullest as u64 + 1 > max as u64 {
                    return Some(Reason::Cap {
                        rule: r as u16,
                        count: (fullest + 1) as u32,
                        max,
                    });
                }
            }
            Limit::MinGap { gap } => {
                let g = gap + window;
                let i = pts.partition_point(|&p| p <= t - g);
                if i < pts.len() && pts[i] < t + g {
                    return Some(Reason::MinGap { rule: r as u16 });
                }
            }
        }
    }
    None
}

fn count_chosen(plans: &[UserPlan], ch: u16) -> u64 {
    plans
        .iter()
        .map(|p| p.choices.iter().filter(|c| c.channel == ch).count() as u64)
        .sum()
}

fn max_chosen_value(plans: &[UserPlan], ch: u16) -> f64 {
    plans
        .iter()
        .flat_map(|p| p.choices.iter())
        .filter(|c| c.channel == ch)
        .map(|c| c.value)
        .fold(0.0, f64::max)
}

/// Drops the lowest-margin choices on `ch` until at most `budget` remain: priced ones first,
/// those whose class bypasses budgets only if they alone exceed the budget. Ties: the later user id (byte order), then
/// the larger opportunity id, is dropped first. Returns how many were dropped.
fn exact_fit(plans: &mut [UserPlan], ch: u16, budget: u64, price: f64) -> u64 {
    let count = count_chosen(plans, ch);
    if count <= budget {
        return 0;
    }
    let excess = (count - budget) as usize;
    let mut all: Vec<(bool, f64, usize, i64)> = Vec::with_capacity(count as usize);
    for (u, p) in plans.iter().enumerate() {
        for c in p.choices.iter().filter(|c| c.channel == ch) {
            all.push((c.unpriced, c.margin, u, c.opportunity));
        }
    }
    // Users are sorted by id, so a larger index is a later id.
    all.sort_by(|a, b| {
        (a.0.cmp(&b.0))
            .then(a.1.total_cmp(&b.1))
            .then(b.2.cmp(&a.2))
            .then(b.3.cmp(&a.3))
    });
    let mut drop: Vec<(usize, i64)> = all[..excess].iter().map(|x| (x.2, x.3)).collect();
    drop.sort_unstable();
    for (u, opp) in drop {
        let p = &mut plans[u];
        if let Some(i) = p
            .choices
            .iter()
            .position(|c| c.channel == ch && c.opportunity == opp)
        {
            let c = p.choices.remove(i);
            p.suppressions.push(Suppression {
                opportunity: c.opportunity,
                channel: Some(ch),
                reason: Reason::Budget { price },
                value: Some(c.value),
                counterfactual: None,
            });
        }
    }
    for p in plans.iter_mut() {
        p.suppressions.sort_by_key(|a| (a.opportunity, a.channel));
    }
    excess as u64
}

/// Users per [`Predictor::predict_many`] call: about 2,000 to 4,000 candidates, the batch size
/// at which the model's inference is fastest per row.
const PREDICT_CHUNK_USERS: usize = 128;

/// Every user's predictions, in `order`: computed once per plan (budget passes reuse them), in
/// parallel chunks. A user with `slots[k] > 1` (a long-term objective) is scored at each slot:
/// their vector holds the candidates at the plan's start, then the same at each later slot.
fn score(
    users: &[UserInput],
    order: &[usize],
    slots: &[usize],
    now: i64,
    predictor: &dyn Predictor,
) -> Vec<Vec<Scores>> {
    order
        .par_chunks(PREDICT_CHUNK_USERS)
        .zip(slots.par_chunks(PREDICT_CHUNK_USERS))
        .flat_map_iter(|(chunk, slots)| {
            let batch: Vec<&UserInput> = chunk.iter().map(|&i| &users[i]).collect();
            let mut out: Vec<Vec<Scores>> = Vec::with_capacity(batch.len());
            let most = slots.iter().copied().max().unwrap_or(1);
            for slot in 0..most {
                let (who, these): (Vec<usize>, Vec<&UserInput>) = batch
                    .iter()
                    .enumerate()
                    .filter(|(u, _)| slots[*u] > slot)
                    .map(|(u, user)| (u, *user))
                    .unzip();
                let mut flat = Vec::with_capacity(these.iter().map(|u| candidates(u)).sum());
                if slot == 0 {
                    predictor.predict_many(&these, &mut flat);
                } else {
                    let at = ts(now + slot as i64 * SLOT_SECS);
                    predictor.predict_many_at(&these, Some(at), &mut flat);
                }
                // A predictor that returns too few scores leaves the rest at zero rather than
                // shifting them onto the next user.
                let mut flat = flat.into_iter();
                for (u, user) in who.into_iter().zip(these) {
                    let n = candidates(user);
                    if slot == 0 {
                        out.push(Vec::with_capacity(n * slots[u]));
                    }
                    let before = out[u].len();
                    out[u].extend(flat.by_ref().take(n));
                    out[u].resize(before + n, Scores::default());
                }
            }
            out
        })
        .collect()
}

/// Whether some piece of `[a, b)` is outside channel `ch`'s quiet hours.
fn open_between(pieces: &[Piece], ch: u16, a: i64, b: i64) -> bool {
    pieces
        .iter()
        .any(|p| p.start < b && p.end > a && p.quiet >> ch & 1 == 0)
}
