//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "tern-policy-test-{}-{label}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        fs::write(path, text).expect("write file");
    }

    pub fn remove(&self, name: &str) {
        fs::remove_file(self.0.join(name)).expect("remove file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub const CHANNELS: &str = "\
apiVersion: tern/v1
kind: Channel
metadata: { name: push }
spec:
  quietHours: { from: \"22:00\", to: \"08:00\" }
---
apiVersion: tern/v1
kind: Channel
metadata: { name: email }
spec: {}
";

pub const OBJECTIVE: &str = "\
apiVersion: tern/v1
kind: Objective
metadata: { name: default }
spec:
  weights: { conversion: 1.0, retention: 2 }
  minValue: 0.02
";

pub const GENERATOR: &str = "\
apiVersion: tern/v1
kind: Generator
metadata: { name: new-release }
spec:
  on: { event: artist_release }
  when: \"event.popularity > 0.3\"
  message: { template: new_release, category: content }
  channels: [push, email]
  ttl: 48h
";

pub const REPLAN: &str = "\
apiVersion: tern/v1
kind: Replan
metadata: { name: hourly }
spec:
  cron: \"0 0 * * * *\"
  horizon: 1d
";

/// A small valid bundle in one directory, one kind per file.
pub fn good_bundle(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    dir.write("channels.yaml", CHANNELS);
    dir.write("objective.yaml", OBJECTIVE);
    dir.write("generators.yaml", GENERATOR);
    dir.write("replan.yaml", REPLAN);
    dir
}
