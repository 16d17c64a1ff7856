//! `tern policy`: check a policy bundle, diff two bundles, print the JSON Schema (and, through
//! `evaluate.rs`, simulate a change on logged decisions).
//!
//! `check`, `diff` and `schema` need no database: they read files and print; `watch` (in
//! `activate.rs`) follows a directory and records activations in the database. Exit codes
//! follow compilers and `diff(1)`: `check` exits 0 when the bundle is valid (warnings allowed),
//! 1 when it has errors, 2 when the directory cannot be read; `diff` exits 0 when the bundles
//! are semantically the same, 1 when they differ, 2 when either cannot be read or is invalid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tern_policy::{read_files, Bundle, Findings};

use crate::output::out;

/// How `tern policy check` prints findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path:line:col: error: message` with `  hint: ...` lines, then a summary.
    Text,
    /// GitHub Actions workflow commands (`::error file=...,line=...,col=...::message`), which
    /// become annotations on the pull request.
    Github,
    /// A JSON array of `{file, line, column, severity, message, hint}`.
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate every policy file in DIR and report every mistake at once.
    Check {
        /// The bundle directory (every *.yaml and *.yml under it; hidden entries are skipped).
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show what changes between two bundles: documents and fields added, removed, changed.
    Diff {
        /// The bundle before the change.
        old: PathBuf,
        /// The bundle after the change.
        new: PathBuf,
        /// Print the diff as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of policy documents, for editors (yaml-language-server).
    Schema {},
    /// Follow a bundle directory as the daemon does: activate each valid change, record it in
    /// the database, report each rejected one. Runs until SIGINT or SIGTERM.
    Watch(crate::activate::WatchArgs),
    /// Replay the logged decisions of recent days through the current bundle and a changed one,
    /// and print as Markdown (for a pull-request comment) what the change would do: volume per
    /// channel and hour, suppressions by reason, users affected, and the estimated change in
    /// value with confidence intervals.
    Simulate(crate::evaluate::SimulateArgs),
}

/// `println!` through [`out`].
macro_rules! outln {
    ($($arg:tt)*) => {
        out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Runs a `tern policy` command. Only `watch` opens the database.
pub async fn run(database_url: Option<&str>, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    Ok(match cmd {
        PolicyCommand::Check { dir, format } => check(&dir, format),
        PolicyCommand::Diff { old, new, json } => diff(&old, &new, json),
        PolicyCommand::Schema {} => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&tern_policy::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        PolicyCommand::Watch(args) => return crate::activate::watch(database_url, args).await,
        PolicyCommand::Simulate(args) => {
            return crate::evaluate::simulate(database_url, args).await
        }
    })
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Reads and validates a bundle: `Err(exit code)` when the directory cannot be read.
fn load(dir: &Path) -> Result<Result<Bundle, Findings>, ExitCode> {
    match read_files(dir) {
        Ok(files) => Ok(Bundle::from_files(dir, &files)),
        Err(e) => Err(usage_error(e)),
    }
}

fn check(dir: &Path, format: Format) -> ExitCode {
    let result = match load(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (findings, bundle) = match &result {
        Ok(bundle) => (&bundle.warnings, Some(bundle)),
        Err(findings) => (findings, None),
    };
    match format {
        Format::Text => {
            out(&findings.to_text());
            let warnings = findings.0.len() - findings.error_count();
            match bundle {
                Some(b) => outln!(
                    "{}: valid, version {} ({} documents, {} warning(s))",
                    dir.display(),
                    b.short_version(),
                    b.documents().len(),
                    warnings
                ),
                None => outln!(
                    "{}: invalid, {} error(s), {} warning(s)",
                    dir.display(),
                    findings.error_count(),
                    warnings
                ),
            }
        }
        Format::Github => out(&findings.to_github()),
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&findings.to_json()).unwrap_or_default()
        ),
    }
    if bundle.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn diff(old: &Path, new: &Path, json: bool) -> ExitCode {
    let mut bundles = Vec::new();
    for dir in [old, new] {
        match load(dir) {
            Ok(Ok(b)) => bundles.push(b),
            Ok(Err(findings)) => {
                eprint!("{}", findings.to_text());
                return usage_error(format!(
                    "{} is not a valid bundle; fix it (see `tern policy check`) before diffing",
                    dir.display()
                ));
            }
            Err(code) => return code,
        }
    }
    let [a, b] = &bundles[..] else {
        return usage_error("internal error: expected two bundles");
    };
    let d = tern_policy::diff(a, b);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&d.to_json()).unwrap_or_default()
        );
    } else if d.is_empty() {
        outln!(
            "no semantic differences (version {} in both)",
            a.short_version()
        );
    } else {
        outln!("--- {} (version {})", old.display(), a.short_version());
        outln!("+++ {} (version {})", new.display(), b.short_version());
        out(&d.to_string());
    }
    if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
