//! Creating and dropping whole databases: what test suites and benchmarks need to work in a
//! database of their own on a shared server, without touching tern's real one.

use sqlx::postgres::PgConnectOptions;
use tern_core::InvalidInput;

use crate::{ConnectOptions, Result, Store, StoreError};

/// Database names this module creates are restricted so they can be spliced into DDL safely
/// (DDL cannot take bind parameters).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "database name {name:?} must be 1 to 63 lowercase letters, digits or '_'"
        ))
        .into())
    }
}

impl Store {
    /// Creates database `name` on this store's server, optionally as a copy of `template` (which
    /// must have no open connections). Copying a migrated template is how each test gets a fresh,
    /// migrated database in milliseconds.
    pub async fn create_database(&self, name: &str, template: Option<&str>) -> Result<()> {
        check_name(name)?;
        let sql = match template {
            Some(t) => {
                check_name(t)?;
                format!("CREATE DATABASE {name} TEMPLATE {t}")
            }
            None => format!("CREATE DATABASE {name}"),
        };
        sqlx::query(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// One round trip (`SELECT 1`): whether the database answers now. For health probes.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Drops database `name`, disconnecting whoever is still connected to it.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        check_name(name)?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Connects to another database on the server that `url` points at.
    pub async fn connect_to_database(url: &str, database: &str) -> Result<Store> {
        Store::connect_to_database_with(url, database, ConnectOptions::default()).await
    }

    /// Like [`Store::connect_to_database`], with pool settings.
    pub async fn connect_to_database_with(
        url: &str,
        database: &str,
        pool: ConnectOptions,
    ) -> Result<Store> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::BadUrl(e.to_string()))?;
        Store::connect_options(options.database(database), pool).await
    }
}
