use chrono::TimeDelta;
use serde_json::json;
use tern_store::{NewModel, StoreError};
use tern_tests::TestDb;

use crate::t0;

fn model(version: &str) -> NewModel {
    NewModel {
        version: version.into(),
        feature_version: "f1".into(),
        artifact: version.as_bytes().to_vec(),
        metrics: json!({"conversion": {"log_loss": 0.3}}),
        train_from: Some(t0() - TimeDelta::days(28)),
        train_until: Some(t0()),
    }
}

#[tokio::test]
async fn models_are_registered_promoted_one_at_a_time_and_rolled_back() {
    let db = TestDb::new().await;
    let s = &db.store;
    assert_eq!(s.active_model().await.unwrap(), None);
    for (i, v) in ["m1", "m2", "m3"].iter().enumerate() {
        s.register_model(&model(v), t0() + TimeDelta::minutes(i as i64))
            .await
            .unwrap();
    }
    let err = s.register_model(&model("m1"), t0()).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert_eq!(
        s.list_models()
            .await
            .unwrap()
            .iter()
            .map(|m| m.version.as_str())
            .collect::<Vec<_>>(),
        ["m3", "m2", "m1"]
    );

    s.promote_model("m1", t0() + TimeDelta::hours(1))
        .await
        .unwrap();
    s.promote_model("m2", t0() + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(
        s.active_model().await.unwrap(),
        Some(("m2".to_string(), b"m2".to_vec()))
    );
    assert_eq!(s.model("m1").await.unwrap().unwrap().status, "retired");
    assert!(matches!(
        s.promote_model("nope", t0()).await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(
        s.rollback_model(t0() + TimeDelta::hours(3)).await.unwrap(),
        "m1"
    );
    assert_eq!(s.active_model().await.unwrap().unwrap().0, "m1");
    // The history is a stack: m1 was the first, there is nothing before it (not back to m2).
    assert_eq!(s.rollback_target().await.unwrap(), None);
    assert!(matches!(
        s.rollback_model(t0() + TimeDelta::hours(4)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.active_model().await.unwrap().unwrap().0, "m1");
    // Promoting again pushes; a rollback then returns to m1.
    s.promote_model("m2", t0() + TimeDelta::hours(5))
        .await
        .unwrap();
    assert_eq!(
        s.rollback_target().await.unwrap(),
        Some(("m1".to_string(), "m2".to_string()))
    );
    let active: Vec<_> = s
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == "active")
        .collect();
    assert_eq!(active.len(), 1);
}

#[tokio::test]
async fn concurrent_promotions_leave_exactly_one_active_model() {
    let db = TestDb::new().await;
    for v in ["a", "b"] {
        db.store.register_model(&model(v), t0()).await.unwrap();
    }
    let other = db.another_store().await;
    let (x, y) = tokio::join!(
        db.store.promote_model("a", t0()),
        other.promote_model("b", t0())
    );
    x.unwrap();
    y.unwrap();
    let active = db
        .store
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.status == "active")
        .count();
    assert_eq!(active, 1);
}

#[tokio::test]
async fn rollback_without_history_says_so() {
    let db = TestDb::new().await;
    db.store.register_model(&model("only"), t0()).await.unwrap();
    db.store.promote_model("only", t0()).await.unwrap();
    assert!(matches!(
        db.store.rollback_model(t0()).await,
        Err(StoreError::NotFound(_))
    ));
}
