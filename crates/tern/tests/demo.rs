//! `tern demo` end to end, small: the real binary drives a real daemon over gRPC on a simulated
//! clock against real PostgreSQL, trains real models, and the loop must close.

mod common;

use common::{ok, tern, text};
use serde_json::Value;
use tern_tests::TestDb;

#[tokio::test]
async fn a_small_demo_closes_the_loop_and_keeps_every_cap() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("demo.json");
    let html = dir.join("report.html");
    // The run's database is kept, to run the analysis commands on a real loop's history.
    let kept = format!("{}_kept", db.name);
    let kept_url = db
        .url
        .replace(&format!("/{}", db.name), &format!("/{kept}"));
    let out = tern(
        &[
            "demo",
            "--keep-database",
            &kept,
            "--users",
            "1000",
            "--days",
            "5",
            "--json",
            json.to_str().unwrap(),
            "--report",
            html.to_str().unwrap(),
        ],
        Some(&db.url),
    );
    let stdout = ok(&out);
    // A line per simulated day, then the summary table.
    for day in [
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
        "2026-03-06",
    ] {
        assert!(stdout.contains(&format!("  {day}: ")), "{stdout}");
    }
    assert!(stdout.contains("| tern | "), "{stdout}");

    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let run = &results[0];
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    let sum = |v: &Value| v.as_object().unwrap().values().map(n).sum::<u64>();

    // Every submitted opportunity is accounted for: sent, expired (not chosen before its TTL,
    // for a reason the plans counted), or still open when the run ended.
    let states = run["opportunity_states"].as_object().unwrap();
    assert!(
        states
            .keys()
            .all(|k| ["sent", "expired", "open", "cancelled", "withheld"].contains(&k.as_str())),
        "{states:?}"
    );
    // The example's holdout users were planned like everyone else, and what the policy would
    // have sent them was recorded, not sent.
    assert!(n(&states["withheld"]) > 0, "{states:?}");
    assert!(n(&run["submitted"]) > 5_000, "{run}");
    // Password resets went in as events, and the policy's generator made messages of them.
    assert!(n(&run["events"]) > 0, "{run}");
    assert_eq!(
        sum(&run["opportunity_states"]),
        n(&run["submitted"]),
        "{states:?}"
    );
    // What tern marked sent is what the population received.
    assert_eq!(n(&states["sent"]), n(&run["messages"]), "{run}");
    assert!(n(&run["messages"]) > 1_000, "{run}");
    let suppressed = run["suppressed"].as_object().unwrap();
    assert!(
        suppressed.contains_key("cap") && suppressed.contains_key("below_min_value"),
        "{suppressed:?}"
    );

    // Every outcome reported was stored, and there were some of each common kind.
    assert_eq!(
        sum(&run["outcomes_stored"]),
        n(&run["outcomes_reported"]),
        "{run}"
    );
    for kind in ["opened", "clicked"] {
        assert!(
            n(&run["outcomes_stored"][kind]) > 0,
            "no {kind} outcomes: {run}"
        );
    }

    // The nightly training ran and a model was promoted.
    assert!(n(&run["models_trained"]) >= 1, "{run}");
    assert!(
        run["active_model"]
            .as_str()
            .is_some_and(|v| v.starts_with("m-")),
        "{run}"
    );

    // No cap was exceeded, by the simulator's own log of what each user received.
    assert_eq!(run["cap_violations"], serde_json::json!([]), "{run}");

    // The example withholds 5% of would-be sends at random; the model learned from them what
    // happens without a send, and its uplift was scored against the simulator's truth in both
    // value modes and in the activity head's diagnostic reading. Five days are fewer than the
    // value function's horizon (7 days per user), so there is no long-term reading yet.
    assert!(suppressed.contains_key("withheld"), "{suppressed:?}");
    let uplift = run["uplift"].as_array().unwrap();
    let modes: Vec<&str> = uplift.iter().map(|u| u["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["outcome", "incremental", "activity"], "{uplift:?}");
    for u in uplift {
        assert!(n(&u["candidates"]) > 100, "{u}");
        for part in ["retention", "value"] {
            for score in ["spearman", "uplift_auc"] {
                let x = u[part][score].as_f64().unwrap();
                assert!((-1.0..=1.0).contains(&x), "{u}");
            }
        }
    }

    // Every password reset that could reach its user (holdout users included) was sent, at
    // once: none expired unsent. Only users with no verified email could not get theirs.
    let t = &run["transactional"];
    assert!(n(&t["submitted"]) > 10, "{t}");
    assert_eq!(n(&t["expired_unsent"]), 0, "{t}");
    assert_eq!(
        n(&t["sent"]),
        n(&t["submitted"]) - n(&t["unreachable"]) - n(&t["open"]),
        "{t}"
    );
    assert!(n(&t["unreachable"]) * 3 < n(&t["submitted"]), "{t}");
    assert_eq!(t["latency_p99_secs"], serde_json::json!(0), "{t}");
    assert!(stdout.contains("| tern | 7 | "), "{stdout}");

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("Retention"),
        "{page}"
    );

    // The analysis commands on the kept history: an experiment report over the example's
    // experiment (holdout included), and an off-policy estimate with the trained model.
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let until = "2026-03-07T00:00:00Z";
    let report_of = |experiment: &str| -> Value {
        let out = ok(&tern(
            &[
                "experiment",
                "report",
                experiment,
                "--policies",
                policies,
                "--until",
                until,
                "--format",
                "json",
            ],
            Some(&kept_url),
        ));
        serde_json::from_str(&out).unwrap()
    };
    let report = report_of("retention-weights");
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 3, "{report}");
    assert!(arms.iter().all(|a| n(&a["users"]) > 0), "{report}");
    let holdout = arms.iter().find(|a| a["holdout"] == true).unwrap();
    assert!(n(&holdout["would_be_messages"]["count"]) > 0, "{holdout}");
    let control = arms.iter().find(|a| a["name"] == "control").unwrap();
    assert!(n(&control["messages"]["count"]) > 0, "{control}");

    // The experiment of the long-term mode against the default objective.
    let report = report_of("long-term-value");
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2, "{report}");
    for arm in arms {
        assert!(n(&arm["users"]) > 0, "{report}");
        assert!(n(&arm["messages"]["count"]) > 0, "{report}");
    }

    let evaluation = ok(&tern(
        &[
            "evaluate",
            "--policies",
            policies,
            "--until",
            until,
            "--days",
            "5",
            "--json",
        ],
        Some(&kept_url),
    ));
    let evaluation: Value = serde_json::from_str(&evaluation).unwrap();
    assert!(n(&evaluation["decisions"]) > 1_000, "{evaluation}");
    assert!(
        evaluation["direct_method"]
            .as_str()
            .is_some_and(|m| m.starts_with("model m-")),
        "{evaluation}"
    );
    let engagement = evaluation["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["objective"] == "engagement")
        .unwrap();
    assert!(n(&engagement["rows"]) > 1_000, "{engagement}");

    // The long-term mode, estimated off-policy on the same history: the example with its
    // default objective valuing sends over time, against the example as it is.
    let incremental = dir.join("incremental");
    std::fs::create_dir_all(&incremental).unwrap();
    for entry in std::fs::read_dir(policies).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path.file_name().is_some_and(|n| n == "objectives.yaml") {
                text = text.replacen(
                    "name: default\nspec:\n",
                    "name: default\nspec:\n  value: longTerm\n",
                    1,
                );
                assert!(text.contains("value: longTerm"), "{text}");
            }
            std::fs::write(incremental.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let simulated = ok(&tern(
        &[
            "policy",
            "simulate",
            "--against",
            policies,
            incremental.to_str().unwrap(),
            "--until",
            until,
            "--days",
            "5",
            "--format",
            "json",
        ],
        Some(&kept_url),
    ));
    let simulated: Value = serde_json::from_str(&simulated).unwrap();
    assert_ne!(
        simulated["current"]["version"], simulated["new"]["version"],
        "{simulated}"
    );
    assert!(n(&simulated["decisions"]) > 1_000, "{simulated}");
    assert!(
        simulated.to_string().contains("\"change\""),
        "an estimated change per objective: {simulated}"
    );
    db.store.drop_database(&kept).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_arguments_are_checked_before_anything_starts() {
    let out = tern(&["demo", "--users", "5"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = tern(&["demo", "--arms", "tern,psychic"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("psychic"),
        "{}",
        text(&out.stderr)
    );
    let out = tern(&["demo", "--start", "2026-03-02T05:00:00Z"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--start must be a UTC midnight"),
        "{}",
        text(&out.stderr)
    );
}

/// The same seed and arguments give the same run: two small demos write the same JSON, apart
/// from the seconds they took.
#[tokio::test]
async fn the_same_seed_gives_the_same_run() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-demo-repro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str| -> Value {
        let path = dir.join(name);
        ok(&tern(
            &[
                "demo",
                "--users",
                "300",
                "--days",
                "3",
                "--quiet",
                "--json",
                path.to_str().unwrap(),
            ],
            Some(&db.url),
        ));
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for arm in v.as_array_mut().unwrap() {
            arm.as_object_mut().unwrap().remove("seconds");
        }
        v
    };
    let (a, b) = (run("a.json"), run("b.json"));
    assert!(a[0]["messages"].as_u64().is_some_and(|m| m > 0), "{a}");
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The floor and the ceiling: `none` sends only what must go out, and `oracle`, which reads the
/// simulator's truth, sends under the same caps and quiet hours as every other arm.
#[tokio::test]
async fn the_floor_sends_only_what_must_go_and_the_ceiling_keeps_the_caps() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-demo-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bounds.json");
    ok(&tern(
        &[
            "demo",
            "--users",
            "400",
            "--days",
            "3",
            "--quiet",
            "--arms",
            "none,fcfs,oracle",
            "--json",
            json.to_str().unwrap(),
        ],
        Some(&db.url),
    ));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let arm = |name: &str| {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["arm"] == name)
            .unwrap_or_else(|| panic!("no {name} arm in {results}"))
            .clone()
    };
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    let (none, fcfs, oracle) = (arm("none"), arm("fcfs"), arm("oracle"));
    // The floor: password resets only, every one that could reach its user.
    assert_eq!(
        n(&none["messages"]),
        n(&none["transactional"]["sent"]),
        "{none}"
    );
    assert!(n(&none["transactional"]["sent"]) > 0, "{none}");
    assert_eq!(n(&none["transactional"]["expired_unsent"]), 0, "{none}");
    // The ceiling sends by value, so less than first-come-first-served, and within the caps.
    assert!(n(&oracle["messages"]) > n(&none["messages"]), "{oracle}");
    assert!(
        n(&oracle["messages"]) < n(&fcfs["messages"]),
        "{oracle} {fcfs}"
    );
    for r in [&none, &fcfs, &oracle] {
        assert_eq!(r["cap_violations"], serde_json::json!([]), "{r}");
        assert_eq!(n(&r["transactional"]["expired_unsent"]), 0, "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
