use chrono::{NaiveDate, TimeDelta};
use futures::TryStreamExt;
use tern_core::OutcomeKind;
use tern_store::{NewMessage, NewOutcome, TrainingUser};
use tern_tests::TestDb;

use crate::{ingest_all, opportunity, t0};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test]
async fn activity_is_recorded_once_per_user_and_day() {
    let db = TestDb::new().await;
    let s = &db.store;
    let days = vec![
        ("a".to_string(), day("2026-03-01")),
        ("a".to_string(), day("2026-03-02")),
        ("a".to_string(), day("2026-03-01")),
    ];
    assert_eq!(s.record_activity(&days).await.unwrap(), 2);
    assert_eq!(s.record_activity(&days).await.unwrap(), 0, "idempotent");
    let err = s
        .record_activity(&[(String::new(), day("2026-03-01"))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 to 512 bytes"), "{err}");
}

/// Users come out one at a time in id order, each with its own messages (by send time, with
/// their outcomes) and its own activity days; activity of users without messages in the period
/// and messages outside the period are left out.
#[tokio::test]
async fn training_history_merges_messages_outcomes_and_activity_per_user() {
    let db = TestDb::new().await;
    let s = &db.store;
    let ids = ingest_all(
        s,
        &[
            opportunity("b", "k1"),
            opportunity("b", "k2"),
            opportunity("d", "k1"),
            opportunity("d", "k2"),
        ],
    )
    .await;
    let send = |user: &str, id, hours: i64| NewMessage {
        user_id: user.into(),
        opportunity_id: id,
        channel: "push".into(),
        sent_at: t0() + TimeDelta::hours(hours),
    };
    let m = s
        .record_messages(&[
            send("b", ids[1], 5),
            send("b", ids[0], 1),
            send("d", ids[2], 2),
            send("d", ids[3], -100), // before the period
        ])
        .await
        .unwrap();
    let outcome = |user: &str, message, kind, hours| NewOutcome {
        user_id: user.into(),
        message_id: message,
        kind,
        occurred_at: t0() + TimeDelta::hours(hours),
        value: None,
    };
    s.record_outcomes(
        &[
            outcome("b", m[1], OutcomeKind::Clicked, 3),
            outcome("b", m[1], OutcomeKind::Opened, 2),
        ],
        t0(),
    )
    .await
    .unwrap();
    let activity: Vec<(String, NaiveDate)> = [
        ("a", "2026-03-01"),
        ("b", "2026-02-20"),
        ("b", "2026-03-02"),
        ("c", "2026-03-01"),
        ("d", "2026-01-01"), // outside the activity range
        ("e", "2026-03-01"),
    ]
    .iter()
    .map(|(u, d)| (u.to_string(), day(d)))
    .collect();
    s.record_activity(&activity).await.unwrap();

    let users: Vec<TrainingUser> = s
        .training_history(
            t0() - TimeDelta::hours(1),
            t0() + TimeDelta::days(1),
            day("2026-02-01"),
            day("2026-03-31"),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ["b", "d"]
    );
    let b = &users[0];
    assert_eq!(b.active_days, [day("2026-02-20"), day("2026-03-02")]);
    assert_eq!(b.timezone, None, "no user row");
    assert_eq!(
        b.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [m[1], m[0]],
        "by send time"
    );
    assert_eq!(
        b.messages[0].outcomes,
        [
            (OutcomeKind::Opened, t0() + TimeDelta::hours(2)),
            (OutcomeKind::Clicked, t0() + TimeDelta::hours(3))
        ]
    );
    assert_eq!(b.messages[0].signals.get("relevance"), Some(&0.7));
    assert_eq!(b.messages[0].template, "new_release");
    let d = &users[1];
    assert!(d.active_days.is_empty());
    assert_eq!(d.messages.len(), 1);
    assert!(d.messages[0].outcomes.is_empty());
}
