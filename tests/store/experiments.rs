//! What an experiment report reads: each assigned user's window, counted exactly at its edges.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use tern_core::OutcomeKind;
use tern_store::{
    ActivityWindows, Assignment, ExperimentUser, NewMessage, NewOutcome, NewScheduleItem,
    Supersede, Withholding,
};
use tern_tests::TestDb;

use crate::{ingest_all, item, opportunity, plan, t0};

fn assign(experiment: &str, user: &str, arm: &str) -> Assignment {
    Assignment {
        experiment: experiment.into(),
        user_id: user.into(),
        arm: arm.into(),
    }
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn outcome(user: &str, message: i64, kind: OutcomeKind, at: DateTime<Utc>) -> NewOutcome {
    NewOutcome {
        user_id: user.into(),
        message_id: message,
        kind,
        occurred_at: at,
        value: None,
    }
}

const WINDOWS: ActivityWindows = ActivityWindows {
    retention_days: 7,
    pre_days: 14,
};

/// `t0` is 2026-03-01 12:00 UTC and `until` ten days later, so every user's window runs from
/// 2026-03-01 (or later) to 2026-03-11 12:00: active days count 03-01 to 03-10, retention
/// 03-04 to 03-10, the pre-period 02-15 to 02-28.
#[tokio::test]
async fn each_assigned_user_is_counted_over_their_own_window() {
    let db = TestDb::new().await;
    let s = &db.store;
    let until = t0() + TimeDelta::days(10);

    // Assignments: u2 moves to `treat` a day later (a switcher, first planned at t0 still);
    // u9 arrives after `until`; u1 is also in another experiment, which must not leak in.
    s.record_assignments(
        &[
            assign("exp", "u1", "control"),
            assign("exp", "u2", "control"),
            assign("exp", "u3", "treat"),
            assign("exp", "h1", "holdout"),
            assign("other", "u1", "b"),
        ],
        "p1",
        t0(),
    )
    .await
    .unwrap();
    s.record_assignments(
        &[assign("exp", "u2", "treat")],
        "p2",
        t0() + TimeDelta::days(1),
    )
    .await
    .unwrap();
    s.record_assignments(
        &[assign("exp", "u9", "control")],
        "p2",
        until + TimeDelta::hours(1),
    )
    .await
    .unwrap();

    // Messages: u1's first is before its window and its last after `until`.
    let ids = ingest_all(
        s,
        &[
            opportunity("u1", "a"),
            opportunity("u1", "b"),
            opportunity("u1", "c"),
            opportunity("u1", "d"),
            opportunity("u3", "a"),
            opportunity("h1", "a"),
            opportunity("h1", "b"),
            opportunity("h1", "c"),
        ],
    )
    .await;
    let sent = |user: &str, id, channel: &str, at| NewMessage {
        user_id: user.into(),
        opportunity_id: id,
        channel: channel.into(),
        sent_at: at,
    };
    let m = s
        .record_messages(&[
            sent("u1", ids[0], "push", t0() - TimeDelta::hours(1)),
            sent("u1", ids[1], "push", t0() + TimeDelta::hours(1)),
            sent("u1", ids[2], "email", t0() + TimeDelta::days(2)),
            sent("u1", ids[3], "push", until + TimeDelta::hours(1)),
            sent("u3", ids[4], "push", t0() + TimeDelta::days(3)),
        ])
        .await
        .unwrap();
    s.record_outcomes(
        &[
            // Before the window: its unsubscribe is not the experiment's doing.
            outcome(
                "u1",
                m[0],
                OutcomeKind::Unsubscribed,
                t0() - TimeDelta::minutes(30),
            ),
            outcome("u1", m[1], OutcomeKind::Opened, t0() + TimeDelta::hours(2)),
            outcome("u1", m[1], OutcomeKind::Clicked, t0() + TimeDelta::hours(2)),
            outcome(
                "u1",
                m[2],
                OutcomeKind::Complained,
                t0() + TimeDelta::days(3),
            ),
            // A message in the window, opened after `until`: not yet happened for the report.
            outcome(
                "u1",
                m[2],
                OutcomeKind::Opened,
                until + TimeDelta::minutes(1),
            ),
            outcome("u1", m[3], OutcomeKind::Opened, until + TimeDelta::hours(2)),
            outcome(
                "u3",
                m[4],
                OutcomeKind::PushDisabled,
                t0() + TimeDelta::days(3),
            ),
        ],
        until + TimeDelta::days(1),
    )
    .await
    .unwrap();

    // h1 is held out: two counterfactual items open their windows at t0 and become withheld at
    // the next plan; a third, sendable only after that plan, is superseded by it instead.
    let later = NewScheduleItem {
        send_after: t0() + TimeDelta::hours(5),
        send_before: t0() + TimeDelta::hours(6),
        counterfactual: Some(Withholding::Holdout),
        ..item("h1", ids[7], "push")
    };
    s.publish_plan(
        &plan(),
        &[
            NewScheduleItem {
                counterfactual: Some(Withholding::Holdout),
                ..item("h1", ids[5], "push")
            },
            NewScheduleItem {
                counterfactual: Some(Withholding::Holdout),
                ..item("h1", ids[6], "email")
            },
            later,
        ],
        &Supersede::All,
        t0(),
    )
    .await
    .unwrap();
    let second = s
        .publish_plan(&plan(), &[], &Supersede::All, t0() + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!((second.withheld, second.superseded), (2, 1));

    s.record_activity(&[
        ("u1".into(), day("2026-02-10")), // before the pre-period
        ("u1".into(), day("2026-02-20")), // pre-period
        ("u1".into(), day("2026-03-01")), // first planned day
        ("u1".into(), day("2026-03-05")),
        ("u1".into(), day("2026-03-10")), // last day before until's
        ("u1".into(), day("2026-03-11")), // until's own day: not counted
        ("u2".into(), day("2026-02-28")), // last pre-period day
        ("u2".into(), day("2026-03-04")), // first retention day
        ("u3".into(), day("2026-03-03")), // the day before the retention window
        ("u9".into(), day("2026-03-05")),
    ])
    .await
    .unwrap();

    let users = s.experiment_users("exp", until, WINDOWS).await.unwrap();
    let blank = |user: &str, arm: &str| ExperimentUser {
        user_id: user.into(),
        arm: arm.into(),
        arm_changes: 0,
        first_planned_at: t0(),
        messages: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        lost_reach: false,
        withheld: BTreeMap::new(),
        active_days: 0,
        retained: false,
        pre_active_days: 0,
    };
    let expected = vec![
        ExperimentUser {
            withheld: map(&[("email", 1), ("push", 1)]),
            ..blank("h1", "holdout")
        },
        ExperimentUser {
            messages: map(&[("email", 1), ("push", 1)]),
            outcomes: map(&[("clicked", 1), ("complained", 1), ("opened", 1)]),
            lost_reach: true,
            active_days: 3,
            retained: true,
            pre_active_days: 1,
            ..blank("u1", "control")
        },
        ExperimentUser {
            arm_changes: 1,
            active_days: 1,
            retained: true,
            pre_active_days: 1,
            ..blank("u2", "treat")
        },
        ExperimentUser {
            messages: map(&[("push", 1)]),
            outcomes: map(&[("push_disabled", 1)]),
            lost_reach: true,
            active_days: 1,
            ..blank("u3", "treat")
        },
    ];
    assert_eq!(users, expected);

    // A shorter retention window and no pre-period move only those two columns.
    let narrow = s
        .experiment_users(
            "exp",
            until,
            ActivityWindows {
                retention_days: 1,
                pre_days: 0,
            },
        )
        .await
        .unwrap();
    let flags: Vec<(&str, bool, u32)> = narrow
        .iter()
        .map(|u| (u.user_id.as_str(), u.retained, u.pre_active_days))
        .collect();
    assert_eq!(
        flags,
        [
            ("h1", false, 0),
            ("u1", true, 0),
            ("u2", false, 0),
            ("u3", false, 0)
        ]
    );

    // Before anyone was planned, and for an experiment nobody is in: nobody.
    assert!(s
        .experiment_users("exp", t0(), WINDOWS)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .experiment_users("nope", until, WINDOWS)
        .await
        .unwrap()
        .is_empty());
    let err = s
        .experiment_users(
            "exp",
            until,
            ActivityWindows {
                retention_days: 0,
                pre_days: 14,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least one day"), "{err}");
}
