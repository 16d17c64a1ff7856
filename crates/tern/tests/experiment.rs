//! `tern experiment report` as an operator runs it: the real binary on a seeded database, its
//! numbers checked against a hand count, the sample-ratio alarm, the Markdown form, bad input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use tern_core::NewOpportunity;
use tern_store::{
    Assignment, NewMessage, NewPlan, NewScheduleItem, RowStatus, Store, Supersede, Withholding,
};
use tern_tests::TestDb;

mod common;

use common::{ok, tern, text};

/// The experiments the tests report on; `default` is the objective every bundle needs.
const BUNDLE: &str = "\
apiVersion: tern/v1
kind: Objective
metadata: { name: default }
spec:
  weights: { conversion: 1.0, retention: 2 }
  minValue: 0.02
---
apiVersion: tern/v1
kind: Experiment
metadata: { name: onboarding }
spec:
  salt: s1
  arms:
    - { name: control, share: 0.5 }
    - { name: gentle, share: 0.4 }
    - { name: holdout, share: 0.1, holdout: true }
---
apiVersion: tern/v1
kind: Experiment
metadata: { name: skewed }
spec:
  salt: s2
  arms:
    - { name: control, share: 0.5 }
    - { name: treatment, share: 0.5 }
---
apiVersion: tern/v1
kind: Experiment
metadata: { name: quiet }
spec:
  salt: s3
  arms:
    - { name: control, share: 0.5 }
    - { name: treatment, share: 0.5 }
";

/// A policy directory of its own, removed when dropped.
struct Policies(PathBuf);

impl Policies {
    fn new(name: &str) -> Policies {
        let dir = std::env::temp_dir().join(format!(
            "tern-experiment-test-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policies.yaml"), BUNDLE).unwrap();
        Policies(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Policies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 0, 0, 0).unwrap()
}

const UNTIL: &str = "2026-06-29T00:00:00Z";

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn assign(store: &Store, experiment: &str, users: &[(&str, &str)], at: DateTime<Utc>) {
    let rows: Vec<Assignment> = users
        .iter()
        .map(|(user, arm)| Assignment {
            experiment: experiment.into(),
            user_id: user.to_string(),
            arm: arm.to_string(),
        })
        .collect();
    store.record_assignments(&rows, "p1", at).await.unwrap();
}

fn opportunity(user: &str, key: &str) -> NewOpportunity {
    NewOpportunity {
        user_id: user.into(),
        dedupe_key: key.into(),
        source: "test".into(),
        template: "welcome".into(),
        category: "onboarding".into(),
        priority: "marketing".into(),
        channels: vec!["push".into(), "email".into()],
        signals: BTreeMap::new(),
        payload: Default::default(),
        created_at: t0() - TimeDelta::hours(1),
        expires_at: t0() + TimeDelta::days(2),
    }
}

async fn ingest(store: &Store, user: &str, key: &str) -> i64 {
    match store
        .ingest_opportunities(&[opportunity(user, key)])
        .await
        .unwrap()
        .rows[0]
    {
        RowStatus::New(id) => id,
        ref other => panic!("{other:?}"),
    }
}

/// Sends `user` one message per channel listed, a day apart from `t0 + 1 day`.
async fn send(store: &Store, user: &str, channels: &[&str]) {
    for (i, channel) in channels.iter().enumerate() {
        let id = ingest(store, user, &format!("m{i}")).await;
        store
            .record_messages(&[NewMessage {
                user_id: user.into(),
                opportunity_id: id,
                channel: channel.to_string(),
                sent_at: t0() + TimeDelta::days(1 + i as i64),
            }])
            .await
            .unwrap();
    }
}

/// The `onboarding` experiment, by hand:
///
/// | arm     | users                     | messages               | retained (06-22..06-28) |
/// |---------|---------------------------|------------------------|-------------------------|
/// | control | c1, c2, c3 (+ c4 switched) | c1 push push email; c2 push | c1, c2           |
/// | gentle  | g1, g2                    | g1 push; g2 email      | g1, g2                  |
/// | holdout | h1                        | (one push withheld)    | —                       |
async fn seed_onboarding(store: &Store) {
    assign(
        store,
        "onboarding",
        &[
            ("c1", "control"),
            ("c2", "control"),
            ("c3", "control"),
            ("c4", "gentle"),
            ("g1", "gentle"),
            ("g2", "gentle"),
            ("h1", "holdout"),
        ],
        t0(),
    )
    .await;
    // A later plan moves c4: it saw both arms.
    assign(
        store,
        "onboarding",
        &[("c4", "control")],
        t0() + TimeDelta::hours(1),
    )
    .await;
    send(store, "c1", &["push", "push", "email"]).await;
    send(store, "c2", &["push"]).await;
    send(store, "c4", &["push", "push", "push", "push", "push"]).await;
    send(store, "g1", &["push"]).await;
    send(store, "g2", &["email"]).await;

    // h1's counterfactual push opens its window at t0 + 1 h; the next plan withholds it.
    let id = ingest(store, "h1", "w0").await;
    let plan = NewPlan {
        trigger: "manual".into(),
        policy_version: "p1".into(),
        model_version: None,
        seed: 0,
        started_at: t0(),
        horizon_end: t0() + TimeDelta::days(1),
        stats: Default::default(),
    };
    let item = NewScheduleItem {
        user_id: "h1".into(),
        opportunity_id: id,
        channel: "push".into(),
        send_after: t0() + TimeDelta::hours(1),
        send_before: t0() + TimeDelta::hours(2),
        value: 1.0,
        propensity: 1.0,
        experiment: Some("onboarding".into()),
        arm: Some("holdout".into()),
        scores: serde_json::json!({}),
        counterfactual: Some(Withholding::Holdout),
    };
    store
        .publish_plan(&plan, &[item], &Supersede::All, t0())
        .await
        .unwrap();
    let next = store
        .publish_plan(&plan, &[], &Supersede::All, t0() + TimeDelta::hours(3))
        .await
        .unwrap();
    assert_eq!(next.withheld, 1);

    store
        .record_activity(&[
            ("c1".into(), day("2026-06-10")),
            ("c1".into(), day("2026-06-25")),
            ("c2".into(), day("2026-06-28")),
            ("c3".into(), day("2026-06-20")),
            ("g1".into(), day("2026-06-22")),
            ("g2".into(), day("2026-06-27")),
        ])
        .await
        .unwrap();
}

fn report(args: &[&str], url: &str) -> std::process::Output {
    let mut all = vec!["experiment", "report"];
    all.extend_from_slice(args);
    tern(&all, Some(url))
}

fn arm<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no arm {name} in {json}"))
}

