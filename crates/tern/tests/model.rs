//! `tern train` and `tern model` against a real PostgreSQL holding a history with a planted
//! signal, and `tern plan --model` scoring with what was trained.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use tern_core::{NewOpportunity, OutcomeKind, SplitMix64};
use tern_store::{NewMessage, NewOutcome, RowStatus, Store, User};
use tern_tests::TestDb;

mod common;

use common::{ok, tern, text};

fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 29, 0, 0, 0).unwrap()
}

const CHANNELS: [&str; 3] = ["push", "email", "in_app"];
const DAYS: i64 = 35;

/// A history of `users` users over the 35 days before [`end`], one message a day each, whose
/// outcomes follow a known rule: opens rise steeply with the opportunity's `relevance` signal and
/// fall with how many messages the user got in the previous day; conversions follow opens;
/// unsubscribes follow fatigue; users with a high latent activity stay active.
async fn seed_history(store: &Store, users: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let start = end() - Duration::days(DAYS);
    let people: Vec<User> = (0..users)
        .map(|u| User {
            user_id: format!("u{u:05}"),
            timezone: ["Europe/Stockholm", "America/New_York", "UTC"][u % 3].into(),
            locale: None,
            attributes: serde_json::json!({}),
            opted_out_categories: vec![],
            channels: vec![],
        })
        .collect();
    store
        .upsert_users(&people, start - Duration::days(90))
        .await
        .unwrap();

    let mut opportunities = Vec::new();
    let mut plan = Vec::new(); // (user, day, channel, relevance, burst)
    for u in 0..users {
        for day in 0..DAYS {
            // Some days bring a burst of three messages: fatigue.
            let burst = rng.below(5) == 0;
            for k in 0..if burst { 3 } else { 1 } {
                let relevance = rng.next_f64();
                let channel = CHANNELS[rng.below(3)];
                let created = start + Duration::days(day) + Duration::hours(rng.below(20) as i64);
                opportunities.push(NewOpportunity {
                    user_id: format!("u{u:05}"),
                    dedupe_key: format!("d{day}-{k}"),
                    source: "test".into(),
                    template: format!("t{}", rng.below(6)),
                    category: ["marketing", "social", "content"][rng.below(3)].into(),
                    priority: "marketing".into(),
                    channels: vec![channel.into()],
                    signals: BTreeMap::from([("relevance".to_string(), relevance)]),
                    payload: Default::default(),
                    created_at: created,
                    expires_at: created + Duration::days(2),
                });
                plan.push((
                    u,
                    created + Duration::minutes(30),
                    channel,
                    relevance,
                    burst,
                ));
            }
        }
    }
    let mut ids = Vec::new();
    for chunk in opportunities.chunks(10_000) {
        let report = store.ingest_opportunities(chunk).await.unwrap();
        for r in report.rows {
            match r {
                RowStatus::New(id) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
    }
    let messages: Vec<NewMessage> = plan
        .iter()
        .zip(&ids)
        .map(|((u, at, channel, _, _), id)| NewMessage {
            user_id: format!("u{u:05}"),
            opportunity_id: *id,
            channel: channel.to_string(),
            sent_at: *at,
        })
        .collect();
    let message_ids = store.record_messages(&messages).await.unwrap();

    let mut outcomes = Vec::new();
    for ((u, at, _, relevance, burst), mid) in plan.iter().zip(&message_ids) {
        let user_id = format!("u{u:05}");
        let logit = -2.5 + 5.0 * relevance - if *burst { 1.5 } else { 0.0 };
        if rng.next_f64() < 1.0 / (1.0 + (-logit).exp()) {
            outcomes.push(NewOutcome {
                user_id: user_id.clone(),
                message_id: *mid,
                kind: OutcomeKind::Opened,
                occurred_at: *at + Duration::minutes(20),
                value: None,
            });
            if rng.next_f64() < 0.4 * relevance {
                outcomes.push(NewOutcome {
                    user_id: user_id.clone(),
                    message_id: *mid,
                    kind: OutcomeKind::Converted,
                    occurred_at: *at + Duration::hours(3),
                    value: Some(20.0),
                });
            }
        }
    }
    for chunk in outcomes.chunks(10_000) {
        store.record_outcomes(chunk, end()).await.unwrap();
    }

    let mut activity: Vec<(String, NaiveDate)> = Vec::new();
    for u in 0..users {
        let latent = 0.15 + 0.8 * (u as f64 / users as f64);
        for day in -28..DAYS {
            if rng.next_f64() < latent {
                activity.push((
                    format!("u{u:05}"),
                    (start + Duration::days(day)).date_naive(),
                ));
            }
        }
    }
    for chunk in activity.chunks(20_000) {
        store.record_activity(chunk).await.unwrap();
    }
}

fn head<'a>(metrics: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    metrics["validation"]["heads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["head"] == name)
        .unwrap_or_else(|| panic!("no head {name} in {metrics}"))
}

#[tokio::test]
async fn train_learns_the_planted_signal_registers_promotes_and_plans_with_it() {
    let db = TestDb::new().await;
    seed_history(&db.store, 240, 7).await;
    let dir = std::env::temp_dir().join(format!("tern-train-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let artifact = dir.join("model.tern");
    let until = end().to_rfc3339();

    let out = tern(
        &[
            "train",
            "--until",
            &until,
            "--days",
            "28",
            "--retention-days",
            "7",
            "--max-epochs",
            "20",
            "--batch-size",
            "64",
            "--seed",
            "3",
            "--promote",
            "--output",
            artifact.to_str().unwrap(),
        ],
        Some(&db.url),
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("promoted model m-20260629T000000Z-"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("training rows"),
        "{}",
        text(&out.stderr)
    );

    let models = db.store.list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.status, "active");
    assert_eq!(m.train_until, Some(end()));
    let engagement = head(&m.metrics, "engagement");
    let auc = engagement["model"]["auc"].as_f64().unwrap();
    assert!(
        auc > 0.8,
        "engagement AUC {auc} on held-out days: {engagement}"
    );
    assert!(
        engagement["model"]["log_loss"].as_f64() < engagement["base_rate"]["log_loss"].as_f64()
    );
    // The split is made over the time up to 48 hours (the shortest label window) before
    // --until, so the validation period starts 7.2 days before it. Retention over 7 days: only
    // validation sends at least 7 days old have a known label; the newer ones are masked rather
    // than counted as negatives, while the training period's are known and were learned from.
    let retention = head(&m.metrics, "retention");
    let labels = retention["labels"].as_u64().unwrap();
    assert!(
        labels > 0 && labels < engagement["labels"].as_u64().unwrap() / 4,
        "{retention} against {engagement}"
    );
    assert!(
        retention["train_base_rate"].as_f64().unwrap() > 0.5,
        "{retention}"
    );
    assert!(m.metrics["rows"]["valid"].as_u64().unwrap() > 0);
    assert_eq!(m.metrics["max_weight"].as_f64(), Some(1.0), "{}", m.metrics);

    // The value function was fitted on every user's 28 days of the window, one transition a
    // day, with the users' share of active days (0.15 to 0.95 by user, 0.55 on average).
    let value = &m.metrics["value_function"];
    assert_eq!(value["users"].as_u64(), Some(240), "{value}");
    assert_eq!(value["user_days"].as_u64(), Some(240 * 28), "{value}");
    let share = value["active_share"].as_f64().unwrap();
    assert!((share - 0.55).abs() < 0.05, "{value}");
    // `tern model show` prints its weights by state feature.
    let show = tern(&["model", "show", &m.version], Some(&db.url));
    let shown = ok(&show);
    assert!(
        shown.contains("value function: 6720 user-days of 240 users"),
        "{shown}"
    );
    assert!(shown.contains("| email.sent_7d | "), "{shown}");

    // Training again with the same seed registers the same weights: the version is a digest of
    // the artifact, so a second registration is refused as a duplicate.
    let again = tern(
        &[
            "train",
            "--until",
            &until,
            "--days",
            "28",
            "--retention-days",
            "7",
            "--max-epochs",
            "20",
            "--batch-size",
            "64",
            "--seed",
            "3",
        ],
        Some(&db.url),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains(&format!("{:?} is already registered", m.version)),
        "{}",
        text(&again.stderr)
    );

    let list = ok(&tern(&["model", "list"], Some(&db.url)));
    assert!(
        list.contains(&m.version) && list.contains("active"),
        "{list}"
    );
    let show = ok(&tern(&["model", "show", &m.version], Some(&db.url)));
    assert!(
        show.contains("engagement") && show.contains("promotable"),
        "{show}"
    );

    // The planner scores with the model: two users with one push opportunity each, one barely
    // relevant, one highly relevant; the model has learned what relevance does to opens. Both
    // ids are outside the example's experiments, so the default objective values them.
    let input = dir.join("users.jsonl");
    let now = "2026-06-29T12:00:00Z";
    let user = |id: &str, relevance: f64| {
        serde_json::json!({
            "user_id": id, "timezone": "UTC",
            "opportunities": [
                {"id": 1, "category": "marketing", "priority": "marketing", "channels": ["push"],
                 "created_at": "2026-06-29T11:00:00Z", "expires_at": "2026-06-30T11:00:00Z",
                 "template": "t1", "signals": {"relevance": relevance}}
            ]
        })
    };
    std::fs::write(
        &input,
        format!("{}\n{}\n", user("irrelevant", 0.02), user("keen", 0.98)),
    )
    .unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let plan = ok(&tern(
        &[
            "plan",
            "--policies",
            policies.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--now",
            now,
            "--model",
            artifact.to_str().unwrap(),
        ],
        None,
    ));
    let engagement = |user: &str| -> Option<f64> {
        plan.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["kind"] == "choice" && r["user"] == user)
            .and_then(|r| r["scores"]["engagement"].as_f64())
    };
    let high = engagement("keen").unwrap_or_else(|| panic!("no choice for `keen`: {plan}"));
    assert!(
        high > 0.6,
        "predicted engagement {high} for a relevant message: {plan}"
    );
    if let Some(low) = engagement("irrelevant") {
        assert!(low < high - 0.3, "low {low}, high {high}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn promotion_refuses_a_model_worse_than_the_base_rate_unless_forced_and_rollback_steps_back()
{
    let db = TestDb::new().await;
    // Two honest models, then one whose validation period contradicts its training period.
    let good = register(&db.store, "m-good", false).await;
    let newer = register(&db.store, "m-newer", false).await;
    let bad = register(&db.store, "m-bad", true).await;

    ok(&tern(&["model", "promote", &good], Some(&db.url)));
    ok(&tern(&["model", "promote", &newer], Some(&db.url)));
    let refused = tern(&["model", "promote", &bad], Some(&db.url));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("worse than the base rate"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(active(&db.store).await, newer, "a refusal changes nothing");

    ok(&tern(&["model", "promote", &bad, "--force"], Some(&db.url)));
    assert_eq!(active(&db.store).await, bad);
    // A dry run says which model would become active and changes nothing.
    let dry = ok(&tern(&["model", "rollback", "--dry-run"], Some(&db.url)));
    assert!(
        dry.contains(&format!("from model {bad} to {newer}")),
        "{dry}"
    );
    assert_eq!(active(&db.store).await, bad);
    let back = ok(&tern(&["model", "rollback"], Some(&db.url)));
    assert!(back.contains(&newer), "{back}");
    assert_eq!(active(&db.store).await, newer);
    // Rolling back again steps further back, not forth to the model rolled away from.
    let again = ok(&tern(&["model", "rollback"], Some(&db.url)));
    assert!(
        again.contains(&format!("from model {newer} to {good}")),
        "{again}"
    );
    assert_eq!(active(&db.store).await, good);
    let none = tern(&["model", "rollback"], Some(&db.url));
    assert_eq!(none.status.code(), Some(1), "{}", text(&none.stdout));
    assert!(
        text(&none.stderr).contains("no earlier active model"),
        "{}",
        text(&none.stderr)
    );
    assert_eq!(active(&db.store).await, good);

    let missing = tern(&["model", "promote", "m-nope"], Some(&db.url));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("m-nope"),
        "{}",
        text(&missing.stderr)
    );
    let empty = tern(&["train", "--until", "2026-06-29T00:00:00Z"], Some(&db.url));
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        text(&empty.stderr).contains("not enough history to train on"),
        "{}",
        text(&empty.stderr)
    );
    let bad = tern(&["train", "--valid-fraction", "1.5"], Some(&db.url));
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("--valid-fraction must be between 0 and 1"));
    let bad = tern(&["train", "--max-weight", "0.5"], Some(&db.url));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("expected a number of at least 1"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(
        store_models(&db.store).await,
        3,
        "failed runs register nothing"
    );

    let no_db = tern(&["model", "list"], None);
    assert_eq!(no_db.status.code(), Some(1));
    assert!(text(&no_db.stderr).contains("needs DATABASE_URL"));
}

async fn store_models(store: &Store) -> usize {
    store.list_models().await.unwrap().len()
}

async fn active(store: &Store) -> String {
    store.active_model().await.unwrap().unwrap().0
}

/// Trains a small model in-process on one rule and validates it on `flipped` (the opposite rule
/// when true), then registers it as `tern train` would.
async fn register(store: &Store, version: &str, flipped: bool) -> String {
    use tern_model::{Batch, FeatureSpec, InMemory, TrainConfig, HEADS};
    let spec = FeatureSpec::default();
    let w = spec.width();
    let mut rng = SplitMix64::new(version.len() as u64);
    let mut data = |flip: bool| {
        let rows = 2_000;
        let mut x = vec![0.0f32; rows * w];
        let mut y = Vec::new();
        for r in 0..rows {
            let v = rng.next_f64() as f32;
            x[r * w] = v;
            let pos = (v > 0.5) != flip;
            y.push([f32::from(u8::from(pos)); HEADS]);
        }
        InMemory(vec![Batch::new(w, x, y, vec![[true; HEADS]; rows]).unwrap()])
    };
    let mut train = data(false);
    let mut valid = data(flipped);
    let config = TrainConfig {
        max_epochs: 3,
        ..TrainConfig::default()
    };
    let model = tern_model::train(&spec, &config, &mut train, &mut valid, None).unwrap();
    store
        .register_model(
            &tern_store::NewModel {
                version: version.into(),
                feature_version: model.feature_version().into(),
                artifact: model.to_bytes().unwrap(),
                metrics: serde_json::json!({ "validation": model.metrics }),
                train_from: None,
                train_until: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    version.into()
}
