//! The loader never panics, whatever the bytes: arbitrary bytes, YAML-ish text built from the
//! language's own vocabulary, and the example files truncated or with bytes flipped. The
//! `fuzz/` folder has a cargo-fuzz target for longer runs.

use std::path::Path;

use proptest::prelude::*;
use tern_policy::{Bundle, SourceFile};

fn load(files: Vec<(String, Vec<u8>)>) -> Result<Bundle, tern_policy::Findings> {
    let files: Vec<SourceFile> = files
        .into_iter()
        .map(|(name, bytes)| SourceFile {
            path: Path::new("fuzz").join(name),
            bytes,
        })
        .collect();
    Bundle::from_files(Path::new("fuzz"), &files)
}

fn examples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("../../policies").expect("policies/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, std::fs::read(&path).expect("read")));
    }
    out.sort();
    out
}

/// Pieces of the policy language and of YAML syntax, so that random text gets deep into the
/// decoder instead of failing at the first byte.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion: tern/v1\n".to_string()),
        Just("kind: ".to_string()),
        prop::sample::select(vec![
            "Channel",
            "Caps",
            "Objective",
            "Generator",
            "Experiment",
            "Replan",
            "Category",
            "Priority"
        ])
        .prop_map(String::from),
        Just("\nmetadata: { name: ".to_string()),
        Just("spec:\n  ".to_string()),
        prop::sample::select(vec![
            "quietHours",
            "budget",
            "rules",
            "exempt",
            "bypass",
            "weights",
            "on",
            "when",
            "schedule",
            "segment",
            "message",
            "channels",
            "ttl",
            "arms",
            "cron",
            "horizon",
            "exploration",
            "max",
            "per",
            "minGap",
            "share",
            "holdout",
            "signals",
            "dedupeKey",
            "timezone",
        ])
        .prop_map(|k| format!("{k}: ")),
        prop::sample::select(vec![
            "1d",
            "0s",
            "4h",
            "-1",
            "1e999",
            "0.5",
            "true",
            "\"22:00\"",
            "Europe/London",
            "\"0 0 * * * *\"",
            "\"event.x > \"",
            "[push, email]",
            "{ max: 2, per: 1d }",
            "- { name: a, share: 0.5 }",
            "&a",
            "*a",
            "!!str",
            "|\n    x",
            "? ",
            "'",
            "\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            "-",
            "---\n",
            "...\n",
            "\n",
            "  ",
            "\t",
            "#",
            "%YAML 1.2\n",
            "\u{feff}",
            "é",
            "\u{0}",
        ])
        .prop_map(String::from),
        "[a-z_]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = load(vec![("a.yaml".into(), bytes)]);
    }

    #[test]
    fn yaml_ish_text_never_panics(tokens in prop::collection::vec(token(), 0..120)) {
        let _ = load(vec![("a.yaml".into(), tokens.concat().into_bytes())]);
    }

    #[test]
    fn damaged_examples_never_panic(
        which in 0usize..8,
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut files = examples();
        let i = which % files.len();
        let bytes = &mut files[i].1;
        for (at, b) in flips {
            let at = at.index(bytes.len());
            bytes[at] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        let _ = load(files);
    }
}

/// Pieces of CEL, so that random expressions reach the parser's deeper paths.
fn cel_token() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "user",
        "event",
        "x",
        ".",
        "size(",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        ",",
        "?",
        "!",
        "-",
        "+",
        "*",
        "/",
        "%",
        "&&",
        "||",
        "==",
        "!=",
        "<",
        ">=",
        " in ",
        "'s'",
        "\"",
        "'",
        "1",
        "1.5",
        "1u",
        "b'x'",
        "r'x'",
        "true",
        "null",
        ".exists(",
        ".all(",
        ".map(",
        ".filter(",
        "has(",
        "int(",
        "timestamp(",
        "\\",
        "`",
        "@",
        "é",
        " ",
    ])
    .prop_map(String::from)
}

fn channel_with(expr: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(expr).unwrap_or_default();
    format!(
        "apiVersion: tern/v1\nkind: Channel\nmetadata: {{ name: c }}\nspec:\n  reachableWhen: {quoted}\n"
    )
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_cel_never_panics(tokens in prop::collection::vec(cel_token(), 0..200)) {
        let _ = load(vec![("a.yaml".into(), channel_with(&tokens.concat()))]);
    }
}

#[test]
fn pathological_inputs_are_findings() {
    for text in [
        "[".repeat(200_000),
        "{a: ".repeat(50_000),
        "- ".repeat(10_000) + "x",
        "a: &x [1]\nb: *x\n".to_string(),
        "\u{feff}apiVersion: tern/v1".to_string(),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "(".repeat(10_000)),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "!".repeat(3_000) + "true"),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "a.".repeat(1_500) + "b"),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "(".repeat(4_000)),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}1{}\"\n", "(".repeat(2_000), ")".repeat(2_000)),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "-".repeat(4_000) + "1"),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "[".repeat(4_000)),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "1 + ".repeat(1_000) + "1"),
        format!("apiVersion: tern/v1\nkind: Channel\nmetadata: {{name: g}}\nspec:\n  reachableWhen: \"{}\"\n", "x.exists(y, ".repeat(300)),
    ] {
        // No default objective, so every one of these bundles is invalid; the point is that
        // loading returns.
        let result = load(vec![("a.yaml".into(), text.into_bytes())]);
        assert!(result.is_err());
    }
}
