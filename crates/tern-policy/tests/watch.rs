//! Hot reload: good → bad → good, editors' rename-save, deleted files, half-written files and
//! the Kubernetes ConfigMap symlink swap. Small intervals keep the tests fast; every wait has a
//! generous deadline so that a loaded machine slows the tests down rather than failing them.

mod common;

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use tern_policy::{Bundle, WatchEvent, WatchOptions, Watcher};

const FAST: WatchOptions = WatchOptions {
    poll_interval: Duration::from_millis(10),
    settle: Duration::from_millis(40),
};

const DEADLINE: Duration = Duration::from_secs(20);

fn version_of_dir(dir: &Path) -> String {
    match Bundle::load(dir) {
        Ok(b) => b.version,
        Err(f) => panic!("{f}"),
    }
}

/// Waits for the next event, failing the test after [`DEADLINE`].
fn next(rx: &Receiver<WatchEvent>) -> WatchEvent {
    rx.recv_timeout(DEADLINE).expect("no watch event in time")
}

fn activated(rx: &Receiver<WatchEvent>) -> String {
    match next(rx) {
        WatchEvent::Activated(b) => b.version.clone(),
        WatchEvent::Rejected(r) => panic!("rejected: {}", r.findings),
    }
}

fn rejected(rx: &Receiver<WatchEvent>) -> tern_policy::Rejected {
    match next(rx) {
        WatchEvent::Rejected(r) => r,
        WatchEvent::Activated(b) => panic!("activated {}", b.version),
    }
}

#[test]
fn a_bad_bundle_never_replaces_the_good_one_and_the_next_good_one_activates() {
    let dir = good_bundle("gbg");
    let v1 = version_of_dir(dir.path());
    let w = Watcher::start(dir.path(), FAST).expect("start");
    let rx = w.subscribe();
    assert_eq!(w.active().version, v1);

    // Bad: a generator names a channel that does not exist.
    dir.write(
        "generators.yaml",
        &GENERATOR.replace("[push, email]", "[push, pager]"),
    );
    let r = rejected(&rx);
    assert!(
        r.findings.to_text().contains("unknown Channel `pager`"),
        "{}",
        r.findings
    );
    assert_eq!(w.active().version, v1, "the bad bundle must not activate");
    let s = w.status();
    assert_eq!(
        (s.active_version.as_str(), s.reloads, s.failures),
        (v1.as_str(), 0, 1)
    );
    assert_eq!(
        s.last_error.as_ref().map(|e| e.version.clone()),
        Some(r.version.clone())
    );
    assert_ne!(r.version, v1);

    // Good again, and different.
    dir.write(
        "generators.yaml",
        &GENERATOR.replace("ttl: 48h", "ttl: 24h"),
    );
    let v2 = activated(&rx);
    assert_ne!(v2, v1);
    assert_eq!(v2, version_of_dir(dir.path()));
    assert_eq!(w.active().version, v2);
    let s = w.status();
    assert_eq!((s.reloads, s.failures), (1, 1));
    assert!(s.last_error.is_none());
    assert!(w.is_running());
    w.stop();
}

#[test]
fn start_refuses_a_bad_bundle() {
    let dir = good_bundle("refuse");
    dir.write("objective.yaml", "apiVersion: tern/v1\nkind: Objective\n");
    let err = Watcher::start(dir.path(), FAST).unwrap_err();
    assert!(err.has_errors());
}

#[test]
fn save_by_rename_activates_the_new_content() {
    let dir = good_bundle("rename");
    let w = Watcher::start(dir.path(), FAST).expect("start");
    let rx = w.subscribe();
    // What vim and most editors do: write a hidden temporary file, then rename it over.
    dir.write(
        ".replan.yaml.swp",
        &REPLAN.replace("horizon: 1d", "horizon: 2d"),
    );
    std::fs::rename(
        dir.path().join(".replan.yaml.swp"),
        dir.path().join("replan.yaml"),
    )
    .unwrap();
    let v = activated(&rx);
    assert_eq!(v, version_of_dir(dir.path()));
    assert_eq!(w.active().replans[0].horizon, chrono::TimeDelta::days(2));
}

#[test]
fn deleting_a_file_is_a_change_like_any_other() {
    let dir = good_bundle("delete");
    let w = Watcher::start(dir.path(), FAST).expect("start");
    let rx = w.subscribe();
    let v1 = w.active().version.clone();

    // Deleting the replan leaves a valid, smaller bundle.
    dir.remove("replan.yaml");
    let v2 = activated(&rx);
    assert_ne!(v2, v1);
    assert!(w.active().replans.is_empty());

    // Deleting the channels breaks the generator: rejected, v2 keeps serving.
    dir.remove("channels.yaml");
    let r = rejected(&rx);
    assert!(
        r.findings.to_text().contains("unknown Channel"),
        "{}",
        r.findings
    );
    assert_eq!(w.active().version, v2);

    // Deleting everything is rejected too.
    for f in ["objective.yaml", "generators.yaml"] {
        dir.remove(f);
    }
    let r = rejected(&rx);
    assert!(
        r.findings.to_text().contains("no policy files"),
        "{}",
        r.findings
    );
    assert_eq!(w.active().version, v2);
}

