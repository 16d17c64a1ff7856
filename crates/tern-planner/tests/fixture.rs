//! The worked example of `docs/planner.md`, checked exactly: the fixture's input, planned at the
//! documented instant and seed, must produce the snapshot byte for byte. After an intended change,
//! regenerate the snapshots with `TERN_UPDATE_SNAPSHOTS=1 cargo test -p tern-planner --test fixture`
//! and review the diff (and update the docs to match).

mod common;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tern_planner::{explain, jsonl, InlineScores, Planner, PlannerConfig};

const NOW: &str = "2026-03-28T20:00:00Z";
const SEED: u64 = 1;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn snapshot(name: &str, actual: &str) {
    let path = fixture(name);
    if std::env::var_os("TERN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from the snapshot; rerun with TERN_UPDATE_SNAPSHOTS=1 if the change is intended\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

#[test]
fn the_worked_example_plans_exactly_as_documented() {
    let config: PlannerConfig =
        serde_json::from_str(&std::fs::read_to_string(fixture("example.config.json")).unwrap())
            .unwrap();
    let file = std::fs::File::open(fixture("example.users.jsonl")).unwrap();
    let users = jsonl::read_users(std::io::BufReader::new(file)).unwrap();
    let planner = Planner::new(config.clone()).unwrap();
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let plan = planner.plan(&users, now, SEED, &InlineScores).unwrap();
    common::check(&config, &users, &plan, now).unwrap();

    let mut out = Vec::new();
    jsonl::write_plan(&planner, &plan, &mut out).unwrap();
    snapshot("example.plan.jsonl", &String::from_utf8(out).unwrap());

    let mut text = String::new();
    for u in &users {
        text.push_str(&explain(&planner, &plan, u).unwrap());
    }
    snapshot("example.explain.txt", &text);
    snapshot(
        "example.stats.json",
        &(serde_json::to_string_pretty(&plan.stats).unwrap() + "\n"),
    );
}

#[test]
fn malformed_input_lines_are_reported_with_their_line_number() {
    let input = "{\"user_id\":\"a\",\"timezone\":\"UTC\"}\n\n# a comment\n{\"user_id\":\"b\"}\n";
    let err = jsonl::read_users(input.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("line 4:"), "{err}");
}
