//! Snapshot tests: every folder under `tests/fixtures/broken/` is a bundle, and its
//! `expected.txt` holds the exact findings `tern policy check` prints for it (paths relative to
//! the folder; a last line `valid` when the bundle loads despite warnings).
//!
//! Run with `UPDATE_EXPECT=1` to rewrite the snapshots after an intended change, then review
//! the diff.

use std::fs;
use std::path::Path;

use tern_policy::Bundle;

fn render(case: &str) -> String {
    let dir = format!("tests/fixtures/broken/{case}");
    let text = match Bundle::load(&dir) {
        Ok(b) => format!("{}valid\n", b.warnings.to_text()),
        Err(findings) => findings.to_text(),
    };
    text.replace(&format!("{dir}/"), "").replace(&dir, ".")
}

#[test]
fn broken_bundles_report_exactly_the_expected_findings() {
    let root = Path::new("tests/fixtures/broken");
    let mut cases: Vec<String> = fs::read_dir(root)
        .expect("fixtures folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "fixtures are missing: {cases:?}");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(case);
        let path = root.join(case).join("expected.txt");
        if update {
            fs::write(&path, &actual).expect("write expected.txt");
            continue;
        }
        let expected = fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {case}: expected\n{expected}--- {case}: actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(run with UPDATE_EXPECT=1 to accept)",
        failures.join("\n")
    );
}

#[test]
fn every_broken_bundle_except_the_warning_case_is_rejected() {
    for case in fs::read_dir("tests/fixtures/broken").expect("fixtures") {
        let case = case.expect("entry");
        let name = case.file_name().to_string_lossy().into_owned();
        let result = Bundle::load(case.path());
        assert_eq!(result.is_ok(), name == "warnings-only", "{name}");
    }
}
