use tern_store::migrate::binary_version;
use tern_store::{MigrationState, StoreError};
use tern_tests::TestDb;

use crate::count;

#[tokio::test]
async fn migrations_apply_once_and_status_reports_them() {
    let db = TestDb::empty().await;
    let before = db.store.migration_status().await.unwrap();
    assert!(before.iter().all(|s| s.state == MigrationState::Pending));
    assert!(matches!(
        db.store.check_schema().await,
        Err(StoreError::SchemaBehind { database: 0, .. })
    ));
    let applied = db.store.migrate().await.unwrap();
    assert_eq!(applied.last(), Some(&binary_version()));
    assert!(db.store.migrate().await.unwrap().is_empty());
    let after = db.store.migration_status().await.unwrap();
    assert!(after.iter().all(|s| s.state == MigrationState::Applied));
    db.store.check_schema().await.unwrap();
}

#[tokio::test]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let mut stores = vec![];
    for _ in 0..4 {
        stores.push(db.another_store().await);
    }
    let results = futures::future::join_all(stores.iter().map(|s| s.migrate())).await;
    let mut applied: Vec<i64> = vec![];
    for r in results {
        applied.extend(r.unwrap());
    }
    applied.sort();
    let expected: Vec<i64> = db
        .store
        .migration_status()
        .await
        .unwrap()
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one replica"
    );
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM _sqlx_migrations").await as usize,
        expected.len()
    );
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_is_refused_untouched() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', true, '\\x00', 1)",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    let err = db.store.migrate().await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                database: 99990101000000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    assert!(matches!(
        db.store.check_schema().await,
        Err(StoreError::SchemaTooNew { .. })
    ));
    let status = db.store.migration_status().await.unwrap();
    assert_eq!(status.last().unwrap().state, MigrationState::Unknown);
}

#[tokio::test]
async fn half_applied_and_edited_migrations_are_refused_with_a_reason() {
    let db = TestDb::new().await;
    let v = binary_version();
    sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
        .bind(v)
        .execute(db.store.pool())
        .await
        .unwrap();
    let err = db.store.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::DirtyMigration(x) if x == v),
        "{err:?}"
    );
    assert!(err.to_string().contains("half-applied"), "{err}");

    sqlx::query(
        "UPDATE _sqlx_migrations SET success = true, checksum = '\\x01' WHERE version = $1",
    )
    .bind(v)
    .execute(db.store.pool())
    .await
    .unwrap();
    let err = db.store.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::ModifiedMigration(x) if x == v),
        "{err:?}"
    );
}
