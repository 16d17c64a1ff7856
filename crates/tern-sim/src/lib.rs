//! A seeded synthetic population: the ground truth of what users do with the messages they get.
//!
//! tern is judged by what its choices do to people, and people are not available in a test. This
//! crate stands in for them. It answers one question, "what does this user do", for a driver that
//! feeds tern the population's opportunities and activity, delivers what tern schedules, and
//! reports the outcomes. It never talks to tern: tern sees only what a real product would see
//! (profiles, opportunities, outcomes, active days), never the truth behind them.
//!
//! The truth is built so that short-term and long-term success disagree. Every message adds
//! fatigue; fatigue above a user's comfort wears down their long-term engagement, and with it the
//! chance that they come back each day, while relevant, well-timed messages that get opened build
//! it up. Blasting every opportunity wins opens for a few days and loses users within weeks, and
//! the users quickest to click are the quickest to tire.
//!
//! Everything is a pure function of the [`Config`] and of the calls made: the same calls give the
//! same results, and no result depends on map iteration order or the clock.
//!
//! # Layout
//! - [`config`]: [`Config`] and the calibrated defaults of every knob.
//! - [`population`]: users, their observable [`Profile`] and their hidden state; [`Channel`] and
//!   [`Category`], with the template, lifetime and channels of each category.
//! - `opportunities`: what upstream submits, drawn per user and day.
//! - `world`: [`World`], which delivers messages ([`World::deliver`] → [`Outcome`]s), closes days
//!   ([`World::end_of_day`] → [`DayReport`]) and sums up a run ([`Summary`]).
//! - [`receipts`]: the log of deliveries and [`max_in_window`], to check caps from the receiving
//!   side.
//! - `truth`: [`World::uplift`], the true expected effect of a send against none, to score
//!   models' uplift estimates against and for the `oracle` policy to decide by.
//! - `rng`: keyed random streams, so that results do not depend on the order of calls.
//!
//! # Driving it
//! For each UTC day, in order: submit [`World::opportunities`] for the day (in any slices), let
//! tern plan, [`World::deliver`] each message tern hands out at its send time (which must fall on
//! [`World::open_day`]) and report the outcomes, then call [`World::end_of_day`] and report its
//! active users as activity.

pub mod config;
mod opportunities;
pub mod population;
pub mod receipts;
mod rng;
mod truth;
mod world;

#[cfg(test)]
mod tests;

pub use config::{Config, Engagement, Fatigue, Hazard, Rates};
pub use opportunities::SOURCE;
pub use population::{Category, Channel, Profile};
pub use receipts::{max_in_window, Receipt};
pub use truth::Uplift;
pub use world::{DayReport, Delivery, Outcome, SimError, Summary, World};
