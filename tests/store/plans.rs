use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::TimeDelta;
use tern_core::AckStatus;
use tern_store::{Ack, LeaseRequest, NewScheduleItem, Supersede, Withholding};
use tern_tests::TestDb;

use crate::{count, ingest_all, item, opportunity, plan, t0};

#[tokio::test]
async fn a_new_plan_supersedes_pending_items_but_never_reissues_leased_or_sent_ones() {
    let db = TestDb::new().await;
    let batch: Vec<_> = (0..3)
        .map(|i| opportunity("u1", &format!("k{i}")))
        .collect();
    let ids = ingest_all(&db.store, &batch).await;
    let items: Vec<NewScheduleItem> = ids.iter().map(|&id| item("u1", id, "push")).collect();
    let first = db
        .store
        .publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap();
    assert_eq!((first.items, first.skipped, first.superseded), (3, 0, 0));

    // Lease two; send one of them.
    let leased = db
        .store
        .lease(
            &LeaseRequest {
                holder: "l".into(),
                channels: vec!["push".into()],
                max_items: 2,
                lease_for: TimeDelta::minutes(5),
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    db.store
        .ack(
            &Ack {
                user_id: "u1".into(),
                item_id: leased[0].item_id,
                lease_token: leased[0].lease_token,
                status: AckStatus::Sent,
            },
            t0(),
        )
        .await
        .unwrap();

    // The next plan chooses all three again: only the one that was pending is re-issued.
    let second = db
        .store
        .publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap();
    assert_eq!((second.items, second.skipped, second.superseded), (1, 2, 1));
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM schedule_items WHERE state IN ('pending', 'leased', 'sent')"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn superseding_some_users_leaves_the_others_schedule_alone() {
    let db = TestDb::new().await;
    let ids = ingest_all(&db.store, &[opportunity("u1", "a"), opportunity("u2", "a")]).await;
    db.store
        .publish_plan(
            &plan(),
            &[item("u1", ids[0], "push"), item("u2", ids[1], "push")],
            &Supersede::All,
            t0(),
        )
        .await
        .unwrap();
    let replan = db
        .store
        .publish_plan(
            &plan(),
            &[item("u1", ids[0], "email")],
            &Supersede::Users(vec!["u1".into()]),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!((replan.items, replan.superseded), (1, 1));
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM schedule_items WHERE state = 'pending' AND user_id = 'u2'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn invalid_items_are_refused_before_anything_is_written() {
    let db = TestDb::new().await;
    let ids = ingest_all(&db.store, &[opportunity("u1", "a")]).await;
    let mut bad = item("u1", ids[0], "push");
    bad.propensity = 0.0;
    let err = db
        .store
        .publish_plan(&plan(), &[bad], &Supersede::All, t0())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("propensity"), "{err}");
    assert_eq!(count(&db.store, "SELECT count(*) FROM plans").await, 0);
}

/// Readers see the old schedule or the new one, never a mix: while plans of 500 items replace
/// each other, every snapshot of the pending items holds exactly one plan's 500.
#[tokio::test]
async fn readers_never_see_half_a_plan() {
    let db = TestDb::new().await;
    let batch: Vec<_> = (0..500)
        .map(|i| opportunity(&format!("u{}", i % 50), &format!("k{i}")))
        .collect();
    let ids = ingest_all(&db.store, &batch).await;
    let items: Vec<NewScheduleItem> = batch
        .iter()
        .zip(&ids)
        .map(|(o, &id)| item(&o.user_id, id, "push"))
        .collect();
    db.store
        .publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = db.another_store().await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut snapshots = 0;
            while !done.load(Ordering::Relaxed) {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT plan_id, count(*) FROM schedule_items WHERE state = 'pending' GROUP BY plan_id",
                )
                .fetch_all(store.pool())
                .await
                .unwrap();
                assert_eq!(
                    rows.len(),
                    1,
                    "pending items of several plans at once: {rows:?}"
                );
                assert_eq!(rows[0].1, 500);
                snapshots += 1;
            }
            snapshots
        })
    };
    for _ in 0..20 {
        db.store
            .publish_plan(&plan(), &items, &Supersede::All, t0())
            .await
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
}

