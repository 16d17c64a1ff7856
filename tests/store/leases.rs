use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tern_core::AckStatus;
use tern_store::{Ack, AckResult, LeaseRequest, LeasedItem, Store, Supersede};
use tern_tests::TestDb;
use uuid::Uuid;

use crate::{count, ingest_all, item, opportunity, plan, schedule, t0};

fn request(holder: &str, max_items: u32, lease_for: TimeDelta) -> LeaseRequest {
    LeaseRequest {
        holder: holder.into(),
        channels: vec!["push".into()],
        max_items,
        lease_for,
    }
}

fn ack(item: &LeasedItem, status: AckStatus) -> Ack {
    Ack {
        user_id: item.user_id.clone(),
        item_id: item.item_id,
        lease_token: item.lease_token,
        status,
    }
}

const EPSILON: TimeDelta = TimeDelta::milliseconds(1);

#[tokio::test]
async fn sixteen_lessees_over_ten_thousand_items_send_each_exactly_once() {
    let db = TestDb::new().await;
    let published = schedule(&db.store, 10_000, 8).await;
    assert_eq!(published.items, 10_000);

    // Items currently held by some lessee: an item may never be in it twice.
    let held: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let sent: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = db.another_store().await;
        let (held, sent) = (held.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let holder = format!("lessee-{n}");
            loop {
                let items = store
                    .lease(&request(&holder, 64, TimeDelta::minutes(5)), t0())
                    .await
                    .unwrap();
                if items.is_empty() {
                    break;
                }
                for it in &items {
                    assert!(
                        held.lock().unwrap().insert(it.item_id),
                        "item {} leased twice",
                        it.item_id
                    );
                }
                for it in &items {
                    let result = store.ack(&ack(it, AckStatus::Sent), t0()).await.unwrap();
                    assert!(matches!(
                        result,
                        AckResult::Acked {
                            message_id: Some(_)
                        }
                    ));
                    held.lock().unwrap().remove(&it.item_id);
                    sent.lock().unwrap().push(it.item_id);
                }
            }
            store.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 10_000);
    assert_eq!(sent.iter().collect::<HashSet<_>>().len(), 10_000);
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM messages").await,
        10_000
    );
    assert_eq!(
        count(&db.store, "SELECT count(DISTINCT item_id) FROM messages").await,
        10_000
    );
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM schedule_items WHERE state = 'sent'"
        )
        .await,
        10_000
    );
}

/// Lessees that crash (never ack) lose their items after the lease; the items go to others, and
/// every item is still sent exactly once.
#[tokio::test]
async fn items_of_lessees_that_vanish_are_redelivered_and_sent_once() {
    let db = TestDb::new().await;
    schedule(&db.store, 2_000, 4).await;
    let lease_for = TimeDelta::seconds(30);
    let mut now = t0();
    let mut abandoned = 0;
    let mut round = 0;
    loop {
        // Four lessees per round; every third batch is abandoned as if its lessee crashed.
        let mut any = false;
        for n in 0..4 {
            let items = db
                .store
                .lease(&request(&format!("l{n}"), 100, lease_for), now)
                .await
                .unwrap();
            any |= !items.is_empty();
            if (round + n) % 3 == 0 {
                abandoned += items.len();
                continue;
            }
            for it in &items {
                let r = db.store.ack(&ack(it, AckStatus::Sent), now).await.unwrap();
                assert!(matches!(r, AckResult::Acked { .. }), "{r:?}");
            }
        }
        if !any {
            break;
        }
        round += 1;
        now += lease_for + EPSILON;
    }
    assert!(abandoned > 0);
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM messages").await,
        2_000
    );
    assert_eq!(
        count(
            &db.store,
            "SELECT sum(attempt - 1)::bigint FROM schedule_items"
        )
        .await as usize,
        abandoned
    );
}

