//! The test harness: every test gets a fresh, migrated database of its own.
//!
//! The server is `DATABASE_URL` when it is set, otherwise one private throwaway PostgreSQL cluster
//! per test process (see `tern-pgtemp`), started on first use. Once per process the migrations are
//! applied to a template database; each test then gets `CREATE DATABASE ... TEMPLATE`, which
//! copies files instead of replaying migrations and takes milliseconds. Each test's database is
//! dropped when its [`TestDb`] is.
//!
//! Tests run on several threads, each with its own tokio runtime, and sqlx connections must not
//! outlive the runtime that opened them, so nothing here shares a pool between tests: the shared
//! state is only URLs, and setup and teardown run on short-lived threads with their own runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tern_pgtemp::TempCluster;
use tern_store::Store;

struct Server {
    /// Set when the server is the embedded cluster; kept alive for the whole process.
    cluster: Option<TempCluster>,
    /// The server's URL, pointing at its maintenance database.
    admin_url: String,
    template: String,
}

impl Server {
    fn url(&self, database: &str) -> String {
        match &self.cluster {
            Some(cluster) => cluster.url(database),
            None => replace_database(&self.admin_url, database),
        }
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Replaces the database name in a `postgres://user@host:port/db?params` URL.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    if query.is_empty() {
        format!("{base}/{database}")
    } else {
        format!("{base}/{database}?{query}")
    }
}

/// Runs `f` to completion on a new thread with its own runtime.
fn on_own_runtime<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(future)
    })
    .join()
    .expect("the setup thread panicked")
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let (cluster, admin_url) = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (None, url),
            _ => {
                let cluster = TempCluster::start()
                    .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
                let url = cluster.url("postgres");
                (Some(cluster), url)
            }
        };
        let template = format!("tern_tpl_{}", std::process::id());
        let mut server = Server {
            cluster,
            admin_url,
            template: String::new(),
        };
        let (admin, tpl_url, tpl) = (
            server.admin_url.clone(),
            server.url(&template),
            template.clone(),
        );
        on_own_runtime(async move {
            let admin = Store::connect(&admin)
                .await
                .expect("connect to the test server");
            admin
                .drop_database(&tpl)
                .await
                .expect("drop an old template");
            admin
                .create_database(&tpl, None)
                .await
                .expect("create the template");
            let store = Store::connect(&tpl_url)
                .await
                .expect("connect to the template");
            store.migrate().await.expect("migrate the template");
            store.close().await;
            admin.close().await;
        });
        server.template = template;
        server
    })
}

/// A fresh database for one test, dropped with it.
pub struct TestDb {
    pub store: Store,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh database with the current schema.
    pub async fn new() -> TestDb {
        TestDb::create(true).await
    }

    /// A fresh database with no schema at all (for migration tests).
    pub async fn empty() -> TestDb {
        TestDb::create(false).await
    }

    async fn create(migrated: bool) -> TestDb {
        let server = tokio::task::spawn_blocking(server)
            .await
            .expect("test server setup");
        let name = format!(
            "tern_t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = Store::connect(&server.admin_url)
            .await
            .expect("connect to the test server");
        let template = migrated.then_some(server.template.as_str());
        admin
            .create_database(&name, template)
            .await
            .expect("create the test database");
        admin.close().await;
        let url = server.url(&name);
        let store = Store::connect(&url)
            .await
            .expect("connect to the test database");
        TestDb { store, name, url }
    }

    /// Another store (with its own pool) on the same database: a second replica, or a second
    /// client racing the first.
    pub async fn another_store(&self) -> Store {
        Store::connect(&self.url).await.expect("connect again")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (server().admin_url.clone(), self.name.clone());
        on_own_runtime(async move {
            if let Ok(admin) = Store::connect(&admin).await {
                let _ = admin.drop_database(&name).await;
                admin.close().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            replace_database("postgres://u@h/postgres?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://u@h", "t1"),
            "postgres://u@h/t1"
        );
    }
}
