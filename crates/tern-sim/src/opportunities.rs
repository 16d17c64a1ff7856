//! What upstream would submit: a few opportunities per user per day.
//!
//! Each day's opportunities for a user are drawn whole from a stream keyed by (seed, user, day),
//! and a request for a time range filters them. That is what makes the result independent of how
//! the driver slices time.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use tern_core::NewOpportunity;

use crate::config::Config;
use crate::population::{Category, User};
use crate::rng::{normal, poisson, stream, Purpose};

/// The `source` of every simulated opportunity.
pub const SOURCE: &str = "sim";

/// The opportunities of user `index` on day `day` (days since the start), in creation order
/// within each category. Dedupe keys are `sim:{user}:{day}:{n}`, unique per user and run.
pub(crate) fn day_opportunities(
    config: &Config,
    index: usize,
    user: &User,
    day: i64,
    day_start: DateTime<Utc>,
) -> Vec<NewOpportunity> {
    let mut rng = stream(
        config.seed,
        Purpose::Opportunities,
        &[index as u64, day as u64],
    );
    let mut out = Vec::new();
    for category in Category::ALL {
        let mean = match category {
            Category::Content => config.rates.content,
            Category::Social => config.rates.social,
            Category::Marketing => config.rates.marketing,
            Category::Account => config.rates.account,
        };
        for _ in 0..poisson(&mut rng, mean) {
            let created_at = day_start + TimeDelta::seconds(rng.below(86_400) as i64);
            let truth = user.interest[category.index()];
            let relevance = if category == Category::Account {
                1.0
            } else {
                (truth + config.relevance_noise * normal(&mut rng)).clamp(0.0, 1.0)
            };
            let mut signals = BTreeMap::new();
            signals.insert("relevance".to_string(), round3(relevance));
            if category == Category::Marketing {
                let price = 30.0 * (0.6 * normal(&mut rng)).exp();
                signals.insert("order_value".to_string(), (price * 100.0).round() / 100.0);
            }
            out.push(NewOpportunity {
                user_id: user.id.clone(),
                dedupe_key: format!("sim:{}:{}:{}", user.id, day, out.len()),
                source: SOURCE.to_string(),
                template: category.template().to_string(),
                category: category.as_str().to_string(),
                priority: category.priority().to_string(),
                channels: category
                    .channels()
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                signals,
                payload: Default::default(),
                created_at,
                expires_at: created_at + category.ttl(),
            });
        }
    }
    out
}

/// Signals travel through tern and back; three decimals keep them readable and exact in JSON.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