fn comparison<'a>(json: &'a Value, arm: &str, metric: &str) -> &'a Value {
    json["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["arm"] == arm && c["metric"] == metric)
        .unwrap_or_else(|| panic!("no {arm}/{metric} in {json}"))
}

fn close(value: &Value, expected: f64) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"));
    assert!((got - expected).abs() < 1e-9, "{got} != {expected}");
}

#[tokio::test]
async fn the_json_report_matches_a_hand_count() {
    let db = TestDb::new().await;
    seed_onboarding(&db.store).await;
    let policies = Policies::new("json");
    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--until",
            UNTIL,
            "--format",
            "json",
        ],
        &db.url,
    );
    let json: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(json["experiment"], "onboarding");
    assert_eq!(json["until"], UNTIL);
    assert_eq!(json["level"], 0.95);
    assert_eq!(json["control"], "control");
    assert_eq!(json["primary"], "retained");
    assert_eq!(
        json["guardrails"],
        serde_json::json!(["complained", "unsubscribed"])
    );
    assert!(json["decision_rule"]
        .as_str()
        .unwrap()
        .starts_with("ship an arm if the CUPED 95% interval"));
    assert_eq!(json["users"], 7);

    let control = arm(&json, "control");
    assert_eq!(control["users"], 3);
    assert_eq!(control["switched_users"], 1);
    assert_eq!(control["share"], 0.5);
    assert_eq!(control["messages"]["count"], 4);
    close(&control["messages"]["per_user"], 4.0 / 3.0);
    assert_eq!(control["messages_by_channel"]["push"]["count"], 3);
    assert_eq!(control["messages_by_channel"]["email"]["count"], 1);
    close(&control["metrics"]["retained"], 2.0 / 3.0);
    // c1 was active on 06-10, inside the 14 pre-period days before 06-15.
    close(&control["pre_active_days"], 1.0 / 3.0);
    let gentle = arm(&json, "gentle");
    assert_eq!(
        (gentle["users"].as_u64(), gentle["switched_users"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(gentle["messages_by_channel"]["push"]["count"], 1);
    assert_eq!(gentle["messages_by_channel"]["email"]["count"], 1);
    // Days observed: 06-15 to 06-29, 14. g1 and g2 were active one day each.
    close(&gentle["metrics"]["active_days_share"], 1.0 / 14.0);
    let holdout = arm(&json, "holdout");
    assert_eq!(holdout["holdout"], true);
    assert_eq!(holdout["messages"]["count"], 0);
    assert_eq!(holdout["would_be_messages"]["count"], 1);
    assert_eq!(holdout["would_be_messages_by_channel"]["push"]["count"], 1);

    // Messages per user: control [3, 1, 0], gentle [1, 1]. Welch: var(control) = 7/3,
    // var(gentle) = 0, so the half-width is z · sqrt(7/3 / 3).
    let m = comparison(&json, "gentle", "messages");
    assert_eq!(m["role"], "secondary");
    assert_eq!(m["better"], "lower");
    close(&m["control_mean"], 4.0 / 3.0);
    close(&m["treatment_mean"], 1.0);
    close(&m["raw"]["delta"], -1.0 / 3.0);
    let half = 1.959_963_984_540_054 * (7.0f64 / 9.0).sqrt();
    assert!((m["raw"]["low"].as_f64().unwrap() - (-1.0 / 3.0 - half)).abs() < 1e-7);
    assert!((m["raw"]["high"].as_f64().unwrap() - (-1.0 / 3.0 + half)).abs() < 1e-7);
    let r = comparison(&json, "gentle", "retained");
    assert_eq!(r["role"], "primary");
    close(&r["raw"]["delta"], 1.0 / 3.0);
    // CUPED, by hand: retained y = [1, 1, 0 | 1, 1], pre-period days x = [1, 0, 0 | 0, 0];
    // θ = cov(x, y) / var(x) = 0.05 / 0.2 = 1/4, so control becomes [0.8, 1.05, 0.05] and gentle
    // [1.05, 1.05]: the delta moves to 5/12, because control happened to start more active.
    close(&r["cuped"]["delta"], 5.0 / 12.0);
    assert_eq!(r["result"], "no difference");
    // One holdout user: no interval at all.
    let h = comparison(&json, "holdout", "retained");
    assert_eq!(
        (h["raw"]["low"].is_null(), h["raw"]["high"].is_null()),
        (true, true)
    );

    // 4 / 2 / 1 users against 0.5 / 0.4 / 0.1: no alarm.
    assert_eq!(json["sample_ratio"]["mismatch"], false);
    assert!(json["sample_ratio"]["p_value"].as_f64().unwrap() > 0.5);
    assert_eq!(json["sample_ratio"]["arms"][0]["users"], 4);
    let verdicts: Vec<(&str, &str)> = json["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["arm"].as_str().unwrap(), v["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        verdicts,
        [("gentle", "inconclusive"), ("holdout", "inconclusive")]
    );
    assert!(json["warnings"].as_array().unwrap().is_empty());
    assert!(json["notes"][0]
        .as_str()
        .unwrap()
        .starts_with("1 user(s) changed arms"));

    // The default text form carries the same numbers in aligned tables.
    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--until",
            UNTIL,
        ],
        &db.url,
    );
    let stdout = ok(&out);
    assert!(
        stdout.starts_with("experiment onboarding: users assigned before"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ncontrol  0.500       no      3                    1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ngentle against control (delta = gentle − control)\nmetric  "),
        "{stdout}"
    );
    assert!(stdout.contains("decision rule: ship an arm if"), "{stdout}");
}

#[tokio::test]
async fn a_sample_ratio_mismatch_warns_loudly() {
    let db = TestDb::new().await;
    // 40 / 10 against 50 / 50: chi-square 18, p ≈ 2e-5.
    let users: Vec<(String, &str)> = (0..50)
        .map(|i| {
            (
                format!("u{i:02}"),
                if i < 40 { "control" } else { "treatment" },
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|(u, a)| (u.as_str(), *a)).collect();
    assign(&db.store, "skewed", &pairs, t0()).await;
    let policies = Policies::new("srm");

    let out = report(
        &[
            "skewed",
            "--policies",
            policies.path(),
            "--until",
            UNTIL,
            "--format",
            "json",
        ],
        &db.url,
    );
    let json: Value = serde_json::from_str(&ok(&out)).unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: SAMPLE RATIO MISMATCH in experiment skewed: control 40 (expected 50.0%), treatment 10 (expected 50.0%)"),
        "{stderr}"
    );
    assert_eq!(json["sample_ratio"]["mismatch"], true);
    close(&json["sample_ratio"]["chi_square"], 18.0);
    assert!(json["sample_ratio"]["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(json["verdicts"][0]["verdict"], "do not trust (SRM)");
    assert_eq!(json["warnings"].as_array().unwrap().len(), 1);

    let out = report(
        &["skewed", "--policies", policies.path(), "--until", UNTIL],
        &db.url,
    );
    let stdout = ok(&out);
    assert!(
        stdout.starts_with(&format!(
            "{}\n!!! WARNING: SAMPLE RATIO MISMATCH",
            "!".repeat(78)
        )),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("SAMPLE RATIO MISMATCH"));
}

/// The shares that count are those of the bundle that assigned the users: the same 40 / 10
/// split is no mismatch when the version that ran gave control 0.8, whatever the working copy
/// (a pull request's bundle, here 0.5 / 0.5) now says.
#[tokio::test]
async fn arm_shares_come_from_the_policy_version_that_assigned_the_users() {
    let db = TestDb::new().await;
    let ran = serde_json::json!({
        "apiVersion": "tern/v1",
        "documents": [{
            "apiVersion": "tern/v1",
            "kind": "Experiment",
            "metadata": { "name": "skewed" },
            "spec": { "salt": "s2", "arms": [
                { "name": "control", "share": 0.8 },
                { "name": "treatment", "share": 0.2 }
            ] }
        }]
    });
    db.store
        .record_policy_activation("v-that-ran-0000", &ran, t0())
        .await
        .unwrap();
    let rows: Vec<Assignment> = (0..50)
        .map(|i| Assignment {
            experiment: "skewed".into(),
            user_id: format!("u{i:02}"),
            arm: if i < 40 { "control" } else { "treatment" }.into(),
        })
        .collect();
    db.store
        .record_assignments(&rows, "v-that-ran-0000", t0())
        .await
        .unwrap();
    let policies = Policies::new("recorded");
    let out = report(
        &[
            "skewed",
            "--policies",
            policies.path(),
            "--until",
            UNTIL,
            "--format",
            "json",
        ],
        &db.url,
    );
    let json: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(json["sample_ratio"]["mismatch"], false, "{json}");
    close(&json["sample_ratio"]["arms"][0]["expected_share"], 0.8);
    assert!(!text(&out.stderr).contains("MISMATCH"));
    let notes = json["notes"].to_string();
    assert!(
        notes.contains("arm shares are those of policy version v-that-ran-0"),
        "{notes}"
    );
}

#[tokio::test]
async fn the_markdown_report_is_tables_for_a_pull_request() {
    let db = TestDb::new().await;
    seed_onboarding(&db.store).await;
    let policies = Policies::new("markdown");
    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--until",
            UNTIL,
            "--format",
            "markdown",
            "--guardrail",
            "messages",
            "--level",
            "0.9",
        ],
        &db.url,
    );
    let md = ok(&out);
    assert!(md.starts_with("## Experiment `onboarding`\n"), "{md}");
    assert!(
        md.contains("### arms\n\n| arm | share | holdout | users |"),
        "{md}"
    );
    assert!(md.contains("| --- | ---: |"), "{md}");
    assert!(md.contains("| control | 0.500 | no | 3 | 1 |"), "{md}");
    assert!(
        md.contains("### would-be messages of holdout users (withheld): count (per user)"),
        "{md}"
    );
    assert!(md.contains("| holdout | 1 (1.000) | 1 (1.000) |"), "{md}");
    assert!(
        md.contains("### gentle against control (delta = gentle − control)"),
        "{md}"
    );
    assert!(md.contains("raw 90% interval"), "{md}");
    assert!(
        md.contains("| messages | guardrail | lower | 1.333 | 1.000 | -0.333 |"),
        "{md}"
    );
    assert!(
        md.contains("**Decision rule:** ship an arm if the CUPED 90% interval"),
        "{md}"
    );
    assert!(md.contains("no guardrail's (messages)"), "{md}");
}

#[tokio::test]
async fn an_experiment_without_users_says_so() {
    let db = TestDb::new().await;
    let policies = Policies::new("quiet");
    let out = report(
        &["quiet", "--policies", policies.path(), "--until", UNTIL],
        &db.url,
    );
    assert!(
        ok(&out).contains("no users were assigned to quiet before 2026-06-29T00:00:00Z yet"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn bad_input_is_refused_precisely() {
    let db = TestDb::new().await;
    let policies = Policies::new("bad");

    let out = report(&["nope", "--policies", policies.path()], &db.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "error: no experiment \"nope\" in {}; known experiments: onboarding, quiet, skewed",
            policies.path()
        )],
        "{stderr}"
    );

    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--control",
            "treatment",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "error: experiment \"onboarding\" has no arm \"treatment\"; its arms: control, gentle, holdout"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--format",
            "yaml",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--format"),
        "{}",
        text(&out.stderr)
    );

    let out = report(
        &[
            "onboarding",
            "--policies",
            policies.path(),
            "--primary",
            "happiness",
        ],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(2));

    let out = report(
        &["onboarding", "--policies", policies.path(), "--level", "95"],
        &db.url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--level must be between 0 and 1"));
}
