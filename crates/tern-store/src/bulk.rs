//! Bulk loads with `COPY`: a large backfill of users and opportunities (and the population that
//! `tern bench replan` plans), at the speed PostgreSQL can take rows, rather than the batch
//! path's checks per row. A load is one transaction: all of it, or nothing.

use chrono::{DateTime, Utc};
use tern_core::NewOpportunity;

use crate::users::User;
use crate::{Result, Store};

/// One field in COPY's text format: backslash, tab, newline and carriage return escaped.
fn field(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A text array literal (`{"a","b"}`), quoted for any content.
fn array(out: &mut String, items: &[String]) {
    let mut lit = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            lit.push(',');
        }
        lit.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                lit.push('\\');
            }
            lit.push(c);
        }
        lit.push('"');
    }
    lit.push('}');
    field(out, &lit);
}

impl Store {
    /// Loads users (timezone, locale, attributes, category opt-outs; not channel states) and
    /// opportunities in one transaction with `COPY`, and queues every loaded user for a replan.
    /// Every row is validated first, as the batch paths do; an existing key (a user id, a
    /// user's dedupe key) fails the whole load. Returns the opportunities loaded.
    pub async fn copy_load(
        &self,
        users: &[User],
        opportunities: &[NewOpportunity],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        for u in users {
            u.validate()?;
        }
        for o in opportunities {
            o.validate()?;
        }
        let mut tx = self.pool.begin().await?;
        if !users.is_empty() {
            let mut copy = tx
                .copy_in_raw(
                    "COPY users (user_id, timezone, locale, attributes, opted_out_categories, \
                     created_at, updated_at) FROM STDIN",
                )
                .await?;
            let stamp = now.to_rfc3339();
            for chunk in users.chunks(10_000) {
                let mut buf = String::new();
                for u in chunk {
                    field(&mut buf, &u.user_id);
                    buf.push('\t');
                    field(&mut buf, &u.timezone);
                    buf.push('\t');
                    match &u.locale {
                        Some(l) => field(&mut buf, l),
                        None => buf.push_str("\\N"),
                    }
                    buf.push('\t');
                    field(&mut buf, &u.attributes.to_string());
                    buf.push('\t');
                    array(&mut buf, &u.opted_out_categories);
                    buf.push('\t');
                    buf.push_str(&stamp);
                    buf.push('\t');
                    buf.push_str(&stamp);
                    buf.push('\n');
                }
                copy.send(buf.into_bytes()).await?;
            }
            copy.finish().await?;
        }
        let mut loaded = 0;
        if !opportunities.is_empty() {
            let mut copy = tx
                .copy_in_raw(
                    "COPY opportunities (user_id, dedupe_key, source, template, category, \
                     priority, channels, signals, payload, created_at, expires_at) FROM STDIN",
                )
                .await?;
            for chunk in opportunities.chunks(10_000) {
                let mut buf = String::new();
                for o in chunk {
                    for s in [
                        &o.user_id,
                        &o.dedupe_key,
                        &o.source,
                        &o.template,
                        &o.category,
                    ] {
                        field(&mut buf, s);
                        buf.push('\t');
                    }
                    field(&mut buf, &o.priority);
                    buf.push('\t');
                    array(&mut buf, &o.channels);
                    buf.push('\t');
                    field(&mut buf, &serde_json::json!(o.signals).to_string());
                    buf.push('\t');
                    field(&mut buf, &serde_json::json!(o.payload).to_string());
                    buf.push('\t');
                    buf.push_str(&o.created_at.to_rfc3339());
                    buf.push('\t');
                    buf.push_str(&o.expires_at.to_rfc3339());
                    buf.push('\n');
                }
                copy.send(buf.into_bytes()).await?;
            }
            loaded = copy.finish().await?;
        }
        let mut ids: Vec<&str> = opportunities.iter().map(|o| o.user_id.as_str()).collect();
        ids.extend(users.iter().map(|u| u.user_id.as_str()));
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(100_000) {
            crate::sweeps::enqueue(&mut tx, chunk, "load").await?;
        }
        tx.commit().await?;
        Ok(loaded)
    }
}
