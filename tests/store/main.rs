//! The store against a real PostgreSQL: a fresh database per test (see `tern_tests::TestDb`).

mod experiments;
mod generators;
mod history;
mod ingest;
mod leases;
mod migrate;
mod models;
mod partitioned;
mod planning;
mod plans;
mod sweeps;
mod training;
mod users;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use tern_core::{NewOpportunity, OpportunityId};
use tern_store::{NewPlan, NewScheduleItem, PublishedPlan, RowStatus, Store, Supersede};

/// The instant every test's clock starts at. Tests pass time explicitly; nothing sleeps.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

pub fn opportunity(user: &str, key: &str) -> NewOpportunity {
    NewOpportunity {
        user_id: user.into(),
        dedupe_key: key.into(),
        source: "test".into(),
        template: "new_release".into(),
        category: "content".into(),
        priority: "marketing".into(),
        channels: vec!["push".into(), "email".into()],
        signals: BTreeMap::from([("relevance".into(), 0.7)]),
        payload: Default::default(),
        created_at: t0() - TimeDelta::hours(1),
        expires_at: t0() + TimeDelta::hours(48),
    }
}

/// Ingests `batch` and returns the new ids in order, failing the test on anything but `New`.
pub async fn ingest_all(store: &Store, batch: &[NewOpportunity]) -> Vec<OpportunityId> {
    store
        .ingest_opportunities(batch)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| match r {
            RowStatus::New(id) => id,
            other => panic!("expected a new row, got {other:?}"),
        })
        .collect()
}

pub fn plan() -> NewPlan {
    NewPlan {
        trigger: "manual".into(),
        policy_version: "p1".into(),
        model_version: Some("m1".into()),
        seed: 7,
        started_at: t0(),
        horizon_end: t0() + TimeDelta::hours(24),
        stats: Default::default(),
    }
}

/// An item sendable from `t0` for an hour.
pub fn item(user: &str, opportunity: OpportunityId, channel: &str) -> NewScheduleItem {
    NewScheduleItem {
        user_id: user.into(),
        opportunity_id: opportunity,
        channel: channel.into(),
        send_after: t0(),
        send_before: t0() + TimeDelta::hours(1),
        value: 1.0,
        propensity: 0.9,
        experiment: Some("exp".into()),
        arm: Some("control".into()),
        scores: json!({"conversion": 0.1}),
        counterfactual: None,
    }
}

/// Creates `n` opportunities over `n / per_user` users and publishes one push item for each.
pub async fn schedule(store: &Store, n: usize, per_user: usize) -> PublishedPlan {
    let batch: Vec<NewOpportunity> = (0..n)
        .map(|i| opportunity(&format!("u{}", i / per_user), &format!("k{i}")))
        .collect();
    let mut items = Vec::with_capacity(n);
    for chunk in batch.chunks(10_000) {
        let ids = ingest_all(store, chunk).await;
        items.extend(
            chunk
                .iter()
                .zip(ids)
                .map(|(o, id)| item(&o.user_id, id, "push")),
        );
    }
    store
        .publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap()
}

pub async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}
