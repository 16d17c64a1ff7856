use chrono::{DateTime, TimeDelta, Utc};
use tern_core::OutcomeKind;
use tern_store::{NewMessage, NewOutcome, Store};
use tern_tests::TestDb;

use crate::{count, ingest_all, opportunity, t0};

/// Imports a message on `channel` for a new opportunity of `user` in `category`, sent at `at`.
async fn sent(store: &Store, user: &str, channel: &str, category: &str, at: DateTime<Utc>) -> i64 {
    let mut o = opportunity(
        user,
        &format!("{channel}-{category}-{}", at.timestamp_millis()),
    );
    o.category = category.into();
    o.created_at = at - TimeDelta::minutes(1);
    let id = ingest_all(store, &[o]).await[0];
    store
        .record_messages(&[NewMessage {
            user_id: user.into(),
            opportunity_id: id,
            channel: channel.into(),
            sent_at: at,
        }])
        .await
        .unwrap()[0]
}

#[tokio::test]
async fn history_windows_count_per_channel_and_category_in_each_rolling_window() {
    let db = TestDb::new().await;
    let s = &db.store;
    let now = t0();
    sent(s, "u1", "push", "content", now - TimeDelta::hours(2)).await;
    sent(s, "u1", "push", "content", now - TimeDelta::hours(30)).await;
    sent(s, "u1", "email", "digest", now - TimeDelta::days(3)).await;
    sent(s, "u1", "push", "commerce", now - TimeDelta::days(10)).await;
    // Exactly on the window's edge: outside (windows are (now - w, now]).
    sent(s, "u1", "email", "content", now - TimeDelta::days(7)).await;
    // In the future relative to `now`: not history yet.
    sent(s, "u1", "push", "content", now + TimeDelta::minutes(1)).await;
    sent(s, "u2", "push", "content", now - TimeDelta::hours(1)).await;

    let day = TimeDelta::days(1);
    let week = TimeDelta::days(7);
    let users = vec!["u1".to_string(), "u3".to_string(), "u2".to_string()];
    let h = s.history_windows(&users, &[day, week], now).await.unwrap();
    assert_eq!(
        h.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ["u1", "u3", "u2"]
    );
    let u1 = &h[0];
    assert_eq!(u1.count(day, None, None), 1);
    assert_eq!(u1.count(day, Some("push"), None), 1);
    assert_eq!(u1.count(week, Some("push"), None), 2);
    assert_eq!(u1.count(week, Some("email"), None), 1);
    assert_eq!(u1.count(week, None, Some("content")), 2);
    assert_eq!(u1.count(week, None, None), 3);
    assert_eq!(u1.last_sent_at, Some(now - TimeDelta::hours(2)));
    assert_eq!(u1.last_sent_per_channel["email"], now - TimeDelta::days(3));
    assert!(h[1].counts.is_empty() && h[1].last_sent_at.is_none());
    assert_eq!(h[2].count(day, Some("push"), None), 1);

    let recent = s
        .recent_sends(&["u1".to_string()], now - week, now)
        .await
        .unwrap();
    assert_eq!(recent.len(), 3);
    assert!(recent.windows(2).all(|w| w[0].sent_at <= w[1].sent_at));
}

#[tokio::test]
async fn an_outcome_reported_twice_is_stored_once() {
    let db = TestDb::new().await;
    let m = sent(&db.store, "u1", "push", "content", t0()).await;
    let outcome = |kind| NewOutcome {
        user_id: "u1".into(),
        message_id: m,
        kind,
        occurred_at: t0() + TimeDelta::minutes(5),
        value: None,
    };
    let batch = vec![
        outcome(OutcomeKind::Opened),
        outcome(OutcomeKind::Opened),
        outcome(OutcomeKind::Clicked),
    ];
    let first = db.store.record_outcomes(&batch, t0()).await.unwrap();
    assert_eq!(
        (first.stored, first.duplicates, first.unknown_message),
        (2, 1, 0)
    );
    let again = db.store.record_outcomes(&batch, t0()).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3));
    assert_eq!(count(&db.store, "SELECT count(*) FROM outcomes").await, 2);
}

#[tokio::test]
async fn outcomes_for_unknown_messages_are_counted_not_stored() {
    let db = TestDb::new().await;
    let m = sent(&db.store, "u1", "push", "content", t0()).await;
    let report = db
        .store
        .record_outcomes(
            &[
                NewOutcome {
                    user_id: "u1".into(),
                    message_id: m + 99,
                    kind: OutcomeKind::Delivered,
                    occurred_at: t0(),
                    value: None,
                },
                // The right message id under the wrong user is unknown too.
                NewOutcome {
                    user_id: "u2".into(),
                    message_id: m,
                    kind: OutcomeKind::Delivered,
                    occurred_at: t0(),
                    value: None,
                },
                NewOutcome {
                    user_id: "u1".into(),
                    message_id: m,
                    kind: OutcomeKind::Converted,
                    occurred_at: t0(),
                    value: Some(12.5),
                },
            ],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!((report.stored, report.unknown_message), (1, 2));
}

#[tokio::test]
async fn an_unsubscribe_opts_the_user_out_of_that_channel() {
    let db = TestDb::new().await;
    let m = sent(&db.store, "u1", "email", "content", t0()).await;
    let report = db
        .store
        .record_outcomes(
            &[NewOutcome {
                user_id: "u1".into(),
                message_id: m,
                kind: OutcomeKind::Unsubscribed,
                occurred_at: t0(),
                value: None,
            }],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(report.opted_out, 1);
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM user_channels WHERE user_id = 'u1' AND channel = 'email' AND opted_out").await,
        1
    );
}