#[test]
fn a_file_written_slowly_is_loaded_only_once_complete() {
    let dir = good_bundle("slow");
    let options = WatchOptions {
        poll_interval: Duration::from_millis(10),
        settle: Duration::from_millis(500),
    };
    let w = Watcher::start(dir.path(), options).expect("start");
    let rx = w.subscribe();
    // Two documents, written a few bytes at a time: a prefix that ends after the first
    // document would be a valid but wrong bundle, which settling must not activate.
    let full = format!(
        "{REPLAN}---\n{}",
        REPLAN
            .replace("hourly", "daily")
            .replace("0 0 * * * *", "0 0 3 * * *")
    );
    let path = dir.path().join("replan.yaml");
    std::fs::write(&path, "").unwrap();
    let started = Instant::now();
    for chunk in full.as_bytes().chunks(16) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(chunk).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(5));
    }
    let writing = started.elapsed();
    let v = activated(&rx);
    assert_eq!(v, version_of_dir(dir.path()));
    assert_eq!(w.active().replans.len(), 2);
    // If the machine stalled for longer than `settle` mid-write, an intermediate state may
    // legitimately have been seen; only assert "no intermediate event" when it did not.
    if writing < Duration::from_millis(400) {
        assert!(rx.try_recv().is_err(), "unexpected extra event");
        assert_eq!(w.status().failures, 0);
    }
}

#[test]
fn a_half_written_file_is_rejected_then_the_complete_one_activates() {
    let dir = good_bundle("half");
    let w = Watcher::start(dir.path(), FAST).expect("start");
    let rx = w.subscribe();
    let v1 = w.active().version.clone();
    // A writer that stalls mid-file for longer than `settle`.
    let text = GENERATOR.replace("ttl: 48h", "ttl: 12h");
    dir.write("generators.yaml", &text[..text.len() / 2]);
    let r = rejected(&rx);
    assert!(r.findings.has_errors());
    assert_eq!(w.active().version, v1);
    dir.write("generators.yaml", &text);
    let v2 = activated(&rx);
    assert_eq!(v2, version_of_dir(dir.path()));
}

#[test]
fn a_configmap_symlink_swap_activates_the_new_data_atomically() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("configmap-swap");
    let root = dir.path();
    let mount = |stamp: &str, replan: &str| {
        let data = root.join(stamp);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("channels.yaml"), CHANNELS).unwrap();
        std::fs::write(data.join("objective.yaml"), OBJECTIVE).unwrap();
        std::fs::write(data.join("replan.yaml"), replan).unwrap();
    };
    mount("..2026_11_25_10_00_00.1", REPLAN);
    symlink("..2026_11_25_10_00_00.1", root.join("..data")).unwrap();
    for f in ["channels.yaml", "objective.yaml", "replan.yaml"] {
        symlink(format!("..data/{f}"), root.join(f)).unwrap();
    }
    let w = Watcher::start(root, FAST).expect("start");
    let rx = w.subscribe();
    let v1 = w.active().version.clone();

    // The kubelet's update: a new timestamped directory, a temporary link to it renamed over
    // `..data` (atomic), then the old directory removed.
    mount(
        "..2026_11_25_10_05_00.2",
        &REPLAN.replace("horizon: 1d", "horizon: 3d"),
    );
    symlink("..2026_11_25_10_05_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_25_10_00_00.1")).unwrap();
    let v2 = activated(&rx);
    assert_ne!(v2, v1);
    assert_eq!(w.active().replans[0].horizon, chrono::TimeDelta::days(3));
    assert_eq!(w.active().files.len(), 3);

    // A broken update through the same mechanism is rejected.
    mount("..2026_11_25_10_10_00.3", "apiVersion: tern/v1\nkind: Replan\nmetadata: { name: hourly }\nspec: { cron: nope, horizon: 1d }\n");
    symlink("..2026_11_25_10_10_00.3", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let r = rejected(&rx);
    assert!(r.findings.to_text().contains("cron"), "{}", r.findings);
    assert_eq!(w.active().version, v2);
}

#[test]
fn reformatting_alone_does_not_count_as_a_reload() {
    let dir = good_bundle("reformat");
    let w = Watcher::start(dir.path(), FAST).expect("start");
    let rx = w.subscribe();
    dir.write("replan.yaml", &format!("# a comment\n{REPLAN}"));
    // Then a real change, so that the test knows the watcher has looked at the first one.
    std::thread::sleep(Duration::from_millis(300));
    dir.write("objective.yaml", &OBJECTIVE.replace("0.02", "0.03"));
    let v = activated(&rx);
    assert_eq!(v, version_of_dir(dir.path()));
    assert_eq!(w.status().reloads, 1);
}
