//! The `tern` binary as an operator meets it: real processes, a real PostgreSQL, and the exact
//! lines and exit codes they produce.

use std::path::Path;
use std::process::{Command, Output};

use tern_tests::TestDb;

mod common;

use common::{tern, text};

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
        text(&first.stdout).starts_with("applied 15 migration(s)"),
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

/// Copies the example bundle into a fresh directory that the test may edit.
fn scratch_bundle(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// `tern policy watch`: good → bad → good while running; every activation is recorded in the
/// database and the rejected bundle never is.
#[tokio::test]
async fn policy_watch_activates_good_bundles_records_them_and_keeps_serving_through_bad_ones() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let db = TestDb::new().await;
    let dir = scratch_bundle("watch");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["policy", "watch", "--poll-ms", "20", "--settle-ms", "60"])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let next_event = |prefix: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {prefix:?} line"));
            if line.starts_with(prefix) {
                return line.split_whitespace().nth(1).unwrap().to_string();
            }
        }
    };
    let versions = || async {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT version FROM policy_versions ORDER BY first_activated_at")
                .fetch_all(db.store.pool())
                .await
                .unwrap();
        rows.into_iter().map(|r| r.0).collect::<Vec<_>>()
    };

    let first = next_event("active ");
    assert_eq!(versions().await, vec![first.clone()]);

    std::fs::write(dir.join("zz.yaml"), "apiVersion: tern/v1\nkind: Nope\n").unwrap();
    let rejected = next_event("rejected ");
    assert_ne!(rejected, first);

    std::fs::write(
        dir.join("zz.yaml"),
        "apiVersion: tern/v1\nkind: Category\nmetadata: { name: zz-news }\n",
    )
    .unwrap();
    let second = next_event("activated ");
    assert_ne!(second, first);
    // The activation is recorded right after it is announced.
    let mut recorded = versions().await;
    for _ in 0..100 {
        if recorded.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorded = versions().await;
    }
    assert_eq!(recorded, vec![first, second]);

    // SIGTERM ends it cleanly.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn policy_watch_refuses_to_start_on_a_broken_bundle() {
    let db = TestDb::new().await;
    let dir = scratch_bundle("watch-broken");
    std::fs::write(dir.join("zz.yaml"), "apiVersion: tern/v1\nkind: Nope\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["policy", "watch"])
        .arg(&dir)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("zz.yaml:2:7: error: unknown kind"),
        "{}",
        text(&out.stdout)
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM policy_versions")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(recorded, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

const PLANNER_USERS: &str = "crates/tern-planner/tests/fixtures/example.users.jsonl";

#[test]
fn tern_plan_writes_a_schedule_and_suppressions_as_json_lines() {
    let args = [
        "plan",
        "--policies",
        &repo("policies"),
        "--input",
        &repo(PLANNER_USERS),
        "--now",
        "2026-03-28T20:00:00Z",
        "--seed",
        "1",
    ];
    let first = tern(&args, None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let lines: Vec<serde_json::Value> = text(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["kind"] == "choice"));
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "suppression" && l["reason"].is_string()));
    for choice in lines.iter().filter(|l| l["kind"] == "choice") {
        let p = choice["propensity"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0, "{choice}");
    }
    // The same inputs and seed give the same schedule.
    assert_eq!(tern(&args, None).stdout, first.stdout);

    let mut explain = args.to_vec();
    explain.extend(["--explain", "ana"]);
    let out = tern(&explain, None);
    assert!(
        text(&out.stdout).starts_with("user ana"),
        "{}",
        text(&out.stdout)
    );
    let last = explain.len() - 1;
    explain[last] = "nobody";
    assert_one_error_line(&tern(&explain, None), "user \"nobody\" is not in");
}

#[test]
fn tern_plan_refuses_bad_input_with_its_line_number() {
    let dir = std::env::temp_dir().join(format!("tern-plan-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("users.jsonl");
    std::fs::write(
        &input,
        "{\"user_id\":\"a\",\"timezone\":\"UTC\"}\n{\"user_id\": 5}\n",
    )
    .unwrap();
    let out = tern(
        &[
            "plan",
            "--policies",
            &repo("policies"),
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_one_error_line(&out, "line 2");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tern serve` on the repository's example policies, on any free ports.
fn serve_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--policies",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(repo("policies"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn serve_without_database_url_is_refused_unless_ephemeral() {
    let args = serve_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tern(&args, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: DATABASE_URL is not set")
            && stderr.contains("--ephemeral")
            && !stderr.contains("throwaway PostgreSQL in"),
        "{stderr}"
    );

    // --ephemeral and a database are two contradicting wishes.
    let args = serve_args(&["--ephemeral"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tern(&args, Some("postgres://tern@127.0.0.1:1/tern"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: --ephemeral"), "{stderr}");

    // With --ephemeral it serves from a throwaway cluster, as before.
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(&args)
        .env_remove("DATABASE_URL")
        .env_remove("TERN_PG_BINDIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("tern serve --ephemeral printed nothing")
        .unwrap();
    terminate(&mut child);
    assert!(
        first.starts_with("serving tern.v1 on 127.0.0.1:"),
        "{first}"
    );
}

/// SIGTERM, then the exit status within 30 s.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("no exit within 30 s of SIGTERM");
}

#[tokio::test]
async fn sigterm_during_a_demo_drops_its_scratch_databases() {
    let db = TestDb::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["demo", "--users", "200", "--days", "2"])
        .env("DATABASE_URL", &db.url)
        .env_remove("TERN_PG_BINDIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("tern_demo_{}_", child.id());
    let scratch = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
        )
        .bind(&prefix)
        .fetch_all(db.store.pool())
        .await
        .unwrap()
    };
    let mut seen = Vec::new();
    for _ in 0..600 {
        seen = scratch().await;
        if !seen.is_empty() || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!seen.is_empty(), "the demo made no {prefix}* database");
    let status = terminate(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left = scratch().await;
    assert!(left.is_empty(), "left behind: {left:?} (stderr: {stderr})");
}

/// `tern plan ... | head -1` ends quietly when `head` stops reading, like any Unix tool: no
/// panic about a broken pipe.
#[test]
fn a_reader_that_goes_away_ends_a_report_quietly() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("tern-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("users.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    // Enough users that the plan is far larger than a pipe's buffer.
    for i in 0..4000 {
        writeln!(
            f,
            r#"{{"user_id":"u{i}","timezone":"UTC","opportunities":[{{"id":{i},"category":"content","priority":"normal","channels":["push","email"],"created_at":"2026-03-01T10:00:00Z","expires_at":"2026-03-03T10:00:00Z","template":"t","scores":[{{"conversion":0.3,"engagement":0.5,"retention":0.05,"reachability_loss":0.0}},{{"conversion":0.3,"engagement":0.5,"retention":0.05,"reachability_loss":0.0}}]}}]}}"#
        )
        .unwrap();
    }
    drop(f);
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["plan", "--now", "2026-03-01T12:00:00Z", "--policies"])
        .arg(&policies)
        .arg("--input")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // The reader is gone now.
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
