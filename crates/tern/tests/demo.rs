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
    let out = tern(
        &[
            "demo",
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
            .all(|k| ["sent", "expired", "open", "cancelled"].contains(&k.as_str())),
        "{states:?}"
    );
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

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("Retention"),
        "{page}"
    );
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
