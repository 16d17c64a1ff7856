//! The SQL that tern's benchmarks measure themselves against: the way teams commonly write the
//! same job directly in PostgreSQL. Nothing in tern's own paths calls this module.

use crate::{Result, Store};

/// One candidate (an opportunity on one channel) with its value already computed, as a SQL
/// selection would read it from a table.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerCandidate {
    pub user_id: String,
    pub opportunity_id: i64,
    pub channel: String,
    pub value: f64,
}

/// The caps the SQL selection can express with window functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerCaps {
    /// Sends per user per channel.
    pub per_channel: i64,
    /// Sends per user across channels.
    pub per_user: i64,
    /// Nothing below this value is sent.
    pub min_value: f64,
}

impl Store {
    /// Loads candidates into an unlogged table `peer_candidates` (replacing what was there), so
    /// that [`Store::peer_select`] can be timed on its own.
    pub async fn peer_load(&self, candidates: &[PeerCandidate]) -> Result<()> {
        sqlx::query("DROP TABLE IF EXISTS peer_candidates")
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "CREATE UNLOGGED TABLE peer_candidates (user_id text COLLATE \"C\" NOT NULL, \
             opportunity_id bigint NOT NULL, channel text COLLATE \"C\" NOT NULL, \
             value double precision NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for chunk in candidates.chunks(50_000) {
            let users: Vec<&str> = chunk.iter().map(|c| c.user_id.as_str()).collect();
            let opportunities: Vec<i64> = chunk.iter().map(|c| c.opportunity_id).collect();
            let channels: Vec<&str> = chunk.iter().map(|c| c.channel.as_str()).collect();
            let values: Vec<f64> = chunk.iter().map(|c| c.value).collect();
            sqlx::query(
                "INSERT INTO peer_candidates \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::float8[])",
            )
            .bind(&users)
            .bind(&opportunities)
            .bind(&channels)
            .bind(&values)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("ANALYZE peer_candidates")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The selection as SQL: drop candidates below the minimum value, keep each opportunity's
    /// best channel, then rank per user and channel and per user with window functions and keep
    /// what fits the caps. Returns how many sends it chose. It knows no history, send times,
    /// quiet hours, minimum gaps or budgets — which is how such queries usually look.
    pub async fn peer_select(&self, caps: PeerCaps) -> Result<i64> {
        // Generous sort memory, as anyone tuning this query would give it: the window sorts
        // then run in memory instead of spilling to disk.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL work_mem = '512MB'")
            .execute(&mut *tx)
            .await?;
        let chosen = sqlx::query_scalar(
            "WITH best AS ( \
               SELECT user_id, opportunity_id, channel, value, \
                      row_number() OVER (PARTITION BY user_id, opportunity_id ORDER BY value DESC) AS r \
               FROM peer_candidates WHERE value >= $3), \
             ranked AS ( \
               SELECT user_id, opportunity_id, channel, value, \
                      row_number() OVER (PARTITION BY user_id, channel ORDER BY value DESC) AS per_channel, \
                      row_number() OVER (PARTITION BY user_id ORDER BY value DESC) AS per_user \
               FROM best WHERE r = 1) \
             SELECT count(*) FROM ranked WHERE per_channel <= $1 AND per_user <= $2",
        )
        .bind(caps.per_channel)
        .bind(caps.per_user)
        .bind(caps.min_value)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(chosen)
    }
}
