use chrono::TimeDelta;
use serde_json::json;
use tern_core::AckStatus;
use tern_store::{Ack, AckResult, ChannelState, LeaseRequest, User};
use tern_tests::TestDb;

use crate::{count, schedule, t0};

fn user(id: &str, channels: Vec<ChannelState>, categories: Vec<String>) -> User {
    User {
        user_id: id.into(),
        timezone: "Europe/Stockholm".into(),
        locale: Some("sv-SE".into()),
        attributes: json!({"country": "SE"}),
        opted_out_categories: categories,
        channels,
    }
}

fn push(reachable: bool, opted_out: bool) -> ChannelState {
    ChannelState {
        channel: "push".into(),
        reachable,
        opted_out,
    }
}

#[tokio::test]
async fn users_are_upserted_and_the_last_entry_for_a_user_wins() {
    let db = TestDb::new().await;
    let mut later = user("u1", vec![push(true, false)], vec![]);
    later.timezone = "America/New_York".into();
    db.store
        .upsert_users(&[user("u1", vec![], vec![]), later.clone()], t0())
        .await
        .unwrap();
    assert_eq!(db.store.user("u1").await.unwrap(), Some(later));
    assert_eq!(db.store.user("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn an_opt_out_cancels_scheduled_items_at_once_and_they_are_never_handed_out() {
    let db = TestDb::new().await;
    schedule(&db.store, 4, 2).await; // users u0 and u1, two push items each
    let request = LeaseRequest {
        holder: "l".into(),
        channels: vec!["push".into()],
        max_items: 1,
        lease_for: TimeDelta::minutes(5),
    };
    // One item is leased (in the sender's hands) when its user's opt-out arrives.
    let leased = db.store.lease(&request, t0()).await.unwrap().pop().unwrap();
    let (victim, other) = if leased.user_id == "u0" {
        ("u0", "u1")
    } else {
        ("u1", "u0")
    };

    let cancelled = db
        .store
        .upsert_users(&[user(victim, vec![push(true, true)], vec![])], t0())
        .await
        .unwrap();
    assert_eq!(cancelled, 2);
    let ack = Ack {
        user_id: leased.user_id.clone(),
        item_id: leased.item_id,
        lease_token: leased.lease_token,
        status: AckStatus::Sent,
    };
    assert_eq!(
        db.store.ack(&ack, t0()).await.unwrap(),
        AckResult::Cancelled
    );
    let mut all = request.clone();
    all.max_items = 100;
    let rest = db
        .store
        .lease(&all, t0() + TimeDelta::hours(1) - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(rest.iter().all(|i| i.user_id == other), "{rest:?}");
    assert_eq!(rest.len(), 2);
    assert_eq!(count(&db.store, "SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn a_category_opt_out_cancels_that_category_only() {
    let db = TestDb::new().await;
    schedule(&db.store, 2, 2).await; // category "content"
    let cancelled = db
        .store
        .upsert_users(&[user("u0", vec![], vec!["digest".into()])], t0())
        .await
        .unwrap();
    assert_eq!(cancelled, 0);
    let cancelled = db
        .store
        .upsert_users(&[user("u0", vec![], vec!["content".into()])], t0())
        .await
        .unwrap();
    assert_eq!(cancelled, 2);
}

#[tokio::test]
async fn malformed_users_are_refused_whole() {
    let db = TestDb::new().await;
    let mut bad = user("u2", vec![], vec![]);
    bad.attributes = json!([1, 2]);
    let err = db
        .store
        .upsert_users(&[user("u1", vec![], vec![]), bad], t0())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
    assert_eq!(count(&db.store, "SELECT count(*) FROM users").await, 0);
}
