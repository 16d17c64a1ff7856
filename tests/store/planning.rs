use chrono::TimeDelta;
use tern_tests::TestDb;

use crate::{ingest_all, item, opportunity, plan, t0};
use tern_store::{LeaseRequest, Supersede};

/// A replan reads open opportunities that nobody holds, counts leased items as sends, and a
/// budget's usage counts sent and leased items (and other users' pending ones in a partial
/// replan).
#[tokio::test]
async fn planning_input_and_channel_usage_count_what_is_held_and_sent() {
    let db = TestDb::new().await;
    let s = &db.store;
    let ids = ingest_all(
        s,
        &[
            opportunity("a", "1"),
            opportunity("a", "2"),
            opportunity("b", "1"),
        ],
    )
    .await;
    s.publish_plan(&plan(), &[item("a", ids[0], "push")], &Supersede::All, t0())
        .await
        .unwrap();
    // a's item is leased: it is a send in a's history, and its opportunity is not open for
    // planning any more.
    let leased = s
        .lease(
            &LeaseRequest {
                holder: "h".into(),
                channels: vec!["push".into()],
                max_items: 1,
                lease_for: TimeDelta::minutes(5),
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(leased[0].user_id, "a");
    // Then b gets a pending item, kept by the next plan.
    s.publish_plan(
        &plan(),
        &[item("b", ids[2], "push")],
        &Supersede::Users(Vec::new()),
        t0(),
    )
    .await
    .unwrap();

    let input = s
        .planning_input(t0(), TimeDelta::days(28), None)
        .await
        .unwrap();
    let a = input.iter().find(|u| u.user_id == "a").unwrap();
    assert_eq!(
        a.opportunities.len(),
        1,
        "the held opportunity is not planned again"
    );
    assert_eq!(a.opportunities[0].opportunity_id, ids[1]);
    assert_eq!(a.history.len(), 1, "the leased item counts as a send");
    let b = input.iter().find(|u| u.user_id == "b").unwrap();
    assert_eq!(
        b.opportunities.len(),
        1,
        "a pending item does not hold its opportunity"
    );
    assert!(b.history.is_empty());
    // Arrivals count every opportunity of the last week, held or not, per kind.
    let count = |u: &tern_store::PlanningUser| u.arrivals.iter().map(|a| a.count).sum::<i64>();
    assert_eq!(count(a), 2, "{:?}", a.arrivals);
    assert_eq!(a.arrivals.len(), 1, "one kind: {:?}", a.arrivals);
    assert_eq!(count(b), 1);
    assert_eq!(a.arrivals[0].category, "content");
    assert_eq!(a.arrivals[0].channels, vec!["push", "email"]);
    let only_b = s
        .planning_input(t0(), TimeDelta::days(28), Some(&["b".to_string()]))
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].user_id, "b");

    let since = t0() - TimeDelta::days(1);
    assert_eq!(
        s.channel_usage("push", since, None).await.unwrap(),
        1,
        "a's leased item"
    );
    assert_eq!(
        s.channel_usage("push", since, Some(&["a".to_string()]))
            .await
            .unwrap(),
        2,
        "replanning only a keeps b's pending item, which counts"
    );
    assert_eq!(
        s.channel_usage("push", since, Some(&["b".to_string()]))
            .await
            .unwrap(),
        1,
        "replanning b replaces b's pending item"
    );
    assert_eq!(s.channel_usage("email", since, None).await.unwrap(), 0);
}

#[tokio::test]
async fn each_replan_firing_is_claimed_once() {
    let db = TestDb::new().await;
    let s = &db.store;
    assert_eq!(s.last_cron_run("nightly").await.unwrap(), None);
    let claims = futures::future::join_all((0..8).map(|i| {
        let store = s.clone();
        async move {
            store
                .claim_cron_run("nightly", t0(), &format!("replica-{i}"), t0())
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1);
    assert!(s
        .claim_cron_run("nightly", t0() + TimeDelta::days(1), "r", t0())
        .await
        .unwrap());
    assert_eq!(
        s.last_cron_run("nightly").await.unwrap(),
        Some(t0() + TimeDelta::days(1))
    );
    let lock = s.lock_replans().await.unwrap();
    assert!(
        s.try_lock_replans().await.unwrap().is_none(),
        "held elsewhere"
    );
    drop(lock);
    let mut released = false;
    for _ in 0..100 {
        if s.try_lock_replans().await.unwrap().is_some() {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(released, "the lock is released when its holder is dropped");
}