async fn one_leased_item(store: &Store, lease_for: TimeDelta) -> LeasedItem {
    schedule(store, 1, 1).await;
    let mut items = store
        .lease(&request("first", 10, lease_for), t0())
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    items.pop().unwrap()
}

#[tokio::test]
async fn just_before_the_lease_expires_the_item_is_still_held_and_the_ack_counts() {
    let db = TestDb::new().await;
    let lease_for = TimeDelta::seconds(60);
    let held = one_leased_item(&db.store, lease_for).await;
    assert_eq!(held.lease_expires_at, t0() + lease_for);
    let almost = held.lease_expires_at - EPSILON;
    let other = db
        .store
        .lease(&request("second", 10, lease_for), almost)
        .await
        .unwrap();
    assert!(
        other.is_empty(),
        "the lease still holds at expiry - epsilon"
    );
    let result = db
        .store
        .ack(&ack(&held, AckStatus::Sent), almost)
        .await
        .unwrap();
    assert!(matches!(
        result,
        AckResult::Acked {
            message_id: Some(_)
        }
    ));
}

#[tokio::test]
async fn at_and_after_the_lease_expiry_the_item_is_redelivered_and_the_late_ack_refused() {
    let db = TestDb::new().await;
    let lease_for = TimeDelta::seconds(60);
    let held = one_leased_item(&db.store, lease_for).await;

    // Exactly at expiry the lease is over: a late ack is refused even before anyone re-leases.
    let at = held.lease_expires_at;
    assert_eq!(
        db.store
            .ack(&ack(&held, AckStatus::Sent), at)
            .await
            .unwrap(),
        AckResult::Stale
    );

    let after = held.lease_expires_at + EPSILON;
    let mut again = db
        .store
        .lease(&request("second", 10, lease_for), after)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let second = again.pop().unwrap();
    assert_eq!(second.item_id, held.item_id);
    assert_ne!(second.lease_token, held.lease_token);
    assert_eq!(second.attempt, 2);

    assert_eq!(
        db.store
            .ack(&ack(&held, AckStatus::Sent), after)
            .await
            .unwrap(),
        AckResult::Stale
    );
    let result = db
        .store
        .ack(&ack(&second, AckStatus::Sent), after)
        .await
        .unwrap();
    assert!(matches!(
        result,
        AckResult::Acked {
            message_id: Some(_)
        }
    ));
    assert_eq!(count(&db.store, "SELECT count(*) FROM messages").await, 1);
}

#[tokio::test]
async fn acks_are_idempotent_and_conflicting_or_forged_acks_change_nothing() {
    let db = TestDb::new().await;
    let held = one_leased_item(&db.store, TimeDelta::seconds(60)).await;
    let first = db
        .store
        .ack(&ack(&held, AckStatus::Sent), t0())
        .await
        .unwrap();
    let AckResult::Acked {
        message_id: Some(message),
    } = first
    else {
        panic!("{first:?}")
    };
    let second = db
        .store
        .ack(&ack(&held, AckStatus::Sent), t0())
        .await
        .unwrap();
    assert_eq!(
        second,
        AckResult::AlreadyAcked {
            message_id: Some(message)
        }
    );
    // Even a repeat after the lease would have expired is recognised as the same ack.
    let late = db
        .store
        .ack(&ack(&held, AckStatus::Sent), t0() + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(
        late,
        AckResult::AlreadyAcked {
            message_id: Some(message)
        }
    );
    let conflict = db
        .store
        .ack(&ack(&held, AckStatus::Failed), t0())
        .await
        .unwrap();
    assert!(matches!(conflict, AckResult::Conflict { .. }));
    let mut forged = ack(&held, AckStatus::Sent);
    forged.lease_token = Uuid::new_v4();
    assert_eq!(db.store.ack(&forged, t0()).await.unwrap(), AckResult::Stale);
    forged.item_id += 1_000;
    assert_eq!(
        db.store.ack(&forged, t0()).await.unwrap(),
        AckResult::NotFound
    );
    assert_eq!(count(&db.store, "SELECT count(*) FROM messages").await, 1);
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM opportunities WHERE state = 'sent'"
        )
        .await,
        1
    );
}

