//! Running the real `tern` binary, shared by the binary's integration tests.
#![allow(dead_code)] // Each test file uses its own part of it.

use std::process::{Command, Output};

/// Runs `tern` with `args`, with `DATABASE_URL` set only when given (never inherited).
pub fn tern(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TERN_PG_BINDIR");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run tern")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The standard output of a run that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}
