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

/// A would-be send says why it was not sent, and training and off-policy evaluation read the
/// probability of "no send" from that: certain for a holdout user's, the item's propensity (the
/// `withhold` share) for one withheld at random.
#[tokio::test]
async fn withheld_sends_carry_the_probability_of_not_sending() {
    use crate::{item, plan};
    use tern_store::{Supersede, Withholding};

    let db = TestDb::new().await;
    let s = &db.store;
    let ids = ingest_all(
        s,
        &[
            opportunity("w", "k1"),
            opportunity("w", "k2"),
            opportunity("w", "k3"),
        ],
    )
    .await;
    let mut holdout = item("w", ids[0], "push");
    holdout.counterfactual = Some(Withholding::Holdout);
    holdout.propensity = 0.8;
    let mut explored = item("w", ids[1], "email");
    explored.counterfactual = Some(Withholding::Exploration);
    explored.propensity = 0.05;
    let real = item("w", ids[2], "push");
    s.publish_plan(&plan(), &[holdout, explored, real], &Supersede::All, t0())
        .await
        .unwrap();
    let why: Vec<Option<String>> =
        sqlx::query_scalar("SELECT withheld_by FROM schedule_items ORDER BY opportunity_id")
            .fetch_all(s.pool())
            .await
            .unwrap();
    assert_eq!(
        why,
        [
            Some("holdout".to_string()),
            Some("exploration".into()),
            None
        ]
    );
    // A real item cannot claim to be withheld.
    let err =
        sqlx::query("UPDATE schedule_items SET withheld_by = 'holdout' WHERE state = 'pending'")
            .execute(s.pool())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("withheld_by"), "{err}");

    let at = t0() + TimeDelta::hours(1);
    assert_eq!(s.settle_counterfactuals(at).await.unwrap(), 2);
    let users: Vec<TrainingUser> = s
        .training_history(
            t0() - TimeDelta::hours(2),
            at,
            day("2026-02-01"),
            day("2026-03-31"),
        )
        .try_collect()
        .await
        .unwrap();
    // The real item was never sent, so the user's history holds only the two withheld ones.
    let w = &users[0];
    let mut got: Vec<(String, Option<f64>)> = w
        .withheld
        .iter()
        .map(|m| (m.channel.clone(), m.propensity))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("email".to_string(), Some(0.05)),
            ("push".into(), Some(1.0))
        ]
    );

    let decisions = s
        .logged_decisions(t0() - TimeDelta::hours(2), at)
        .await
        .unwrap();
    let withheld: Vec<(i64, f64)> = decisions
        .iter()
        .filter_map(|d| {
            d.withheld
                .as_ref()
                .map(|w| (d.opportunity_id, w.propensity))
        })
        .collect();
    assert_eq!(withheld, [(ids[0], 1.0), (ids[1], 0.05)]);
    assert!(decisions
        .iter()
        .all(|d| d.sent.is_none() && d.withheld.as_ref().is_none_or(|w| w.planned_at == t0())));
}