/// `failed` is the provider's transient refusal: the opportunity stays open for a later plan.
/// `skipped` is the sender's decision not to send: the opportunity is closed (`cancelled`), so no
/// plan offers it again. Both record no message, acked alone or in a batch.
#[tokio::test]
async fn a_failed_ack_leaves_the_opportunity_open_and_a_skipped_one_closes_it() {
    let db = TestDb::new().await;
    schedule(&db.store, 4, 1).await;
    let items = db
        .store
        .lease(&request("l", 10, TimeDelta::seconds(60)), t0())
        .await
        .unwrap();
    assert_eq!(items.len(), 4);
    // The first two one by one, the other two as a batch (the set-based path).
    for (it, status) in items[..2]
        .iter()
        .zip([AckStatus::Failed, AckStatus::Skipped])
    {
        assert_eq!(
            db.store.ack(&ack(it, status), t0()).await.unwrap(),
            AckResult::Acked { message_id: None }
        );
    }
    let batch = [
        ack(&items[2], AckStatus::Failed),
        ack(&items[3], AckStatus::Skipped),
    ];
    assert_eq!(
        db.store.ack_many(&batch, t0()).await.unwrap(),
        [AckResult::Acked { message_id: None }; 2]
    );
    assert_eq!(count(&db.store, "SELECT count(*) FROM messages").await, 0);
    let state = |i: usize| {
        format!(
            "SELECT count(*) FROM opportunities WHERE opportunity_id = {} AND state = ",
            items[i].opportunity_id
        )
    };
    for (i, expected) in [
        (0, "'open'"),
        (1, "'cancelled'"),
        (2, "'open'"),
        (3, "'cancelled'"),
    ] {
        assert_eq!(
            count(&db.store, &format!("{}{expected}", state(i))).await,
            1,
            "item {i}"
        );
    }
}

