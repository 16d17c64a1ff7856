use chrono::TimeDelta;
use tern_store::RowStatus;
use tern_tests::TestDb;

use crate::{count, ingest_all, opportunity, t0};

#[tokio::test]
async fn a_batch_is_stored_and_loaded_back_as_open_opportunities() {
    let db = TestDb::new().await;
    let batch = vec![
        opportunity("u1", "a"),
        opportunity("u1", "b"),
        opportunity("u2", "a"),
    ];
    let ids = ingest_all(&db.store, &batch).await;
    assert_eq!(ids.len(), 3);

    let open = db
        .store
        .open_opportunities(&["u1".into(), "u3".into()], t0())
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].new, batch[0]);
    assert_eq!(open[1].new, batch[1]);
    assert_eq!(open[0].id, ids[0]);
}

#[tokio::test]
async fn resubmitting_changes_nothing_and_says_so() {
    let db = TestDb::new().await;
    let batch = vec![opportunity("u1", "a"), opportunity("u2", "a")];
    ingest_all(&db.store, &batch).await;

    // The same keys with different content: still duplicates, and the stored rows keep the
    // original content.
    let mut again = batch.clone();
    again[0].template = "something_else".into();
    let report = db.store.ingest_opportunities(&again).await.unwrap();
    assert_eq!(
        report.rows,
        vec![RowStatus::Duplicate, RowStatus::Duplicate]
    );
    assert_eq!((report.new_count(), report.duplicate_count()), (0, 2));
    let stored = db
        .store
        .open_opportunities(&["u1".into()], t0())
        .await
        .unwrap();
    assert_eq!(stored[0].new.template, "new_release");
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM opportunities").await,
        2
    );
}

#[tokio::test]
async fn duplicates_within_one_batch_keep_the_first_and_bad_rows_are_rejected_alone() {
    let db = TestDb::new().await;
    let mut bad = opportunity("u1", "bad");
    bad.expires_at = bad.created_at - TimeDelta::seconds(1);
    let mut second = opportunity("u1", "a");
    second.template = "second".into();
    let batch = vec![opportunity("u1", "a"), bad, second, opportunity("u2", "a")];
    let report = db.store.ingest_opportunities(&batch).await.unwrap();
    assert!(matches!(report.rows[0], RowStatus::New(_)));
    assert!(matches!(&report.rows[1], RowStatus::Rejected(why) if why.contains("expires_at")));
    assert_eq!(report.rows[2], RowStatus::Duplicate);
    assert!(matches!(report.rows[3], RowStatus::New(_)));
    let stored = db
        .store
        .open_opportunities(&["u1".into()], t0())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].new.template, "new_release");
}

#[tokio::test]
async fn the_same_batch_from_two_connections_at_once_is_stored_once() {
    let db = TestDb::new().await;
    let other = db.another_store().await;
    // Reverse order on one side: the store sorts each batch, so the two cannot deadlock.
    let batch: Vec<_> = (0..5_000)
        .map(|i| opportunity(&format!("u{}", i % 500), &format!("k{i}")))
        .collect();
    let mut reversed = batch.clone();
    reversed.reverse();
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            db.store.ingest_opportunities(&batch),
            other.ingest_opportunities(&reversed)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            a.new_count() + b.new_count() + a.duplicate_count() + b.duplicate_count(),
            10_000
        );
        assert!(a.new_count() + b.new_count() <= 5_000);
    }
    assert_eq!(
        count(&db.store, "SELECT count(*) FROM opportunities").await,
        5_000
    );
    assert_eq!(
        count(
            &db.store,
            "SELECT count(DISTINCT (user_id, dedupe_key)) FROM opportunities"
        )
        .await,
        5_000
    );
}

#[tokio::test]
async fn concurrent_first_submissions_report_each_row_new_exactly_once() {
    let db = TestDb::new().await;
    let other = db.another_store().await;
    let batch: Vec<_> = (0..2_000)
        .map(|i| opportunity(&format!("u{}", i % 100), &format!("k{i}")))
        .collect();
    let (a, b) = tokio::join!(
        db.store.ingest_opportunities(&batch),
        other.ingest_opportunities(&batch)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for (ra, rb) in a.rows.iter().zip(&b.rows) {
        let news = [ra, rb]
            .iter()
            .filter(|r| matches!(r, RowStatus::New(_)))
            .count();
        assert_eq!(
            news, 1,
            "each row is new on exactly one side: {ra:?} / {rb:?}"
        );
    }
}

#[tokio::test]
async fn expired_opportunities_are_not_open_and_expire_marks_them() {
    let db = TestDb::new().await;
    let mut short = opportunity("u1", "short");
    short.expires_at = t0() + TimeDelta::minutes(5);
    ingest_all(&db.store, &[short, opportunity("u1", "long")]).await;
    let later = t0() + TimeDelta::minutes(5);
    let open = db
        .store
        .open_opportunities(&["u1".into()], later)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].new.dedupe_key, "long");
    assert_eq!(db.store.expire(later).await.unwrap(), 1);
    assert_eq!(db.store.expire(later).await.unwrap(), 0);
    assert_eq!(
        count(
            &db.store,
            "SELECT count(*) FROM opportunities WHERE state = 'expired'"
        )
        .await,
        1
    );
}
