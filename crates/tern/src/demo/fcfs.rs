//! The arms that run beside tern rather than through it, with the policy's own caps and quiet
//! hours: `fcfs` (no planner: every opportunity is sent when it arrives, on its first reachable
//! channel outside quiet hours, until a cap says no), `none` (only what must go out) and
//! `oracle` (by the simulator's true effect of each send; see [`super::oracle`]).

use super::*;

/// One message a user got, as caps count it.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) channel: String,
    pub(super) category: String,
    /// Of a priority class the cap set does not hold back (its `exempt`, or a class that bypasses
    /// caps): neither counted nor held back.
    pub(super) exempt: bool,
    pub(super) at: DateTime<Utc>,
}

/// How a sender beside tern decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Mode {
    /// First come, first served.
    Fcfs,
    /// Only the classes that bypass anything (transactional); the rest is never sent.
    Nothing,
    /// By the true effect of each send (see [`super::oracle`]).
    Oracle(super::oracle::Oracle),
}

/// A sender without tern: no model, no planner; the policy's caps and quiet hours.
pub(super) struct Fcfs<'b> {
    pub(super) mode: Mode,
    pub(super) bundle: &'b Bundle,
    pub(super) timezones: BTreeMap<String, chrono_tz::Tz>,
    /// Reachable channels per user, as the profile says and outcomes revise.
    pub(super) reachable: BTreeMap<String, Vec<String>>,
    /// What each user was sent.
    pub(super) sent: BTreeMap<String, Vec<Sent>>,
    pub(super) queue: Vec<NewOpportunity>,
}

impl<'b> Fcfs<'b> {
    pub(super) fn new(mode: Mode, bundle: &'b Bundle, profiles: &[Profile]) -> Fcfs<'b> {
        Fcfs {
            mode,
            bundle,
            timezones: profiles
                .iter()
                .map(|p| {
                    (
                        p.user_id.clone(),
                        p.timezone.parse().unwrap_or(chrono_tz::UTC),
                    )
                })
                .collect(),
            reachable: profiles
                .iter()
                .map(|p| (p.user_id.clone(), reachable_channels(p)))
                .collect(),
            sent: BTreeMap::new(),
            queue: Vec::new(),
        }
    }

    pub(super) fn arrive(&mut self, opportunities: Vec<NewOpportunity>) {
        self.queue.extend(opportunities);
    }

    /// An unsubscribe or push-disabled outcome takes the channel away, as it would in any
    /// sender.
    pub(super) fn learn(&mut self, outcomes: &[Outcome], now: DateTime<Utc>) {
        for o in outcomes.iter().filter(|o| o.at <= now) {
            let Some(lost) = lost_channel(o.kind) else {
                continue;
            };
            if let Some(r) = self.reachable.get_mut(&o.user_id) {
                r.retain(|c| c != lost);
            }
        }
    }

    /// Sends what arrived, in arrival order, each on its first channel that is reachable,
    /// outside quiet hours and within the caps; what cannot go now is dropped. A class the
    /// policy lets bypass quiet hours or caps is treated as tern treats it. With `urgent_only`,
    /// only the classes that bypass anything go (as they arrive); the rest wait in the queue.
    pub(super) fn deliver(
        &mut self,
        world: &mut World,
        now: DateTime<Utc>,
        urgent_only: bool,
    ) -> Result<Vec<Delivered>> {
        let mut queue = std::mem::take(&mut self.queue);
        queue.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.dedupe_key.cmp(&b.dedupe_key))
        });
        let mut out = Vec::new();
        let mut considered = Vec::new();
        for o in queue {
            if o.expires_at <= now {
                continue;
            }
            let class = Priority::parse(&o.priority);
            let urgent = class.is_some_and(|p| self.bundle.urgent(p));
            match self.mode {
                _ if urgent => {}
                _ if urgent_only => {
                    self.queue.push(o);
                    continue;
                }
                Mode::Fcfs => {}
                Mode::Nothing => continue,
                Mode::Oracle(_) => {
                    considered.push(o);
                    continue;
                }
            }
            if let Some(channel) = self.allowed(&o, now).into_iter().next() {
                out.push(self.send(world, &o, channel, now)?);
            }
        }
        if let Mode::Oracle(oracle) = self.mode {
            out.extend(oracle.deliver(self, world, considered, now)?);
        }
        Ok(out)
    }

    /// Sends `o` on `channel` now: counted in the user's history for the caps, delivered.
    pub(super) fn send(
        &mut self,
        world: &mut World,
        o: &NewOpportunity,
        channel: String,
        now: DateTime<Utc>,
    ) -> Result<Delivered> {
        let (exempt, _) = self.exempt_and_loud(&o.priority);
        self.sent.entry(o.user_id.clone()).or_default().push(Sent {
            channel: channel.clone(),
            category: o.category.clone(),
            exempt,
            at: now,
        });
        let outcomes = world.deliver(Delivery::of(o, &channel, now))?;
        Ok(Delivered {
            channel,
            user_id: o.user_id.clone(),
            priority: o.priority.clone(),
            outcomes,
        })
    }

    /// The opportunity's channels that may be used now, in its order of preference: reachable
    /// as far as a sender knows, outside quiet hours (unless its class bypasses them), within
    /// the caps (unless exempt).
    pub(super) fn allowed(&self, o: &NewOpportunity, now: DateTime<Utc>) -> Vec<String> {
        self.open_channels(o, now, true)
    }

    /// The opportunity's channels reachable as far as a sender knows and outside quiet hours at
    /// `at` (unless its class bypasses them), and with `caps`, within the caps (unless exempt).
    pub(super) fn open_channels(
        &self,
        o: &NewOpportunity,
        at: DateTime<Utc>,
        caps: bool,
    ) -> Vec<String> {
        let (exempt, loud) = self.exempt_and_loud(&o.priority);
        let tz = self
            .timezones
            .get(&o.user_id)
            .copied()
            .unwrap_or(chrono_tz::UTC);
        let reachable = self.reachable.get(&o.user_id);
        let history = self.sent.get(&o.user_id).map_or(&[][..], Vec::as_slice);
        o.channels
            .iter()
            .filter(|c| {
                reachable.is_some_and(|r| r.contains(c))
                    && (loud || !quiet(self.bundle, c, tz, at))
                    && (!caps
                        || exempt
                        || self
                            .bundle
                            .default_caps()
                            .is_none_or(|set| allows(set, history, c, &o.category, at)))
            })
            .cloned()
            .collect()
    }

    /// The classes a cap set does not hold back, and those that bypass caps or quiet hours.
    pub(super) fn exempt_and_loud(&self, priority: &str) -> (bool, bool) {
        let class = Priority::parse(priority);
        let exempt = class.is_some_and(|p| {
            self.bundle
                .default_caps()
                .is_some_and(|c| !self.bundle.caps_hold(c, p))
                || self.bundle.bypasses(p, Bypass::Caps)
        });
        let loud = class.is_some_and(|p| self.bundle.bypasses(p, Bypass::QuietHours));
        (exempt, loud)
    }
}

