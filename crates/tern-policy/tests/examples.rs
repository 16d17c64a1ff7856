//! The example bundle in `policies/` is valid, warning-free, and uses every kind.

use tern_policy::{Bundle, Trigger, KINDS};

fn example() -> Bundle {
    match Bundle::load("../../policies") {
        Ok(b) => b,
        Err(f) => panic!("the example bundle is invalid:\n{f}"),
    }
}

#[test]
fn the_example_bundle_is_valid_and_warning_free() {
    let b = example();
    assert!(b.warnings.is_empty(), "{}", b.warnings);
    assert_eq!(b.version.len(), 64);
    println!(
        "{}",
        serde_json::to_string_pretty(&b.canonical_json()).unwrap()
    );
}

#[test]
fn the_example_bundle_uses_every_kind() {
    let b = example();
    let used: Vec<String> = b
        .documents()
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in KINDS {
        assert!(used.iter().any(|k| k == kind), "no {kind} in policies/");
    }
    assert!(b
        .generators
        .iter()
        .any(|g| matches!(g.trigger, Trigger::Event { .. })));
    assert!(b
        .generators
        .iter()
        .any(|g| matches!(g.trigger, Trigger::Schedule { .. })));
    assert!(b
        .experiments
        .iter()
        .any(|e| e.arms.iter().any(|a| a.holdout)));
    assert!(b.default_objective().is_some());
    assert!(b.default_caps().is_some());
}

#[test]
fn every_example_file_points_at_the_schema() {
    for entry in std::fs::read_dir("../../policies").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../docs/policy.schema.json\n"),
            "{} does not start with the schema comment",
            path.display()
        );
    }
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&tern_policy::schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write("../../docs/policy.schema.json", &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string("../../docs/policy.schema.json").unwrap_or_default();
    assert_eq!(
        committed, generated,
        "run with UPDATE_EXPECT=1 to regenerate docs/policy.schema.json"
    );
}
