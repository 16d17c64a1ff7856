//! `--config FILE` (or `TERN_CONFIG`): settings from a TOML file, with the same names as the
//! flags (`listen`, `metrics_listen`, `policies`, ...). Precedence: flags, then environment
//! variables, then the file, then the defaults.
//!
//! The file is applied by setting the `TERN_*` environment variable of every key that is not
//! already set, before the command line is parsed again: clap then applies the usual precedence,
//! and there is one place (the flag definitions) that says what each setting means.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Keys a configuration file may hold, with the environment variable each stands for.
const KEYS: &[(&str, &str)] = &[
    ("database_url", "DATABASE_URL"),
    ("log_format", "TERN_LOG_FORMAT"),
    ("listen", "TERN_LISTEN"),
    ("metrics_listen", "TERN_METRICS_LISTEN"),
    ("policies", "TERN_POLICIES"),
    ("shutdown_grace", "TERN_SHUTDOWN_GRACE"),
    ("drain_delay_ms", "TERN_DRAIN_DELAY_MS"),
    ("policy_poll_ms", "TERN_POLICY_POLL_MS"),
    ("policy_settle_ms", "TERN_POLICY_SETTLE_MS"),
    ("tokens", "TERN_TOKENS"),
    ("tls_cert", "TERN_TLS_CERT"),
    ("tls_key", "TERN_TLS_KEY"),
    ("max_message_bytes", "TERN_MAX_MESSAGE_BYTES"),
    ("page_opportunities", "TERN_PAGE_OPPORTUNITIES"),
    ("page_lease_secs", "TERN_PAGE_LEASE_SECS"),
    ("page_workers", "TERN_PAGE_WORKERS"),
];

/// The environment variables the file at `path` sets: every key it holds whose variable is not
/// already set. Unknown keys and values that are not strings, integers or booleans are errors
/// with their line.
pub fn settings(path: &Path) -> Result<Vec<(&'static str, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| line_col(&text, s.start))
            .map_or(String::new(), |(l, c)| format!(":{l}:{c}"));
        anyhow::anyhow!("{}{at}: {}", path.display(), e.message())
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some((_, var)) = KEYS.iter().find(|(k, _)| k == key) else {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key.as_str()))
                .map_or(String::new(), |l| format!(":{}", l + 1));
            bail!(
                "{}{line}: unknown setting {key:?}; known: {}",
                path.display(),
                KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            );
        };
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: setting {key:?} must be a string or a number, not {}",
                path.display(),
                other.type_str()
            ),
        };
        if std::env::var_os(var).is_none() {
            out.push((*var, value));
        }
    }
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("tern-config-{}.toml", uuid_like()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn uuid_like() -> String {
        format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
    }

    #[test]
    fn keys_become_environment_settings_and_mistakes_are_located() {
        let p = file("listen = \"127.0.0.1:1\"\nshutdown_grace = 5\n");
        let s = settings(&p).unwrap();
        assert!(s.contains(&("TERN_LISTEN", "127.0.0.1:1".into())));
        assert!(s.contains(&("TERN_SHUTDOWN_GRACE", "5".into())));
        std::fs::write(&p, "listen = \"a\"\nlistne = \"b\"\n").unwrap();
        let e = settings(&p).unwrap_err().to_string();
        assert!(e.contains(":2: unknown setting \"listne\""), "{e}");
        std::fs::write(&p, "listen = \n").unwrap();
        let e = settings(&p).unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
        std::fs::remove_file(&p).ok();
    }
}
