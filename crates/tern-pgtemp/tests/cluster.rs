//! End-to-end tests of the temporary cluster with real PostgreSQL processes. They need the
//! PostgreSQL server binaries installed, just as tern's own test suite does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tern_pgtemp::{Options, PgTempError, TempCluster};

/// Set in the environment of the re-executed test binary to make `child_holds_cluster` act.
const CHILD_ENV: &str = "TERN_PGTEMP_TEST_CHILD";

/// Marks the line on which the child reports its cluster's directory.
const ROOT_MARKER: &str = "TERN_PGTEMP_ROOT=";

/// Runs `select 1` through `psql` from the cluster's own bindir and returns what it printed.
fn select_one(cluster: &TempCluster) -> String {
    let output = Command::new(cluster.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(cluster.socket_dir())
        .args([
            "-p", "5432", "-U", "tern", "-d", "postgres", "-c", "select 1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("psql should run");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn wait_until_gone(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while dir.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn start_serves_connections_and_stop_removes_everything() {
    let started = Instant::now();
    let mut cluster = TempCluster::start().expect("the cluster should start");
    eprintln!("start took {:?}", started.elapsed());

    let root = cluster.root_dir().to_path_buf();
    assert!(cluster.socket_dir().join(".s.PGSQL.5432").exists());
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    assert_eq!(select_one(&cluster), "1");
    assert_eq!(
        cluster.url("tern_test"),
        format!(
            "postgres://tern@localhost/tern_test?host={}",
            cluster.socket_dir().display()
        )
    );

    let stopping = Instant::now();
    cluster.stop();
    eprintln!("stop took {:?}", stopping.elapsed());
    assert!(!root.exists(), "{} should be removed", root.display());
    // Stopping again (and the drop that follows) must be harmless.
    cluster.stop();
}

/// Not a test of its own: `cleanup_after_the_owner_is_killed` runs the test binary again with
/// `CHILD_ENV` set, and then this starts a cluster, reports where it lives and dies without
/// running any destructor.
#[test]
fn child_holds_cluster() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = TempCluster::start().expect("the cluster should start in the child");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ROOT_MARKER}{}", cluster.root_dir().display()).unwrap();
    stdout.flush().unwrap();
    std::process::abort();
}

#[test]
fn cleanup_after_the_owner_is_killed() {
    let exe = std::env::current_exe().expect("the test binary should know its path");
    let output = Command::new(exe)
        .args([
            "--exact",
            "child_holds_cluster",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("the child test binary should run");
    assert!(!output.status.success(), "the child should have aborted");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let root = stdout
        .lines()
        // libtest prints the test's name on the same line, before the marker.
        .find_map(|line| line.split_once(ROOT_MARKER).map(|(_, root)| root))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "the child reported no cluster; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(
        wait_until_gone(&root, Duration::from_secs(15)),
        "{} should be removed after its owner died",
        root.display()
    );
}

#[test]
fn two_clusters_run_side_by_side() {
    let first = TempCluster::start().expect("the first cluster should start");
    let second = TempCluster::start().expect("the second cluster should start");
    assert_ne!(first.root_dir(), second.root_dir());
    assert_ne!(first.url("db"), second.url("db"));
    assert_eq!(select_one(&first), "1");
    assert_eq!(select_one(&second), "1");

    let roots = [
        first.root_dir().to_path_buf(),
        second.root_dir().to_path_buf(),
    ];
    drop(first);
    drop(second);
    for root in roots {
        assert!(
            !root.exists(),
            "{} should be removed on drop",
            root.display()
        );
    }
}

#[test]
fn an_empty_bindir_reports_how_to_install_postgres() {
    let empty = std::env::temp_dir().join(format!("tern-pgtemp-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let result = TempCluster::start_with(Options {
        bindir: Some(empty.clone()),
    });
    std::fs::remove_dir_all(&empty).unwrap();

    let error = result.expect_err("an empty bindir cannot start a cluster");
    assert!(
        matches!(error, PgTempError::NotInstalled { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
}
