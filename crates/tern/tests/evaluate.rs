//! `tern evaluate` and `tern policy simulate` on a real PostgreSQL holding a logged history
//! written through the store's own paths: a published plan, leases, acks, outcomes, expiry.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tern_core::{AckStatus, NewOpportunity, OutcomeKind};
use tern_store::{
    Ack, LeaseRequest, NewOutcome, NewPlan, NewScheduleItem, RowStatus, Supersede, User,
};
use tern_tests::TestDb;

mod common;

use common::{ok, tern, text};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

const USERS: usize = 40;
const SENT: usize = 30;

/// Forty users with one opportunity each, relevance rising with the index. A plan sends the
/// first thirty on push (even ones explored, propensity 0.9; odd ones greedy, 1.0), every third
/// of them is opened, and the last ten expire unsent.
async fn logged_history(db: &TestDb) {
    let store = &db.store;
    let users: Vec<User> = (0..USERS)
        .map(|i| User {
            user_id: format!("user-{i:02}"),
            timezone: "UTC".into(),
            locale: None,
            attributes: serde_json::json!({}),
            opted_out_categories: vec![],
            channels: vec![],
        })
        .collect();
    store
        .upsert_users(&users, t0() - TimeDelta::days(30))
        .await
        .unwrap();
    let batch: Vec<NewOpportunity> = (0..USERS)
        .map(|i| NewOpportunity {
            user_id: format!("user-{i:02}"),
            dedupe_key: format!("k{i}"),
            source: "test".into(),
            template: "new_release".into(),
            category: "content".into(),
            priority: "normal".into(),
            channels: vec!["push".into(), "email".into(), "in_app".into()],
            signals: BTreeMap::from([("relevance".into(), i as f64 / USERS as f64)]),
            payload: Default::default(),
            created_at: t0() - TimeDelta::hours(1),
            expires_at: t0() + TimeDelta::hours(6),
        })
        .collect();
    let ids: Vec<i64> = store
        .ingest_opportunities(&batch)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| match r {
            RowStatus::New(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    let items: Vec<NewScheduleItem> = (0..SENT)
        .map(|i| NewScheduleItem {
            user_id: format!("user-{i:02}"),
            opportunity_id: ids[i],
            channel: "push".into(),
            send_after: t0(),
            send_before: t0() + TimeDelta::hours(1),
            value: 0.1,
            propensity: if i % 2 == 0 { 0.9 } else { 1.0 },
            experiment: None,
            arm: None,
            scores: serde_json::json!({}),
            counterfactual: None,
        })
        .collect();
    store
        .publish_plan(
            &NewPlan {
                trigger: "manual".into(),
                policy_version: "logged".into(),
                model_version: None,
                seed: 0,
                started_at: t0(),
                horizon_end: t0() + TimeDelta::hours(24),
                stats: Default::default(),
            },
            &items,
            &Supersede::All,
            t0(),
        )
        .await
        .unwrap();
    let leased = store
        .lease(
            &LeaseRequest {
                holder: "test".into(),
                channels: vec!["push".into()],
                max_items: 100,
                lease_for: TimeDelta::minutes(10),
            },
            t0() + TimeDelta::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), SENT);
    let acks: Vec<Ack> = leased
        .iter()
        .map(|l| Ack {
            user_id: l.user_id.clone(),
            item_id: l.item_id,
            lease_token: l.lease_token,
            status: AckStatus::Sent,
        })
        .collect();
    let results = store
        .ack_many(&acks, t0() + TimeDelta::minutes(2))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for (l, r) in leased.iter().zip(results) {
        let tern_store::AckResult::Acked {
            message_id: Some(message_id),
        } = r
        else {
            panic!("{r:?}")
        };
        let i: usize = l.user_id[5..].parse().unwrap();
        if i.is_multiple_of(3) {
            outcomes.push(NewOutcome {
                user_id: l.user_id.clone(),
                message_id,
                kind: OutcomeKind::Opened,
                occurred_at: t0() + TimeDelta::minutes(30),
                value: None,
            });
        }
    }
    store
        .record_outcomes(&outcomes, t0() + TimeDelta::hours(1))
        .await
        .unwrap();
    store.expire(t0() + TimeDelta::hours(7)).await.unwrap();
}

/// The example bundle with a bar no candidate clears: a policy that sends nothing.
fn never_sends(dir: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            dir.join(path.file_name().unwrap()),
            text.replace("minValue: 0.05", "minValue: 100"),
        )
        .unwrap();
    }
}

