//! Writing to the operator: stdout that survives a closed pipe, and lines flushed as they
//! happen.

use std::io::Write;

/// Writes to stdout, ignoring a closed pipe (`tern policy schema | head` must not panic the way
/// `println!` does).
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints one line (or block) to stdout and flushes it, so a pipe sees each event as it happens.
pub(crate) fn say(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}