pub(super) fn quiet(bundle: &Bundle, channel: &str, tz: chrono_tz::Tz, now: DateTime<Utc>) -> bool {
    let Some(q) = bundle.channel(channel).and_then(|c| c.quiet_hours.as_ref()) else {
        return false;
    };
    let local = now.with_timezone(&tz).time();
    if q.from < q.to {
        local >= q.from && local < q.to
    } else {
        local >= q.from || local < q.to
    }
}

/// Whether one more message now keeps every rule of `caps`, over the non-exempt history.
pub(super) fn allows(
    caps: &CapSet,
    history: &[Sent],
    channel: &str,
    category: &str,
    now: DateTime<Utc>,
) -> bool {
    caps.rules.iter().all(|rule| {
        if !in_scope(&rule.channel, rule.category.as_deref(), channel, category) {
            return true;
        }
        let times: Vec<DateTime<Utc>> = history
            .iter()
            .filter(|s| {
                !s.exempt
                    && in_scope(
                        &rule.channel,
                        rule.category.as_deref(),
                        &s.channel,
                        &s.category,
                    )
            })
            .map(|s| s.at)
            .collect();
        let count_ok = rule
            .limit
            .as_ref()
            .is_none_or(|l| (times.iter().filter(|t| **t > now - l.per).count() as u64) < l.max);
        let gap_ok = rule
            .min_gap
            .is_none_or(|g| times.iter().all(|t| now - *t >= g));
        count_ok && gap_ok
    })
}

pub(super) fn in_scope(
    scope: &ChannelScope,
    rule_category: Option<&str>,
    channel: &str,
    category: &str,
) -> bool {
    let channel_ok = match scope {
        ChannelScope::Any => true,
        ChannelScope::Channel(c) => c == channel,
    };
    channel_ok && rule_category.is_none_or(|c| c == category)
}