fn until() -> String {
    (t0() + TimeDelta::days(3)).to_rfc3339()
}

const LABELS: [&str; 4] = ["--conversion-days", "1", "--reachability-days", "1"];

#[tokio::test]
async fn evaluate_estimates_a_candidate_from_the_logged_decisions() {
    let db = TestDb::new().await;
    logged_history(&db).await;
    let scratch = tempdir();
    never_sends(&scratch);

    let mut args = vec!["evaluate", "--policies"];
    let never = scratch.to_str().unwrap().to_string();
    args.push(&never);
    let until = until();
    args.extend(["--until", &until, "--json"]);
    args.extend(LABELS);
    let json: serde_json::Value = serde_json::from_str(&ok(&tern(&args, Some(&db.url)))).unwrap();
    assert_eq!(json["decisions"], USERS);
    assert_eq!(json["logged_sends"], SENT);
    assert_eq!(json["candidate_sends"], 0);
    assert_eq!(json["same_action"], USERS - SENT);
    let objectives = json["objectives"].as_array().unwrap();
    let engagement = objectives
        .iter()
        .find(|o| o["objective"] == "engagement")
        .unwrap();
    // Every decision's engagement is observable 3 days on; a policy that sends nothing earns
    // exactly 0 under every estimator, interval included.
    assert_eq!(engagement["rows"], USERS);
    for estimator in ["ips", "snips", "doubly_robust"] {
        for field in ["value", "low", "high"] {
            assert_eq!(engagement[estimator][field], 0.0, "{estimator}.{field}");
        }
    }
    // Retention needs 28 days: nothing to estimate from yet, and the output says so.
    let retention = objectives
        .iter()
        .find(|o| o["objective"] == "retention")
        .unwrap();
    assert_eq!(retention["rows"], 0);
    assert!(retention["error"].as_str().unwrap().contains("no logged"));

    // The example bundle sends the more relevant opportunities; its figures are consistent.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let example = example.to_str().unwrap();
    let mut args = vec![
        "evaluate",
        "--policies",
        example,
        "--until",
        &until,
        "--json",
    ];
    args.extend(LABELS);
    let json: serde_json::Value = serde_json::from_str(&ok(&tern(&args, Some(&db.url)))).unwrap();
    assert!(json["candidate_sends"].as_u64().unwrap() > 0, "{json}");
    let engagement = json["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["objective"] == "engagement")
        .unwrap()
        .clone();
    for estimator in ["ips", "snips", "doubly_robust"] {
        let e = &engagement[estimator];
        let (v, lo, hi) = (
            e["value"].as_f64().unwrap(),
            e["low"].as_f64().unwrap(),
            e["high"].as_f64().unwrap(),
        );
        assert!(lo <= v && v <= hi, "{estimator}: {e}");
    }
    let ess = engagement["effective_sample_size"].as_f64().unwrap();
    assert!(ess > 0.0 && ess <= USERS as f64, "{ess}");

    // The text output names the estimators and the direct method.
    let mut args = vec!["evaluate", "--policies", example, "--until", &until];
    args.extend(LABELS);
    let out = ok(&tern(&args, Some(&db.url)));
    assert!(
        out.contains("doubly robust") && out.contains("the prior"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn policy_simulate_prints_what_a_change_would_do_as_markdown() {
    let db = TestDb::new().await;
    logged_history(&db).await;
    let scratch = tempdir();
    never_sends(&scratch);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let until = until();
    let mut args = vec![
        "policy",
        "simulate",
        "--against",
        example.to_str().unwrap(),
        scratch.to_str().unwrap(),
        "--until",
        &until,
    ];
    args.extend(LABELS);
    let md = ok(&tern(&args, Some(&db.url)));
    for section in [
        "### tern policy simulate",
        "**Users affected:**",
        "#### Volume per channel",
        "#### Volume per hour",
        "#### Suppressions by reason",
        "#### Estimated value per decision",
        "| below_min_value |",
    ] {
        assert!(md.contains(section), "{section} missing from:\n{md}");
    }
    // The new bundle sends nothing: its total is 0 and every send the current one makes is gone.
    let all = md
        .lines()
        .find(|l| l.starts_with("| **all** |"))
        .expect("a total row");
    let cells: Vec<&str> = all.split('|').map(str::trim).collect();
    assert_eq!(cells[3], "**0**", "{all}");
    assert_ne!(cells[2], "**0**", "{all}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A new generator that fails on every user shows up as errors, not as "nothing changes": the
/// replay runs it on the events tern received in the period; older events without their
/// content are reported as not replayed.
#[tokio::test]
async fn policy_simulate_replays_changed_generators_on_the_logged_events() {
    let db = TestDb::new().await;
    logged_history(&db).await;
    let event = |id: &str, content: Option<tern_store::EventContent>| tern_store::EventRecord {
        event_id: id.into(),
        event_type: "playlist_updated".into(),
        user_count: 3,
        opportunities: 0,
        occurred_at: None,
        content: content.unwrap_or_default(),
    };
    let content = tern_store::EventContent {
        user_ids: vec!["user-01".into(), "user-02".into(), "user-03".into()],
        numbers: BTreeMap::from([("popularity".into(), 0.7)]),
        strings: BTreeMap::new(),
    };
    db.store
        .record_events(
            &[
                event("ev-1", Some(content.clone())),
                event("ev-2", Some(content)),
            ],
            t0(),
        )
        .await
        .unwrap();
    let scratch = tempdir();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, scratch.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        scratch.join("playlists.yaml"),
        "apiVersion: tern/v1\nkind: Generator\nmetadata: { name: playlist-updated }\nspec:\n  on: { event: playlist_updated }\n  when: \"has(user.playlists) && event.popularity > 0.5 || user.plays > 3\"\n  message: { template: playlist, category: content }\n  channels: [push]\n  ttl: 1d\n",
    )
    .unwrap();
    // The example's Schema declares the event shapes; declare this one too.
    let schema = std::fs::read_to_string(scratch.join("schema.yaml")).unwrap();
    std::fs::write(
        scratch.join("schema.yaml"),
        schema
            .replace(
                "  events:\n",
                "  events:\n    playlist_updated:\n      popularity: number\n",
            )
            .replace(
                "  user:\n",
                "  user:\n    playlists: list\n    plays: number\n",
            ),
    )
    .unwrap();
    let until = until();
    let mut args = vec![
        "policy",
        "simulate",
        "--against",
        example.to_str().unwrap(),
        scratch.to_str().unwrap(),
        "--until",
        &until,
    ];
    args.extend(LABELS);
    let md = ok(&tern(&args, Some(&db.url)));
    let row = md
        .lines()
        .find(|l| l.starts_with("| playlist-updated |"))
        .unwrap_or_else(|| panic!("no generator row in:\n{md}"));
    // The last cell (the error) may hold an escaped `\|`: split off the six before it.
    let cells: Vec<&str> = row.trim_start_matches("| ").splitn(7, " | ").collect();
    // Two events of three users each; `user.plays` is missing for every one of them.
    assert_eq!(&cells[1..6], ["added", "–", "0", "–", "6"], "{row}");
    assert!(cells[6].contains("No such key: plays"), "{row}");
    assert!(md.contains("counted, not planned"), "{md}");

    args.extend(["--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&tern(&args, Some(&db.url)))).unwrap();
    let g = &json["generators"]["rows"][0];
    assert_eq!(g["generator"], "playlist-updated");
    assert_eq!(g["new"]["errors"], 6);
    assert_eq!(json["generators"]["events_replayed"], 2);
    assert_eq!(json["decisions"], USERS);
    assert!(json["values"].as_array().unwrap().len() >= 3, "{json}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn bad_input_gets_one_precise_error_and_changes_nothing() {
    let db = TestDb::new().await;
    let until = until();
    let out = tern(
        &[
            "evaluate",
            "--policies",
            "/nonexistent/policies",
            "--until",
            &until,
        ],
        Some(&db.url),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a valid policy bundle"),
        "{}",
        text(&out.stderr)
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let example = example.to_str().unwrap();
    let out = tern(
        &["evaluate", "--policies", example, "--until", &until],
        Some(&db.url),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no decisions were logged"),
        "{}",
        text(&out.stderr)
    );
    let out = tern(
        &["evaluate", "--policies", example, "--level", "2"],
        Some(&db.url),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--level must be in (0, 1)"));
    let out = tern(
        &["evaluate", "--policies", example, "--days", "0"],
        Some(&db.url),
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses 0 days");
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tern-evaluate-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
