//! The `tern` binary as an operator meets it: real processes, a real PostgreSQL, and the exact
//! lines and exit codes they produce.

use std::path::Path;
use std::process::{Command, Output};

use tern_tests::TestDb;

fn tern(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TERN_PG_BINDIR");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run tern")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Errors reach the operator as exactly one `error: ...` line, never a panic or a backtrace.
fn assert_one_error_line(out: &Output, expected: &str) {
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr: {stderr}");
    assert!(
        errors[0].contains(expected),
        "{:?} should contain {expected:?}",
        errors[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date_and_status_lists_it() {
    let db = TestDb::empty().await;
    let status = tern(&["migrate", "--status"], Some(&db.url));
    assert_eq!(
        status.status.code(),
        Some(1),
        "pending migrations make --status exit 1"
    );
    assert!(text(&status.stdout).contains("pending"));

    let first = tern(&["migrate"], Some(&db.url));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).starts_with("applied 1 migration(s)"),
        "{}",
        text(&first.stdout)
    );
    let second = tern(&["migrate"], Some(&db.url));
    assert!(text(&second.stdout).contains("up to date"));

    let status = tern(&["migrate", "--status", "--json"], Some(&db.url));
    assert!(status.status.success());
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json[0]["state"], "applied");
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_one_line() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'future', true, '\\x00', 1)",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    let out = tern(&["migrate"], Some(&db.url));
    assert_one_error_line(
        &out,
        "the database schema is at version 99990101000000, newer than this binary's",
    );
}

#[tokio::test]
async fn a_half_applied_migration_is_refused_with_one_line() {
    let db = TestDb::new().await;
    sqlx::query("UPDATE _sqlx_migrations SET success = false")
        .execute(db.store.pool())
        .await
        .unwrap();
    assert_one_error_line(&tern(&["migrate"], Some(&db.url)), "half-applied");
}

#[test]
fn an_unreachable_server_is_one_line() {
    let out = tern(&["migrate"], Some("postgres://tern@127.0.0.1:1/tern"));
    assert_one_error_line(&out, "database unavailable");
    assert!(text(&out.stderr).contains("Connection refused"));
}

#[test]
fn a_malformed_database_url_is_one_line() {
    assert_one_error_line(
        &tern(&["migrate"], Some("not a url")),
        "invalid DATABASE_URL",
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = tern(&["migrate", "--frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--frobnicate"));
    assert_eq!(tern(&["no-such-command"], None).status.code(), Some(2));
}

#[test]
fn without_database_url_a_private_postgres_is_used_and_removed() {
    let out = tern(&["migrate"], None);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        text(&out.stdout).starts_with("applied"),
        "a fresh cluster needs every migration"
    );
    let dir = stderr
        .split("throwaway PostgreSQL in ")
        .nth(1)
        .and_then(|rest| rest.split(" (removed on exit)").next())
        .unwrap_or_else(|| panic!("no cluster path in {stderr:?}"));
    assert!(!Path::new(dir).exists(), "{dir} should be removed on exit");
}

#[test]
fn a_missing_postgres_installation_is_one_sentence_on_how_to_install_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["migrate"])
        .env_remove("DATABASE_URL")
        .env("TERN_PG_BINDIR", "/nonexistent/bin")
        .output()
        .unwrap();
    assert_one_error_line(&out, "apt-get install postgresql");
}

/// The repository's example bundle and the checker's broken fixtures.
fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn policy_check_accepts_the_example_bundle() {
    let out = tern(&["policy", "check", &repo("policies")], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valid, version"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn policy_check_reports_every_mistake_with_its_position_and_exits_1() {
    let dir = repo("crates/tern-policy/tests/fixtures/broken/unknown-fields");
    let out = tern(&["policy", "check", &dir], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(errors.len() > 1, "every error at once: {stdout}");
    for line in errors {
        // path:line:col: error: message
        let mut parts = line.splitn(4, ':');
        let (path, row, col) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(path.ends_with(".yaml"), "{line}");
        assert!(
            row.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
            "{line}"
        );
    }

    let github = text(&tern(&["policy", "check", "--format", "github", &dir], None).stdout);
    assert!(
        github.lines().any(|l| l.starts_with("::error file=")),
        "{github}"
    );
    let json = tern(&["policy", "check", "--format", "json", &dir], None);
    let findings: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        findings.as_array().is_some_and(|a| !a.is_empty()),
        "{findings}"
    );
}

#[test]
fn policy_check_of_a_missing_directory_or_with_bad_arguments_exits_2() {
    assert_eq!(
        tern(&["policy", "check", "/nonexistent/policies"], None)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        tern(
            &["policy", "check", "--format", "xml", &repo("policies")],
            None
        )
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn policy_schema_is_json_and_diff_of_a_bundle_with_itself_is_empty() {
    let schema = tern(&["policy", "schema"], None);
    assert!(schema.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert!(schema.get("$schema").is_some(), "{schema}");
    let same = tern(
        &["policy", "diff", &repo("policies"), &repo("policies")],
        None,
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
}