#[tokio::test]
async fn expired_opportunities_are_never_leased() {
    let db = TestDb::new().await;
    let mut o = opportunity("u1", "k");
    o.expires_at = t0() + TimeDelta::minutes(10);
    let ids = ingest_all(&db.store, &[o]).await;
    let mut it = item("u1", ids[0], "push");
    it.send_before = t0() + TimeDelta::hours(1); // the window outlives the opportunity
    db.store
        .publish_plan(&plan(), &[it], &Supersede::All, t0())
        .await
        .unwrap();
    let at_expiry = t0() + TimeDelta::minutes(10);
    let r = request("l", 10, TimeDelta::seconds(60));
    assert!(db.store.lease(&r, at_expiry).await.unwrap().is_empty());
    assert_eq!(
        db.store.lease(&r, at_expiry - EPSILON).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn items_are_leased_only_inside_their_window_and_on_the_requested_channels() {
    let db = TestDb::new().await;
    let ids = ingest_all(&db.store, &[opportunity("u1", "a"), opportunity("u2", "b")]).await;
    let mut late = item("u1", ids[0], "push");
    late.send_after = t0() + TimeDelta::minutes(30);
    let email = item("u2", ids[1], "email");
    db.store
        .publish_plan(&plan(), &[late, email], &Supersede::All, t0())
        .await
        .unwrap();
    let push = request("l", 10, TimeDelta::seconds(60));
    assert!(db.store.lease(&push, t0()).await.unwrap().is_empty());
    let due: Vec<DateTime<Utc>> = db
        .store
        .lease(&push, t0() + TimeDelta::minutes(30))
        .await
        .unwrap()
        .iter()
        .map(|i| i.send_after)
        .collect();
    assert_eq!(due, vec![t0() + TimeDelta::minutes(30)]);
    let mut both = push.clone();
    both.channels = vec!["email".into(), "push".into()];
    let got = db.store.lease(&both, t0()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].channel, "email");
    // After its window closes, nothing is due.
    assert!(db
        .store
        .lease(&both, t0() + TimeDelta::hours(2))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_lease_can_be_extended_only_while_it_is_held() {
    let db = TestDb::new().await;
    let lease_for = TimeDelta::seconds(60);
    let held = one_leased_item(&db.store, lease_for).await;
    let extended = db
        .store
        .extend_lease(
            &held.user_id,
            held.item_id,
            held.lease_token,
            lease_for,
            t0() + TimeDelta::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(extended, Some(t0() + TimeDelta::seconds(90)));
    // The extension moved the expiry: at the original expiry nobody else gets the item.
    let other = db
        .store
        .lease(
            &request("second", 10, lease_for),
            held.lease_expires_at + EPSILON,
        )
        .await
        .unwrap();
    assert!(other.is_empty());
    let too_late = db
        .store
        .extend_lease(
            &held.user_id,
            held.item_id,
            held.lease_token,
            lease_for,
            t0() + TimeDelta::seconds(90),
        )
        .await
        .unwrap();
    assert_eq!(too_late, None);
}

/// A batch of acks is judged item by item exactly as single acks are, whatever the mix.
#[tokio::test]
async fn a_batch_of_acks_is_judged_like_single_acks_in_request_order() {
    let db = TestDb::new().await;
    schedule(&db.store, 6, 1).await;
    let items = db
        .store
        .lease(&request("h", 6, TimeDelta::minutes(5)), t0())
        .await
        .unwrap();
    assert_eq!(items.len(), 6);
    // Item 4 was acked before; item 5 is acked with a stale token.
    let before = db
        .store
        .ack(&ack(&items[4], AckStatus::Failed), t0())
        .await
        .unwrap();
    assert!(matches!(before, AckResult::Acked { message_id: None }));
    let mut stale = ack(&items[5], AckStatus::Sent);
    stale.lease_token = Uuid::new_v4();
    let batch = vec![
        ack(&items[0], AckStatus::Sent),
        ack(&items[1], AckStatus::Skipped),
        ack(&items[0], AckStatus::Sent), // the same ack twice in one batch
        ack(&items[2], AckStatus::Sent),
        ack(&items[4], AckStatus::Sent), // conflicts with the earlier failed ack
        stale,
        Ack {
            item_id: 999_999,
            ..ack(&items[3], AckStatus::Sent)
        },
    ];
    let results = db.store.ack_many(&batch, t0()).await.unwrap();
    let message = |r: &AckResult| match r {
        AckResult::Acked { message_id } | AckResult::AlreadyAcked { message_id } => *message_id,
        _ => None,
    };
    assert!(matches!(
        results[0],
        AckResult::Acked {
            message_id: Some(_)
        }
    ));
    assert!(matches!(results[1], AckResult::Acked { message_id: None }));
    assert!(matches!(results[2], AckResult::AlreadyAcked { .. }));
    assert_eq!(
        message(&results[2]),
        message(&results[0]),
        "the same message"
    );
    assert!(matches!(
        results[3],
        AckResult::Acked {
            message_id: Some(_)
        }
    ));
    assert!(matches!(results[4], AckResult::Conflict { .. }));
    assert_eq!(results[5], AckResult::Stale);
    assert_eq!(results[6], AckResult::NotFound);
    assert_eq!(count(&db.store, "SELECT count(*) FROM messages").await, 2);
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM opportunities WHERE state = 'sent'"
        )
        .await,
        2
    );
    // And again: every ack now finds what the first batch did.
    let again = db.store.ack_many(&batch[..4], t0()).await.unwrap();
    assert!(again[..4]
        .iter()
        .all(|r| matches!(r, AckResult::AlreadyAcked { .. })));
    assert_eq!(message(&again[0]), message(&results[0]));
}
