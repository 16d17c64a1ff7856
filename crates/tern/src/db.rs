//! Where the database comes from: `DATABASE_URL` when it is set, otherwise a private throwaway
//! PostgreSQL cluster that lives exactly as long as this process.

use anyhow::{Context, Result};
use tern_pgtemp::TempCluster;
use tern_store::Store;

/// A connected store, and the embedded cluster behind it if there is one. Dropping it stops and
/// removes the cluster.
pub struct Database {
    pub store: Store,
    pub url: String,
    /// Kept for its Drop: the cluster is removed when the command finishes.
    cluster: Option<TempCluster>,
}

impl Database {
    /// Connects to `url`, or starts an embedded cluster when `url` is `None`. An embedded cluster
    /// is private to this process, so nobody else could migrate it: its schema is applied here.
    pub async fn open(url: Option<&str>) -> Result<Database> {
        let db = Database::open_unmigrated(url).await?;
        if db.cluster.is_some() {
            db.store.migrate().await?;
        }
        Ok(db)
    }

    /// Connects to the database in `url` for a command that reads what tern has stored (history,
    /// the model registry): a private throwaway database would be empty, so `url` is required,
    /// and the schema must be the one this binary expects.
    pub async fn open_existing(url: Option<&str>, command: &str) -> Result<Database> {
        let url = url.with_context(|| {
            format!(
                "`{command}` needs DATABASE_URL (or --database-url): it works on what tern has \
                 stored, and a private throwaway database would be empty"
            )
        })?;
        let db = Database::open_unmigrated(Some(url)).await?;
        db.store.check_schema().await?;
        Ok(db)
    }

    /// Like [`Database::open`], but leaves the schema of an embedded cluster alone (for
    /// `tern migrate`, which reports what it applies).
    pub async fn open_unmigrated(url: Option<&str>) -> Result<Database> {
        match url {
            Some(url) => {
                let store = Store::connect(url).await?;
                Ok(Database {
                    store,
                    url: url.to_string(),
                    cluster: None,
                })
            }
            None => {
                let cluster = tokio::task::spawn_blocking(TempCluster::start)
                    .await
                    .context("starting the embedded PostgreSQL")??;
                eprintln!(
                    "DATABASE_URL is not set: using a private throwaway PostgreSQL in {} (removed on exit)",
                    cluster.root_dir().display()
                );
                let url = cluster.url("postgres");
                let store = Store::connect(&url).await?;
                Ok(Database {
                    store,
                    url,
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// Closes the pool before the cluster goes away, so that the server shuts down promptly.
    pub async fn close(mut self) {
        self.store.close().await;
        if let Some(mut cluster) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
    }
}