#[tokio::test]
async fn policy_activations_are_recorded_once_per_version() {
    let db = TestDb::new().await;
    let bundle = serde_json::json!({"documents": []});
    db.store
        .record_policy_activation("abc", &bundle, t0())
        .await
        .unwrap();
    let later = t0() + TimeDelta::hours(1);
    db.store
        .record_policy_activation("abc", &bundle, later)
        .await
        .unwrap();
    let v = db.store.policy_version("abc").await.unwrap().unwrap();
    assert_eq!((v.first_activated_at, v.last_activated_at), (t0(), later));
    assert_eq!(v.bundle, bundle);
    assert_eq!(db.store.policy_version("nope").await.unwrap(), None);
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM policy_versions").await,
        1
    );
}

#[tokio::test]
async fn holdout_counterfactuals_are_never_leased_and_become_withheld_when_due() {
    let db = TestDb::new().await;
    let batch: Vec<_> = (0..2)
        .map(|i| opportunity("held", &format!("k{i}")))
        .collect();
    let ids = ingest_all(&db.store, &batch).await;
    // What the policy would send the holdout user: one item due now, one in three hours.
    let mut due = item("held", ids[0], "push");
    due.counterfactual = Some(Withholding::Holdout);
    let mut later = item("held", ids[1], "push");
    later.counterfactual = Some(Withholding::Holdout);
    later.send_after = t0() + TimeDelta::hours(3);
    later.send_before = t0() + TimeDelta::hours(4);
    let first = db
        .store
        .publish_plan(
            &plan(),
            &[due.clone(), later.clone()],
            &Supersede::All,
            t0(),
        )
        .await
        .unwrap();
    assert_eq!((first.items, first.withheld), (2, 0));
    let leased = db
        .store
        .lease(
            &LeaseRequest {
                holder: "d".into(),
                channels: vec!["push".into()],
                max_items: 10,
                lease_for: TimeDelta::minutes(5),
            },
            t0() + TimeDelta::minutes(1),
        )
        .await
        .unwrap();
    assert!(
        leased.is_empty(),
        "a counterfactual item must never be delivered"
    );
    // An ack naming a counterfactual item (a confused or malicious client) changes nothing.
    let item_id: i64 = sqlx::query_scalar(
        "SELECT item_id FROM schedule_items WHERE state = 'counterfactual' ORDER BY item_id LIMIT 1",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    let ack = Ack {
        user_id: "held".into(),
        item_id,
        lease_token: uuid::Uuid::new_v4(),
        status: AckStatus::Sent,
    };
    assert_eq!(
        db.store
            .ack(&ack, t0() + TimeDelta::minutes(2))
            .await
            .unwrap(),
        tern_store::AckResult::Stale
    );

    // An hour on, the replan first settles the one whose window opened, so that the plan sees
    // it as history and does not choose its opportunity again.
    let at = t0() + TimeDelta::hours(1);
    assert_eq!(db.store.settle_counterfactuals(at).await.unwrap(), 1);
    assert_eq!(db.store.settle_counterfactuals(at).await.unwrap(), 0);
    let input = db
        .store
        .planning_input(at, TimeDelta::days(28), None)
        .await
        .unwrap();
    let held = input.iter().find(|u| u.user_id == "held").unwrap();
    assert_eq!(held.history.len(), 1);
    assert_eq!(held.history[0].sent_at, t0());
    assert_eq!(
        held.opportunities
            .iter()
            .map(|o| o.opportunity_id)
            .collect::<Vec<_>>(),
        vec![ids[1]]
    );
    // The plan re-chooses both, as a planner that had not seen the settlement would: the
    // withheld one is skipped, the later one replaces its earlier counterfactual.
    let second = db
        .store
        .publish_plan(&plan(), &[due, later], &Supersede::All, at)
        .await
        .unwrap();
    assert_eq!(
        (
            second.withheld,
            second.superseded,
            second.items,
            second.skipped
        ),
        (0, 1, 1, 1)
    );
    let states = |sql: &'static str| count(&db.store, sql);
    assert_eq!(
        states("SELECT count(*) FROM schedule_items WHERE state = 'withheld'").await,
        1
    );
    assert_eq!(
        states("SELECT count(*) FROM opportunities WHERE state = 'withheld'").await,
        1
    );
    assert_eq!(
        states("SELECT count(*) FROM schedule_items WHERE state = 'counterfactual'").await,
        1
    );
    assert_eq!(states("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn assignments_keep_the_first_plan_and_count_arm_changes() {
    let db = TestDb::new().await;
    let a = |user: &str, arm: &str| tern_store::Assignment {
        experiment: "exp".into(),
        user_id: user.into(),
        arm: arm.into(),
    };
    db.store
        .record_assignments(&[a("u1", "control"), a("u2", "holdout")], "v1", t0())
        .await
        .unwrap();
    let later = t0() + TimeDelta::hours(1);
    db.store
        .record_assignments(&[a("u1", "control"), a("u2", "treatment")], "v2", later)
        .await
        .unwrap();
    let rows: Vec<(String, String, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT user_id, arm, policy_version, arm_changes, first_planned_at \
         FROM experiment_assignments ORDER BY user_id",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            // Unchanged within a day: not rewritten.
            ("u1".into(), "control".into(), "v1".into(), 0, t0()),
            ("u2".into(), "treatment".into(), "v2".into(), 1, t0()),
        ]
    );
}

/// Schedule items carry no foreign keys (migration 0014: their per-row checks were most of a
/// page's publish). What the keys stood for holds without them: an item naming an opportunity
/// that does not exist is never written, and after plans, leases, acks of every kind, expiry
/// and a replan that supersedes everything, every item's opportunity and plan exist.
#[tokio::test]
async fn every_item_names_an_opportunity_and_a_plan_that_exist() {
    let db = TestDb::new().await;
    let s = &db.store;
    let batch: Vec<_> = (0..12)
        .map(|i| opportunity(&format!("u{}", i % 4), &format!("k{i}")))
        .collect();
    let ids = ingest_all(s, &batch).await;
    let mut items: Vec<NewScheduleItem> = batch
        .iter()
        .zip(&ids)
        .map(|(o, &id)| item(&o.user_id, id, "push"))
        .collect();
    // An opportunity id no one created, and a real id under another user.
    items.push(item("u0", ids.iter().max().unwrap() + 1_000, "push"));
    items.push(item("u9", ids[0], "push"));
    let first = s
        .publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap();
    assert_eq!((first.items, first.skipped), (12, 2));

    let leased = s
        .lease(
            &LeaseRequest {
                holder: "l".into(),
                channels: vec!["push".into()],
                max_items: 6,
                lease_for: TimeDelta::minutes(5),
            },
            t0(),
        )
        .await
        .unwrap();
    for (item, status) in leased.iter().zip(
        [AckStatus::Sent, AckStatus::Failed, AckStatus::Skipped]
            .iter()
            .cycle(),
    ) {
        s.ack(
            &Ack {
                user_id: item.user_id.clone(),
                item_id: item.item_id,
                lease_token: item.lease_token,
                status: *status,
            },
            t0(),
        )
        .await
        .unwrap();
    }
    s.expire(t0() + TimeDelta::days(30)).await.unwrap();
    s.publish_plan(&plan(), &items, &Supersede::All, t0())
        .await
        .unwrap();

    assert_eq!(
        count(
            s,
            "SELECT count(*) FROM schedule_items s WHERE NOT EXISTS \
               (SELECT 1 FROM opportunities o \
                WHERE o.user_id = s.user_id AND o.opportunity_id = s.opportunity_id) \
             OR NOT EXISTS (SELECT 1 FROM plans p WHERE p.plan_id = s.plan_id)"
        )
        .await,
        0,
        "an item names an opportunity or a plan that does not exist"
    );
    assert!(count(s, "SELECT count(*) FROM schedule_items").await >= 12);
}
