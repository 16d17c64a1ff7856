use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde_json::json;
use tern_store::{ChannelState, EventRecord, User};
use tern_tests::TestDb;

use crate::t0;

fn user(id: &str, attributes: serde_json::Value, channels: &[(&str, bool, bool)]) -> User {
    User {
        user_id: id.into(),
        timezone: "Europe/Stockholm".into(),
        locale: Some("sv-SE".into()),
        attributes,
        opted_out_categories: vec!["marketing".into()],
        channels: channels
            .iter()
            .map(|(c, reachable, opted_out)| ChannelState {
                channel: c.to_string(),
                reachable: *reachable,
                opted_out: *opted_out,
            })
            .collect(),
    }
}

/// A generator sees each user with attributes, channels and the active days of the 28 days
/// before today (today itself and older days left out); pages walk every user once, in order.
#[tokio::test]
async fn generator_users_carry_channels_and_recent_activity_and_page_in_id_order() {
    let db = TestDb::new().await;
    let s = &db.store;
    let users: Vec<User> = (0..5)
        .map(|i| {
            user(
                &format!("u{i}"),
                json!({"n": i}),
                &[("push", i % 2 == 0, false), ("email", true, i == 3)],
            )
        })
        .collect();
    s.upsert_users(&users, t0()).await.unwrap();
    let today = t0().date_naive();
    let days = [1, 2, 28, 29, 0]
        .iter()
        .map(|d| ("u1".to_string(), today - TimeDelta::days(*d)))
        .collect::<Vec<_>>();
    s.record_activity(&days).await.unwrap();

    let some = s
        .generator_users(&["u3".into(), "u1".into(), "nobody".into()], t0())
        .await
        .unwrap();
    assert_eq!(some.len(), 2);
    let u1 = &some[0];
    assert_eq!(u1.user_id, "u1");
    assert_eq!(u1.active_days_28d, 3, "1, 2 and 28 days ago");
    assert_eq!(u1.attributes, json!({"n": 1}));
    assert_eq!(u1.timezone, "Europe/Stockholm");
    assert_eq!(u1.opted_out_categories, ["marketing"]);
    assert_eq!(
        u1.channels,
        BTreeMap::from([
            ("email".to_string(), (true, false)),
            ("push".to_string(), (false, false))
        ])
    );
    assert_eq!(some[1].channels["email"], (true, true));
    assert_eq!(some[1].active_days_28d, 0);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .generator_users_page(after.as_deref(), 2, t0())
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        seen.extend(page.into_iter().map(|u| u.user_id));
    }
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4"]);
}

#[tokio::test]
async fn events_are_recorded_once_by_id() {
    let db = TestDb::new().await;
    let s = &db.store;
    let record = |id: &str| EventRecord {
        event_id: id.into(),
        event_type: "artist_release".into(),
        user_count: 3,
        opportunities: 1,
        occurred_at: Some(t0()),
        content: tern_store::EventContent {
            user_ids: vec!["a".into(), "b".into(), "c".into()],
            numbers: [("popularity".to_string(), 0.5)].into(),
            strings: [("artist_id".to_string(), id.to_string())].into(),
        },
    };
    assert_eq!(
        s.record_events(&[record("e1"), record("e2")], t0())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.record_events(&[record("e2"), record("e3")], t0())
            .await
            .unwrap(),
        1
    );
    let seen = s
        .seen_events(&["e1".into(), "e3".into(), "e9".into()])
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.contains("e1") && seen.contains("e3"));
    // What each event carried comes back for replays, oldest first.
    let stored = s
        .events_between(
            t0() - chrono::TimeDelta::hours(1),
            t0() + chrono::TimeDelta::hours(1),
            10,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    assert_eq!(stored[1].content, Some(record("e2").content));
    assert_eq!(stored[0].event_type, "artist_release");
}
