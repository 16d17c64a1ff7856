//! The API as delivery services and upstream systems meet it: tern-server and tern-daemon
//! started in this test's process, as `tern serve` starts them, on a real PostgreSQL, over gRPC
//! on loopback. What needs a process of its own (SIGKILL, SIGTERM, the command line) is tested
//! on the real binary in `crates/tern/tests/serve.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tern_daemon::{Service, ServiceConfig};
use tern_server::Tokens;

use tern_server::pb;
use tern_server::pb::admin_service_client::AdminServiceClient;
use tern_server::pb::feedback_service_client::FeedbackServiceClient;
use tern_server::pb::opportunity_service_client::OpportunityServiceClient;
use tern_server::pb::schedule_service_client::ScheduleServiceClient;
use tern_server::pb::user_service_client::UserServiceClient;
use tern_tests::TestDb;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const BUNDLE: &str = r#"apiVersion: tern/v1
kind: Channel
metadata: {name: push}
spec: {}
---
apiVersion: tern/v1
kind: Channel
metadata: {name: email}
spec: {}
---
apiVersion: tern/v1
kind: Objective
metadata: {name: default}
spec:
  weights: {conversion: 1.0, engagement: 1.0, retention: 1.0, reachability: 1.0}
  minValue: 0.0
---
apiVersion: tern/v1
kind: Replan
metadata: {name: hourly}
spec: {cron: "0 0 * * * *", horizon: 24h, exploration: 0}
"#;

/// A service running in this test's process (tern-server and tern-daemon, as `tern serve` runs
/// them), stopped when the test ends.
struct Daemon {
    service: Option<Service>,
    address: String,
    metrics: String,
    policies: PathBuf,
}

/// How an in-process service ended: `success()` when it drained and stopped cleanly.
#[derive(Debug)]
struct Exit(Result<(), String>);

impl Exit {
    fn success(&self) -> bool {
        self.0.is_ok()
    }
}

impl Daemon {
    async fn start(db: &TestDb) -> Daemon {
        Daemon::start_with(db, BUNDLE).await
    }

    async fn start_with(db: &TestDb, bundle: &str) -> Daemon {
        Daemon::start_args(db, bundle, &[]).await
    }

    /// Starts the service on `db`'s store with `bundle` as its policies; `extra` takes the
    /// flags of `tern serve` that these tests use.
    async fn start_args(db: &TestDb, bundle: &str, extra: &[&str]) -> Daemon {
        let policies = std::env::temp_dir().join(format!(
            "tern-api-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("bundle.yaml"), bundle).unwrap();
        let mut config = ServiceConfig::local(&policies);
        let (mut cert, mut key) = (None, None);
        for pair in extra.chunks(2) {
            match pair {
                ["--simulate-from", t] => config.simulate_from = Some(t.parse().unwrap()),
                ["--max-message-bytes", n] => config.max_message_bytes = n.parse().unwrap(),
                ["--holder", h] => config.holder = h.to_string(),
                ["--page-opportunities", n] => {
                    config.paging.page_opportunities = n.parse().unwrap()
                }
                ["--tokens", path] => config.tokens = Tokens::load(Path::new(path)).unwrap(),
                ["--tls-cert", path] => cert = Some(std::fs::read(path).unwrap()),
                ["--tls-key", path] => key = Some(std::fs::read(path).unwrap()),
                other => panic!("no such setting in these tests: {other:?}"),
            }
        }
        if let (Some(c), Some(k)) = (cert, key) {
            config.tls = Some((c, k));
        }
        let service = tern_daemon::service::start(db.store.clone(), config)
            .await
            .expect("the service starts");
        Daemon {
            address: service.address.to_string(),
            metrics: service.metrics_address.to_string(),
            service: Some(service),
            policies,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .expect("connect to the service")
    }

    /// `GET /metrics`, over a plain socket (the runtime has other threads to answer it).
    fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        out
    }

    /// Stops the service as SIGTERM would (drain, then stop), at most 10 s.
    async fn terminate(&mut self) -> Exit {
        let service = self.service.take().expect("running");
        Exit(
            service
                .shutdown(Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string()),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            service.stop();
            service.abort_background();
        }
        let _ = std::fs::remove_dir_all(&self.policies);
    }
}

fn user(id: &str) -> pb::User {
    pb::User {
        user_id: id.into(),
        timezone: "UTC".into(),
        attributes_json: r#"{"tier": "gold"}"#.into(),
        ..Default::default()
    }
}

fn opportunity(user: &str, key: &str, channels: &[&str]) -> pb::Opportunity {
    pb::Opportunity {
        user_id: user.into(),
        dedupe_key: key.into(),
        template: "new_release".into(),
        category: "content".into(),
        priority: "normal".into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        signals: [("relevance".to_string(), 0.8)].into(),
        ttl: Some(prost_types::Duration {
            seconds: 48 * 3600,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_replan_pull_ack_report_status_over_grpc() {
    let db = TestDb::new().await;
    let mut daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let mut feedback = FeedbackServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());

    let up = users
        .upsert(pb::UpsertUsersRequest {
            users: vec![user("u1"), user("u2")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.upserted, 2);

    let batch = pb::SubmitRequest {
        source: "catalog".into(),
        opportunities: vec![
            opportunity("u1", "a", &["push"]),
            opportunity("u2", "b", &["push", "email"]),
            opportunity("u2", "", &["push"]), // no dedupe key: rejected, the rest stored
        ],
    };
    let reply = opportunities
        .submit(batch.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.created, reply.duplicates), (2, 0));
    assert_eq!(reply.rejected.len(), 1);
    assert_eq!(reply.rejected[0].index, 2);
    assert!(reply.rejected[0].reason.contains("dedupe_key"), "{reply:?}");
    let again = opportunities.submit(batch).await.unwrap().into_inner();
    assert_eq!((again.created, again.duplicates), (0, 2), "idempotent");

    let plan = admin
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.trigger, "manual");
    assert_eq!(plan.candidates, 3);
    let chosen: u64 = plan.chosen_per_channel.values().sum();
    assert_eq!(chosen, 2, "one message per opportunity: {plan:?}");

    let pulled = schedule
        .pull(pb::PullRequest {
            holder: "push-sender-1".into(),
            channels: vec!["push".into(), "email".into()],
            max_items: 10,
            lease: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pulled.len(), 2, "{pulled:?}");
    assert!(pulled
        .iter()
        .all(|i| i.attempt == 1 && i.signals["relevance"] == 0.8));
    let again = schedule
        .pull(pb::PullRequest {
            holder: "push-sender-2".into(),
            channels: vec!["push".into(), "email".into()],
            max_items: 10,
            lease: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.items.is_empty(), "leased items are nobody else's");

    let acks = pb::AckRequest {
        acks: pulled
            .iter()
            .map(|i| pb::AckItem {
                user_id: i.user_id.clone(),
                item_id: i.item_id,
                lease_token: i.lease_token.clone(),
                status: pb::AckStatus::Sent as i32,
            })
            .collect(),
    };
    let acked = schedule
        .ack(acks.clone())
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert!(acked
        .iter()
        .all(|o| o.result == pb::AckResult::Acked as i32));
    let repeated = schedule.ack(acks).await.unwrap().into_inner().outcomes;
    assert!(repeated
        .iter()
        .all(|o| o.result == pb::AckResult::AlreadyAcked as i32));
    assert_eq!(
        acked.iter().map(|o| o.message_id).collect::<Vec<_>>(),
        repeated.iter().map(|o| o.message_id).collect::<Vec<_>>()
    );

    let first = &pulled[0];
    let outcome = pb::ReportRequest {
        outcomes: vec![pb::Outcome {
            user_id: first.user_id.clone(),
            message_id: acked[0].message_id.unwrap(),
            kind: pb::OutcomeKind::Opened as i32,
            occurred_at: None,
            value: None,
        }],
    };
    let stored = feedback.report(outcome.clone()).await.unwrap().into_inner();
    assert_eq!((stored.stored, stored.duplicates), (1, 0));
    let dup = feedback.report(outcome).await.unwrap().into_inner();
    assert_eq!((dup.stored, dup.duplicates), (0, 1));
    let active = feedback
        .report_activity(pb::ReportActivityRequest {
            activity: vec![pb::Activity {
                user_id: "u1".into(),
                occurred_at: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.new_days, 1);

    let mine = schedule
        .get_user_schedule(pb::GetUserScheduleRequest {
            user_id: first.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(mine
        .iter()
        .any(|i| i.item_id == first.item_id && i.state == "sent"));

    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.health, "SERVING");
    let manual = status
        .recent_plans
        .iter()
        .find(|p| p.plan_id == plan.plan_id)
        .expect("the manual plan is among the recent ones");
    assert_eq!((manual.trigger.as_str(), manual.candidates), ("manual", 3));
    assert!(!status.policy_version.is_empty());
    assert!(status.last_reload_error.is_empty());
    assert_eq!(status.next_runs[0].replan, "hourly");

    let scraped = daemon.scrape();
    for line in [
        "tern_plans_total{trigger=\"manual\",result=\"published\"} 1",
        "tern_plan_chosen_total{channel=\"push\"}",
        "tern_pulled_items_total{channel=\"push\"}",
        "tern_acks_total{result=\"acked\"} 2",
        "tern_acks_total{result=\"already_acked\"} 2",
        "tern_opportunities_submitted_total{result=\"duplicate\"} 2",
        "tern_grpc_requests_total{method=\"Pull\",code=\"OK\"} 2",
        "tern_model_info{version=\"none\"} 1",
        "tern_policy_info{version=",
    ] {
        assert!(scraped.contains(line), "{line} not in:\n{scraped}");
    }

    drop((users, opportunities, schedule, feedback, admin, channel));
    let exit = daemon.terminate().await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_invalid_argument_and_stale_acks_failed_precondition() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut feedback = FeedbackServiceClient::new(channel.clone());

    let e = opportunities
        .submit(pb::SubmitRequest {
            source: String::new(),
            opportunities: vec![opportunity("u1", "a", &["push"])],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("source"), "{e:?}");
    let e = opportunities
        .submit(pb::SubmitRequest {
            source: "x".into(),
            opportunities: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = schedule
        .pull(pb::PullRequest {
            holder: "h".into(),
            channels: vec!["push".into()],
            max_items: 0,
            lease: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max_items"));

    let e = users
        .upsert(pb::UpsertUsersRequest {
            users: vec![
                user("ok"),
                pb::User {
                    timezone: "Mars/Olympus".into(),
                    ..user("bad")
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("user 1") && e.message().contains("Mars/Olympus"));
    assert_eq!(
        db.store.user("ok").await.unwrap(),
        None,
        "a batch with a bad user stores nothing"
    );

    let e = feedback
        .report(pb::ReportRequest {
            outcomes: vec![pb::Outcome {
                user_id: "u1".into(),
                message_id: 1,
                kind: pb::OutcomeKind::Unspecified as i32,
                occurred_at: None,
                value: None,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = schedule
        .ack(pb::AckRequest {
            acks: vec![pb::AckItem {
                user_id: "u1".into(),
                item_id: 1,
                lease_token: "not-a-token".into(),
                status: pb::AckStatus::Sent as i32,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A real item, leased, then acked with a token that is not its own.
    opportunities
        .submit(pb::SubmitRequest {
            source: "x".into(),
            opportunities: vec![opportunity("u1", "a", &["push"])],
        })
        .await
        .unwrap();
    AdminServiceClient::new(channel.clone())
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap();
    let item = schedule
        .pull(pb::PullRequest {
            holder: "h".into(),
            channels: vec!["push".into()],
            max_items: 1,
            lease: None,
        })
        .await
        .unwrap()
        .into_inner()
        .items
        .remove(0);
    let e = schedule
        .ack(pb::AckRequest {
            acks: vec![pb::AckItem {
                user_id: item.user_id.clone(),
                item_id: item.item_id,
                lease_token: uuid::Uuid::new_v4().to_string(),
                status: pb::AckStatus::Sent as i32,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = schedule
        .extend_lease(pb::ExtendLeaseRequest {
            user_id: item.user_id.clone(),
            item_id: item.item_id,
            lease_token: uuid::Uuid::new_v4().to_string(),
            lease: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let extended = schedule
        .extend_lease(pb::ExtendLeaseRequest {
            user_id: item.user_id,
            item_id: item.item_id,
            lease_token: item.lease_token,
            lease: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(extended.lease_expires_at.unwrap().seconds > item.lease_expires_at.unwrap().seconds);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_policy_change_is_reported_and_the_last_good_bundle_keeps_serving() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let mut admin = AdminServiceClient::new(daemon.channel().await);
    let reader = admin.clone();
    let status = || {
        let mut admin = reader.clone();
        async move {
            admin
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let good = status().await.policy_version;

    std::fs::write(
        daemon.policies.join("bundle.yaml"),
        BUNDLE.replace("minValue: 0.0", "minValue: lots"),
    )
    .unwrap();
    let bad = wait_for(&status, |s| !s.last_reload_error.is_empty()).await;
    assert_eq!(
        bad.policy_version, good,
        "the last good bundle keeps serving"
    );
    assert!(
        bad.last_reload_error.contains("bundle.yaml:"),
        "{}",
        bad.last_reload_error
    );
    assert!(!bad.rejected_policy_version.is_empty());
    // Planning still works, under the good bundle.
    let plan = admin
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.policy_version, good);

    std::fs::write(
        daemon.policies.join("bundle.yaml"),
        BUNDLE.replace("minValue: 0.0", "minValue: 0.01"),
    )
    .unwrap();
    let fixed = wait_for(&status, |s| s.last_reload_error.is_empty()).await;
    assert_ne!(fixed.policy_version, good, "the corrected bundle is active");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM policy_versions")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        recorded, 2,
        "both good bundles are recorded, the bad one never"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_one_database_run_each_cron_firing_once() {
    let db = TestDb::new().await;
    let bundle = BUNDLE.replace(
        "metadata: {name: hourly}\nspec: {cron: \"0 0 * * * *\"",
        "metadata: {name: every-second}\nspec: {cron: \"* * * * * *\"",
    );
    assert!(bundle.contains("every-second"));
    let mut a = Daemon::start_with(&db, &bundle).await;
    let mut b = Daemon::start_with(&db, &bundle).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());

    let (runs, firings, planned): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT scheduled_for), count(plan_id) FROM cron_runs \
         WHERE job = 'every-second'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert!(
        runs >= 3,
        "{runs} runs in 4.5 s of an every-second schedule"
    );
    assert_eq!(runs, firings, "no firing claimed twice");
    let plans: i64 =
        sqlx::query_scalar("SELECT count(*) FROM plans WHERE trigger = 'every-second'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        plans, planned,
        "one plan per claimed firing, none without a claim"
    );
    assert!(planned >= runs - 2, "runs: {runs}, planned: {planned}");
}

/// Two replicas plan one full replan together: every page is published once, by one of
/// them, every user with open opportunities is planned exactly once (no item of the replan is
/// replaced by the replan itself), and the plan is published once its last page is.
#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_a_full_replan_and_plan_each_user_once() {
    let db = TestDb::new().await;
    let now = chrono::Utc::now();
    let opportunities: Vec<tern_core::NewOpportunity> = (0..2400)
        .map(|i| tern_core::NewOpportunity {
            user_id: format!("user-{:04}", i / 4),
            dedupe_key: format!("k{}", i % 4),
            source: "test".into(),
            template: "t".into(),
            category: "news".into(),
            priority: "normal".into(),
            channels: vec!["push".into()],
            signals: Default::default(),
            payload: Default::default(),
            created_at: now - chrono::TimeDelta::hours(1),
            expires_at: now + chrono::TimeDelta::hours(24),
        })
        .collect();
    db.store.copy_load(&[], &opportunities, now).await.unwrap();
    let a = Daemon::start_args(
        &db,
        BUNDLE,
        &["--holder", "a", "--page-opportunities", "100"],
    )
    .await;
    let b = Daemon::start_args(
        &db,
        BUNDLE,
        &["--holder", "b", "--page-opportunities", "100"],
    )
    .await;
    let (da, db_) = (
        a.service.as_ref().unwrap().daemon.clone(),
        b.service.as_ref().unwrap().daemon.clone(),
    );
    let (ra, rb) = tokio::join!(
        da.replan("manual", Vec::new()),
        db_.replan("manual", Vec::new())
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.plan_id, rb.plan_id, "both worked on one full replan");
    let plan_id = ra.plan_id;
    let pool = db.store.pool();
    let (pages, done, claims): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), sum(claims)::bigint FROM plan_pages WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (pages, done, claims),
        (24, 24, 24),
        "each page claimed and published once"
    );
    let by_holder = db.store.pages_by_holder(plan_id).await.unwrap();
    assert!(
        by_holder.iter().all(|(h, _)| h == "a" || h == "b"),
        "{by_holder:?}"
    );
    let (users, replaced): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT user_id), count(*) FILTER (WHERE state = 'superseded')          FROM schedule_items WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(replaced, 0, "a user planned twice in one replan");
    assert_eq!(users, 600, "every user has the replan's items");
    let planned: i64 = sqlx::query_scalar(
        "SELECT sum((stats->>'users')::bigint)::bigint FROM plan_pages WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        planned, 600,
        "the pages' users add up to the population once"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM plans WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(state, "published");
}

async fn pull(
    client: &mut ScheduleServiceClient<Channel>,
    holder: &str,
    max_items: u32,
    lease_seconds: i64,
) -> Vec<pb::LeasedItem> {
    client
        .pull(pb::PullRequest {
            holder: holder.into(),
            channels: vec!["push".into()],
            max_items,
            lease: Some(prost_types::Duration {
                seconds: lease_seconds,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

fn sent(item: &pb::LeasedItem, token: &str) -> pb::AckRequest {
    pb::AckRequest {
        acks: vec![pb::AckItem {
            user_id: item.user_id.clone(),
            item_id: item.item_id,
            lease_token: token.into(),
            status: pb::AckStatus::Sent as i32,
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_concurrent_pullers_never_share_an_item_and_each_is_sent_once() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let total = 3_000;
    let rows: Vec<pb::Opportunity> = (0..total)
        .map(|i| opportunity(&format!("u{}", i % 300), &format!("k{i}"), &["push"]))
        .collect();
    for chunk in rows.chunks(1_000) {
        let r = opportunities
            .submit(pb::SubmitRequest {
                source: "load".into(),
                opportunities: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.created as usize, chunk.len());
    }
    let plan = AdminServiceClient::new(channel.clone())
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.chosen_per_channel["push"], total as u64);

    let pullers: Vec<_> = (0..32)
        .map(|p| {
            let mut client = ScheduleServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let items = pull(&mut client, &format!("puller-{p}"), 20, 60).await;
                    if items.is_empty() {
                        return mine;
                    }
                    let acks = pb::AckRequest {
                        acks: items
                            .iter()
                            .map(|i| sent(i, &i.lease_token).acks.remove(0))
                            .collect(),
                    };
                    let outcomes = client.ack(acks).await.unwrap().into_inner().outcomes;
                    assert!(outcomes
                        .iter()
                        .all(|o| o.result == pb::AckResult::Acked as i32));
                    mine.extend(items.iter().map(|i| i.item_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut busy = 0;
    for p in pullers {
        let mine = p.await.unwrap();
        busy += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    let distinct: std::collections::HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), total, "every item handed out once");
    assert_eq!(distinct.len(), total, "no item handed to two pullers");
    assert!(busy > 16, "the work was shared: {busy} pullers got items");
    let (messages, opportunities_sent): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (user_id, opportunity_id)) FROM messages")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!((messages, opportunities_sent), (total as i64, total as i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_redelivered_and_the_late_ack_refused() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    OpportunityServiceClient::new(channel.clone())
        .submit(pb::SubmitRequest {
            source: "x".into(),
            opportunities: vec![opportunity("u1", "a", &["push"])],
        })
        .await
        .unwrap();
    AdminServiceClient::new(channel.clone())
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap();
    let mut slow = ScheduleServiceClient::new(channel.clone());
    let mut other = ScheduleServiceClient::new(channel.clone());
    let first = pull(&mut slow, "slow", 1, 1).remove_first().await;
    assert_eq!(first.attempt, 1);
    assert!(pull(&mut other, "other", 1, 60).await.is_empty(), "held");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let again = pull(&mut other, "other", 1, 60).remove_first().await;
    assert_eq!(again.item_id, first.item_id, "redelivered after expiry");
    assert_eq!(again.attempt, 2);
    assert_ne!(again.lease_token, first.lease_token);

    let late = slow
        .ack(sent(&first, &first.lease_token))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    let ok = other
        .ack(sent(&again, &again.lease_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outcomes[0].result, pb::AckResult::Acked as i32);
    let scraped = daemon.scrape();
    assert!(
        scraped.contains("tern_lease_expired_total 1\n"),
        "{scraped}"
    );
}

trait RemoveFirst {
    async fn remove_first(self) -> pb::LeasedItem;
}

impl<F: std::future::Future<Output = Vec<pb::LeasedItem>>> RemoveFirst for F {
    async fn remove_first(self) -> pb::LeasedItem {
        let mut items = self.await;
        assert_eq!(items.len(), 1, "{items:?}");
        items.remove(0)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_database_is_away_calls_are_unavailable_and_then_everything_resumes() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let submit = |key: &str| pb::SubmitRequest {
        source: "x".into(),
        opportunities: vec![opportunity("u1", key, &["push"])],
    };
    opportunities.submit(submit("before")).await.unwrap();
    AdminServiceClient::new(channel.clone())
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap();
    let item = pull(&mut schedule, "h", 1, 60).remove_first().await;
    schedule.ack(sent(&item, &item.lease_token)).await.unwrap();

    // The database goes away: no new connections, and every existing one is cut.
    let outside = tern_store::Store::connect_to_database(&db.url, "postgres")
        .await
        .unwrap();
    let name = db.name.clone();
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .execute(outside.pool())
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(outside.pool())
        .await
        .unwrap();
    let e = opportunities.submit(submit("during")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // It comes back; the daemon reconnects by itself and nothing acknowledged is lost.
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(outside.pool())
        .await
        .unwrap();
    let again = wait_for(
        || {
            let mut o = opportunities.clone();
            async move { o.submit(submit("after")).await.map(|r| r.into_inner()) }
        },
        |r| r.is_ok(),
    )
    .await
    .unwrap();
    assert_eq!(again.created, 1);
    let sent_messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(db.another_store().await.pool())
        .await
        .unwrap();
    assert_eq!(sent_messages, 1, "the ack before the outage is still there");
    // Health follows the database's answers: SERVING again within a few probes.
    wait_for_health(&channel, ServingStatus::Serving).await;
}

/// Polls `grpc.health.v1.Health/Check` (the whole server) until it reports `want`, for at most
/// 20 s; health is probed every 2 s by the daemon.
async fn wait_for_health(channel: &Channel, want: ServingStatus) {
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for _ in 0..200 {
        let status = health
            .clone()
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health did not become {want:?} within 20 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_database_is_unavailable_and_health_turns_not_serving() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let submit = |key: &str| pb::SubmitRequest {
        source: "x".into(),
        opportunities: vec![opportunity("u1", key, &["push"])],
    };
    opportunities.submit(submit("before")).await.unwrap();
    wait_for_health(&channel, ServingStatus::Serving).await;

    // Someone drops the daemon's database under it.
    let outside = tern_store::Store::connect_to_database(&db.url, "postgres")
        .await
        .unwrap();
    outside.drop_database(&db.name).await.unwrap();

    // Every call is UNAVAILABLE (retryable), never INTERNAL; once the pool's connections are
    // gone the reason is the database that does not exist.
    let e = wait_for(
        || {
            let mut o = opportunities.clone();
            async move { o.submit(submit("during")).await.unwrap_err() }
        },
        |e| e.code() != Code::Unavailable || e.message().contains("does not exist"),
    )
    .await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    eprintln!(
        "after DROP DATABASE: Submit -> {:?}: {}",
        e.code(),
        e.message()
    );
    for key in ["again", "and again"] {
        let e = opportunities.submit(submit(key)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    let e = ScheduleServiceClient::new(channel.clone())
        .pull(pb::PullRequest {
            holder: "h".into(),
            channels: vec!["push".into()],
            max_items: 1,
            lease: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    // Load balancers stop sending work here, but the process is alive: a liveness probe
    // must not restart it for what a restart cannot fix.
    wait_for_health(&channel, ServingStatus::NotServing).await;
    let liveness = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: tern_server::LIVENESS.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(liveness, ServingStatus::Serving as i32);
    outside.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_request_is_refused_before_it_is_decoded() {
    let db = TestDb::new().await;
    let daemon = Daemon::start_args(&db, BUNDLE, &["--max-message-bytes", "4096"]).await;
    let mut opportunities = OpportunityServiceClient::new(daemon.channel().await);
    let rows: Vec<pb::Opportunity> = (0..100)
        .map(|i| opportunity("u1", &format!("k{i}"), &["push"]))
        .collect();
    let e = opportunities
        .submit(pb::SubmitRequest {
            source: "x".into(),
            opportunities: rows,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limit of 4096 bytes"), "{e:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM opportunities")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_budget_counts_what_earlier_plans_already_sent() {
    let db = TestDb::new().await;
    let bundle = BUNDLE.replace(
        "metadata: {name: push}\nspec: {}",
        "metadata: {name: push}\nspec: {budget: {max: 3, per: 1d}}",
    );
    assert!(bundle.contains("max: 3"));
    let daemon = Daemon::start_with(&db, &bundle).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let submit = |round: usize| pb::SubmitRequest {
        source: "x".into(),
        opportunities: (0..5)
            .map(|u| opportunity(&format!("u{u}"), &format!("r{round}"), &["push"]))
            .collect(),
    };

    opportunities.submit(submit(1)).await.unwrap();
    let first = admin
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.chosen_per_channel.get("push").copied().unwrap_or(0),
        3
    );
    let items = pull(&mut schedule, "h", 10, 60).await;
    assert_eq!(items.len(), 3);
    for i in &items {
        schedule.ack(sent(i, &i.lease_token)).await.unwrap();
    }

    // Three were sent today: the next plan has nothing left to spend on push.
    opportunities.submit(submit(2)).await.unwrap();
    let second = admin
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.chosen_per_channel.get("push").copied().unwrap_or(0),
        0,
        "{second:?}"
    );
    assert!(
        second.suppressed_per_reason.contains_key("budget"),
        "{second:?}"
    );
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_each_client_pulls_only_its_channels_and_health_needs_none() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "# name token channels\npush-sender push-0123456789abcdef push\nops ops-0123456789abcdef0 *\n",
    )
    .unwrap();
    let daemon = Daemon::start_args(&db, BUNDLE, &["--tokens", tokens.to_str().unwrap()]).await;
    let channel = daemon.channel().await;
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let pull = |channels: &[&str], token: Option<&str>| {
        let message = pb::PullRequest {
            holder: "h".into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            max_items: 1,
            lease: None,
        };
        match token {
            Some(t) => with_token(message, t),
            None => tonic::Request::new(message),
        }
    };

    let e = schedule.pull(pull(&["push"], None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = schedule
        .pull(pull(&["push"], Some("push-0123456789abcdeX")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "a near miss is no token");
    let e = schedule
        .pull(pull(&["push", "email"], Some("push-0123456789abcdef")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("email"), "{e:?}");
    schedule
        .pull(pull(&["push"], Some("push-0123456789abcdef")))
        .await
        .unwrap();
    schedule
        .pull(pull(&["push", "email"], Some("ops-0123456789abcdef0")))
        .await
        .unwrap();
    let e = AdminServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_scopes_every_service_refuses_a_method_the_token_lacks() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-scopes-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "# name token scopes
         sender sender-0123456789abcdef pull:push,ack,report
         upstream upstream-0123456789abcdef submit,users
         ops ops-0123456789abcdef admin,read
         old-sender old-0123456789abcdef push
",
    )
    .unwrap();
    let daemon = Daemon::start_args(&db, BUNDLE, &["--tokens", tokens.to_str().unwrap()]).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut feedback = FeedbackServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    const SENDER: &str = "sender-0123456789abcdef";
    const UPSTREAM: &str = "upstream-0123456789abcdef";
    const OPS: &str = "ops-0123456789abcdef";
    const OLD: &str = "old-0123456789abcdef";
    let pull_push = || pb::PullRequest {
        holder: "h".into(),
        channels: vec!["push".into()],
        max_items: 1,
        lease: None,
    };

    // One refusal per scope, each from the service that method belongs to.
    let mut denials: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
    let submit = pb::SubmitRequest {
        source: "x".into(),
        opportunities: vec![opportunity("u1", "k", &["push"])],
    };
    let r = opportunities
        .submit(with_token(submit.clone(), SENDER))
        .await;
    denials.push(("OpportunityService/Submit as sender", r.map(drop)));
    let r = schedule.pull(with_token(pull_push(), UPSTREAM)).await;
    denials.push(("ScheduleService/Pull as upstream", r.map(drop)));
    let r = schedule
        .ack(with_token(pb::AckRequest { acks: vec![] }, OPS))
        .await;
    denials.push(("ScheduleService/Ack as ops", r.map(drop)));
    let r = feedback
        .report(with_token(pb::ReportRequest { outcomes: vec![] }, UPSTREAM))
        .await;
    denials.push(("FeedbackService/Report as upstream", r.map(drop)));
    let r = users
        .upsert(with_token(
            pb::UpsertUsersRequest {
                users: vec![user("u1")],
            },
            SENDER,
        ))
        .await;
    denials.push(("UserService/Upsert as sender", r.map(drop)));
    let r = admin
        .replan(with_token(pb::ReplanRequest::default(), SENDER))
        .await;
    denials.push(("AdminService/Replan as sender", r.map(drop)));
    let r = admin
        .get_status(with_token(pb::GetStatusRequest {}, UPSTREAM))
        .await;
    denials.push(("AdminService/GetStatus as upstream", r.map(drop)));
    let r = schedule
        .get_user_schedule(with_token(
            pb::GetUserScheduleRequest {
                user_id: "u1".into(),
            },
            SENDER,
        ))
        .await;
    denials.push(("ScheduleService/GetUserSchedule as sender", r.map(drop)));
    let r = admin
        .replan(with_token(pb::ReplanRequest::default(), OLD))
        .await;
    denials.push((
        "AdminService/Replan as old-sender (old format)",
        r.map(drop),
    ));
    for (call, result) in &denials {
        let e = result.as_ref().expect_err(call);
        eprintln!("denied: {call} -> {:?}: {}", e.code(), e.message());
        assert_eq!(e.code(), Code::PermissionDenied, "{call}: {e:?}");
        assert!(e.message().starts_with("client \""), "{call}: {e:?}");
        assert!(
            e.message().contains("may not call tern.v1."),
            "{call}: {e:?}"
        );
    }
    let message = |i: usize| denials[i].1.as_ref().unwrap_err().message().to_string();
    let lacking = [
        "submit",
        "pull:CHANNEL",
        "ack",
        "report",
        "users",
        "admin",
        "read",
        "read",
    ];
    for (i, scope) in lacking.iter().enumerate() {
        let m = message(i);
        assert!(m.contains(&format!("lacks the {scope} scope")), "{m}");
    }
    assert_eq!(
        message(5),
        "client \"sender\" may not call tern.v1.AdminService/Replan: it lacks the admin scope \
         (it has pull:push,ack,report)"
    );

    // And each does what its scopes allow.
    users
        .upsert(with_token(
            pb::UpsertUsersRequest {
                users: vec![user("u1")],
            },
            UPSTREAM,
        ))
        .await
        .unwrap();
    opportunities
        .submit(with_token(submit, UPSTREAM))
        .await
        .unwrap();
    admin
        .replan(with_token(pb::ReplanRequest::default(), OPS))
        .await
        .unwrap();
    admin
        .get_status(with_token(pb::GetStatusRequest {}, OPS))
        .await
        .unwrap();
    let pulled = schedule
        .pull(with_token(pull_push(), SENDER))
        .await
        .unwrap()
        .into_inner();
    let item = pulled
        .items
        .first()
        .expect("the replan scheduled u1's push");
    let acked = schedule
        .ack(with_token(
            pb::AckRequest {
                acks: vec![pb::AckItem::sent(item)],
            },
            SENDER,
        ))
        .await
        .unwrap();
    assert_eq!(acked.into_inner().outcomes.len(), 1);
    schedule.pull(with_token(pull_push(), OLD)).await.unwrap();
    let e = schedule
        .pull(with_token(
            pb::PullRequest {
                channels: vec!["email".into()],
                ..pull_push()
            },
            SENDER,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("may not pull channel \"email\""),
        "{e:?}"
    );
    // No token at all is UNAUTHENTICATED; reflection needs none.
    let e = admin.get_status(pb::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!list_services_v1(channel.clone()).await.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// A function listing the services that one version of `grpc.reflection` reports: the two
/// versions' generated types differ only in their module.
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(channel: Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = ServerReflectionClient::new(channel)
                .server_reflection_info(futures::stream::iter(vec![request]))
                .await
                .unwrap()
                .into_inner();
            let reply = replies.message().await.unwrap().expect("a reply");
            match reply.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!("not a list of services: {other:?}"),
            }
        }
    };
}

list_services!(list_services_v1, v1);
list_services!(list_services_v1alpha, v1alpha);

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_and_v1alpha_both_list_the_services() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let channel = daemon.channel().await;
    for services in [
        list_services_v1(channel.clone()).await,
        list_services_v1alpha(channel.clone()).await,
    ] {
        for name in [
            "tern.v1.OpportunityService",
            "tern.v1.ScheduleService",
            "tern.v1.UserService",
            "tern.v1.FeedbackService",
            "tern.v1.AdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(services.iter().any(|s| s == name), "{name}: {services:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_certificate_the_api_is_served_over_tls_only() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let daemon = Daemon::start_args(
        &db,
        BUNDLE,
        &[
            "--tls-cert",
            dir.join("cert.pem").to_str().unwrap(),
            "--tls-key",
            dir.join("key.pem").to_str().unwrap(),
        ],
    )
    .await;
    let port = daemon.address.rsplit(':').next().unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection with the daemon's certificate");
    let status = AdminServiceClient::new(channel)
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.health, "SERVING");
    // Plaintext gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", daemon.address))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(AdminServiceClient::new(plain)
            .get_status(pb::GetStatusRequest {})
            .await
            .is_err());
    }
    std::fs::remove_dir_all(&dir).ok();
}

async fn wait_for<T, F, Fut>(get: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..200 {
        let v = get().await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 10 s");
}

const GENERATORS: &str = r#"
---
apiVersion: tern/v1
kind: Generator
metadata: {name: new-release}
spec:
  on: {event: artist_release}
  when: "event.popularity > 0.3 && event.artist_id in user.followed_artists"
  message: {template: new_release, category: content}
  channels: [push, email]
  ttl: 48h
  dedupeKey: "'release:' + event.release_id"
  signals: {popularity: "event.popularity"}
---
apiVersion: tern/v1
kind: Generator
metadata: {name: password-reset}
spec:
  on: {event: password_reset_requested}
  message: {template: password_reset, category: account}
  channels: [email]
  ttl: 1h
  priority: transactional
---
apiVersion: tern/v1
kind: Generator
metadata: {name: gold-digest}
spec:
  schedule: "* * * * * *"
  segment: "user.tier == 'gold' && user.channels.email.reachable"
  message: {template: digest, category: content}
  channels: [email]
  ttl: 2d
  dedupeKey: "'digest:' + run.time"
"#;

fn event(kind: &str, id: &str, users: &[&str]) -> pb::Event {
    pb::Event {
        r#type: kind.into(),
        event_id: id.into(),
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generators_turn_events_and_cron_runs_into_opportunities_once() {
    let db = TestDb::new().await;
    let daemon = Daemon::start_with(&db, &format!("{BUNDLE}{GENERATORS}")).await;
    let channel = daemon.channel().await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let email = |reachable| pb::ChannelState {
        channel: "email".into(),
        reachable,
        opted_out: false,
    };
    users
        .upsert(pb::UpsertUsersRequest {
            users: vec![
                pb::User {
                    attributes_json: r#"{"tier": "gold", "followed_artists": ["a1"]}"#.into(),
                    channels: vec![email(true)],
                    ..user("fan")
                },
                pb::User {
                    attributes_json: r#"{"tier": "silver", "followed_artists": []}"#.into(),
                    channels: vec![email(true)],
                    ..user("other")
                },
                pb::User {
                    attributes_json: r#"{"tier": "gold", "followed_artists": []}"#.into(),
                    channels: vec![email(false)],
                    ..user("bounced")
                },
            ],
        })
        .await
        .unwrap();

    // The fan follows the artist; the other user does not; nobody knows `stranger`, whose
    // condition cannot be evaluated (no `followed_artists`): an error for that user only.
    let release = pb::Event {
        numbers: [("popularity".to_string(), 0.5)].into(),
        strings: [
            ("artist_id".to_string(), "a1".to_string()),
            ("release_id".to_string(), "r1".to_string()),
        ]
        .into(),
        ..event("artist_release", "ev-1", &["fan", "other", "stranger"])
    };
    let reply = opportunities
        .submit_events(pb::SubmitEventsRequest {
            events: vec![release.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.opportunities_created, 1, "{reply:?}");
    assert_eq!(reply.evaluation_errors, 1, "{reply:?}");
    assert!(
        reply.error_samples[0].contains("new-release") && reply.error_samples[0].contains("when"),
        "{:?}",
        reply.error_samples
    );
    let (key, source, signals): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT dedupe_key, source, signals FROM opportunities \
         WHERE user_id = 'fan' AND source = 'generator:new-release'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (key.as_str(), source.as_str()),
        ("release:r1", "generator:new-release")
    );
    assert_eq!(signals["popularity"], 0.5);

    // A retried event (alone, or twice in one request) creates nothing.
    let reply = opportunities
        .submit_events(pb::SubmitEventsRequest {
            events: vec![release.clone(), release.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.opportunities_created, reply.duplicate_events),
        (0, 2)
    );

    // No condition: even a user tern does not know yet gets the password reset.
    let reply = opportunities
        .submit_events(pb::SubmitEventsRequest {
            events: vec![
                event("password_reset_requested", "reset-1", &["stranger"]),
                event("password_reset_requested", "reset-2", &["fan", "fan"]),
                event("nobody_listens", "other-1", &["fan"]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.opportunities_created, 2, "{reply:?}");
    let reset: (String, String) =
        sqlx::query_as("SELECT priority, dedupe_key FROM opportunities WHERE user_id = 'stranger'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        reset,
        ("transactional".into(), "password-reset:reset-1".into())
    );

    // Malformed events are refused whole, and nothing is recorded.
    for (bad, says) in [
        (event("Not A Name", "x-1", &["fan"]), "type"),
        (event("artist_release", "", &["fan"]), "event_id"),
        (event("artist_release", "x-2", &[]), "user_ids"),
        (
            pb::Event {
                numbers: [("popularity".to_string(), f64::NAN)].into(),
                ..event("artist_release", "x-3", &["fan"])
            },
            "finite",
        ),
    ] {
        let err = opportunities
            .submit_events(pb::SubmitEventsRequest {
                events: vec![event("password_reset_requested", "ok-1", &["fan"]), bad],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(recorded, 4, "ev-1, reset-1, reset-2, other-1");

    // The every-second digest reaches the gold user with a reachable email only, once per firing.
    let digests = wait_for(
        || async {
            sqlx::query_as::<_, (String, String)>(
                "SELECT user_id, dedupe_key FROM opportunities WHERE source = 'generator:gold-digest'",
            )
            .fetch_all(db.store.pool())
            .await
            .unwrap()
        },
        |rows| rows.len() >= 2,
    )
    .await;
    assert!(digests.iter().all(|(u, _)| u == "fan"), "{digests:?}");
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cron_runs WHERE job = 'generator/gold-digest'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert!(runs >= 2, "{runs} claimed runs");

    let status = AdminServiceClient::new(channel)
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let next: Vec<&str> = status.next_runs.iter().map(|r| r.replan.as_str()).collect();
    assert!(next.contains(&"generator/gold-digest"), "{next:?}");
    let metrics = daemon.scrape();
    assert!(
        metrics.contains("tern_generator_opportunities_total{generator=\"new-release\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tern_generator_errors_total{generator=\"new-release\"} 1"));
}

fn at(s: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_simulated_clock_advance_clock_moves_time_and_runs_what_fell_due() {
    let db = TestDb::new().await;
    let daemon =
        Daemon::start_args(&db, BUNDLE, &["--simulate-from", "2026-03-02T00:30:00Z"]).await;
    let channel = daemon.channel().await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let plans = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM plans")
            .fetch_one(db.store.pool())
            .await
            .unwrap()
    };
    // Nothing runs by itself: time stands still until the driver moves it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(plans().await, 0);

    // 00:30 → 03:10: the hourly replan fell due three times and runs once, for 03:00.
    let reply = admin
        .advance_clock(pb::AdvanceClockRequest {
            to: Some(at("2026-03-02T03:10:00Z")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.now, Some(at("2026-03-02T03:10:00Z")));
    let ran: Vec<(&str, Option<prost_types::Timestamp>)> = reply
        .ran
        .iter()
        .map(|r| (r.replan.as_str(), r.next_run))
        .collect();
    assert_eq!(ran, [("hourly", Some(at("2026-03-02T03:00:00Z")))]);
    assert_eq!(plans().await, 1);
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT started_at FROM plans")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(started.to_rfc3339(), "2026-03-02T03:10:00+00:00");

    // Handlers read the same clock: an opportunity without created_at is created "now".
    OpportunityServiceClient::new(channel.clone())
        .submit(pb::SubmitRequest {
            source: "test".into(),
            opportunities: vec![opportunity("u1", "k1", &["push"])],
        })
        .await
        .unwrap();
    let created: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM opportunities")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(created.to_rfc3339(), "2026-03-02T03:10:00+00:00");

    // Not yet another firing; then backwards and a missing time are refused.
    let reply = admin
        .advance_clock(pb::AdvanceClockRequest {
            to: Some(at("2026-03-02T03:50:00Z")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.ran.is_empty());
    let err = admin
        .advance_clock(pb::AdvanceClockRequest {
            to: Some(at("2026-03-02T03:00:00Z")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("back"), "{}", err.message());
    let err = admin
        .advance_clock(pb::AdvanceClockRequest { to: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(plans().await, 1);
}

/// The jobs `tern serve` has claimed, as `(job, firing)`, in firing order.
async fn cron_runs(db: &TestDb) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>)>(
        "SELECT job, scheduled_for FROM cron_runs ORDER BY scheduled_for, job",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(job, at)| (job, at.format("%m-%dT%H:%M").to_string()))
    .collect()
}

async fn advance(channel: &Channel, to: &str) {
    AdminServiceClient::new(channel.clone())
        .advance_clock(pb::AdvanceClockRequest { to: Some(at(to)) })
        .await
        .unwrap();
}

/// A job starts at its next firing after it appears, like a Kubernetes CronJob: neither a
/// fresh database nor a bundle hot-added after today's firing runs it at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_added_after_its_firing_time_waits_for_the_next_one() {
    let db = TestDb::new().await;
    let morning = BUNDLE.replace(
        "metadata: {name: hourly}\nspec: {cron: \"0 0 * * * *\"",
        "metadata: {name: morning}\nspec: {cron: \"0 0 9 * * *\"",
    );
    assert!(morning.contains("morning"));
    // A fresh database at 13:38: the 09:00 firing has passed, so nothing runs.
    let daemon =
        Daemon::start_args(&db, &morning, &["--simulate-from", "2026-03-02T13:38:00Z"]).await;
    let channel = daemon.channel().await;
    advance(&channel, "2026-03-02T14:00:00Z").await;
    assert_eq!(cron_runs(&db).await, Vec::<(String, String)>::new());

    // A scheduled generator hot-added at 14:00 with a 09:00 schedule: not run today either.
    let digest = "---\napiVersion: tern/v1\nkind: Generator\nmetadata: {name: digest}\nspec:\n  schedule: \"0 0 9 * * *\"\n  segment: \"true\"\n  message: {template: digest, category: content}\n  channels: [email]\n  ttl: 1d\n";
    let admin = AdminServiceClient::new(channel.clone());
    let before = admin
        .clone()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .policy_version;
    std::fs::write(
        daemon.policies.join("bundle.yaml"),
        format!("{morning}{digest}"),
    )
    .unwrap();
    let status = || {
        let mut admin = admin.clone();
        async move {
            admin
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    wait_for(status, |s| s.policy_version != before).await;
    advance(&channel, "2026-03-02T23:00:00Z").await;
    assert_eq!(cron_runs(&db).await, Vec::<(String, String)>::new());

    // Tomorrow at 09:00 both run, once each.
    advance(&channel, "2026-03-03T09:30:00Z").await;
    assert_eq!(
        cron_runs(&db).await,
        [
            ("generator/digest".to_string(), "03-03T09:00".to_string()),
            ("morning".to_string(), "03-03T09:00".to_string())
        ]
    );
}

/// A firing missed while no daemon ran is caught up once when one comes back, if the
/// document's `startingDeadline` allows it, and skipped otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn a_firing_missed_while_down_is_caught_up_once_within_its_starting_deadline() {
    let db = TestDb::new().await;
    let bundle = BUNDLE.replace(
        "metadata: {name: hourly}\nspec: {cron: \"0 0 * * * *\", horizon: 24h, exploration: 0}",
        "metadata: {name: hourly}\nspec: {cron: \"0 0 * * * *\", horizon: 24h, exploration: 0, startingDeadline: 2h}\n---\napiVersion: tern/v1\nkind: Replan\nmetadata: {name: strict}\nspec: {cron: \"0 30 * * * *\", horizon: 24h}\n---\napiVersion: tern/v1\nkind: Replan\nmetadata: {name: short}\nspec: {cron: \"0 15 * * * *\", horizon: 24h, startingDeadline: 20m}",
    );
    assert!(bundle.contains("startingDeadline: 2h"));
    let mut first =
        Daemon::start_args(&db, &bundle, &["--simulate-from", "2026-03-02T08:50:00Z"]).await;
    advance(&first.channel().await, "2026-03-02T09:35:00Z").await;
    let ran_before = [
        ("hourly".to_string(), "03-02T09:00".to_string()),
        ("short".to_string(), "03-02T09:15".to_string()),
        ("strict".to_string(), "03-02T09:30".to_string()),
    ];
    assert_eq!(cron_runs(&db).await, ran_before);
    assert!(first.terminate().await.success());

    // Down from 09:35 to 11:50. hourly missed 10:00 and 11:00: the latest, 50 min late, is
    // within its 2 h and runs once. strict missed 10:30 and 11:30 and has no deadline; short
    // missed 10:15 and 11:15, 35 min late, more than its 20 min: both are skipped.
    let second =
        Daemon::start_args(&db, &bundle, &["--simulate-from", "2026-03-02T11:50:00Z"]).await;
    let channel = second.channel().await;
    advance(&channel, "2026-03-02T11:51:00Z").await;
    let mut expected = ran_before.to_vec();
    expected.insert(1, ("hourly".to_string(), "03-02T11:00".to_string()));
    expected.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    assert_eq!(cron_runs(&db).await, expected);
    // From here on every job runs at its firings.
    advance(&channel, "2026-03-02T12:31:00Z").await;
    let runs = cron_runs(&db).await;
    assert_eq!(runs.len(), 7, "{runs:?}");
    for job in ["hourly", "short", "strict"] {
        assert!(
            runs.iter()
                .any(|(j, at)| j == job && at.starts_with("03-02T12")),
            "{runs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_system_clock_advance_clock_is_refused() {
    let db = TestDb::new().await;
    let daemon = Daemon::start(&db).await;
    let err = AdminServiceClient::new(daemon.channel().await)
        .advance_clock(pb::AdvanceClockRequest {
            to: Some(at("2030-01-01T00:00:00Z")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("--simulate-from"),
        "{}",
        err.message()
    );
}

// ---------------------------------------------------------------------------------------------
// The delivery contract: what a sender gets to render, and bad input answered precisely.

const CONTRACT_BUNDLE: &str = r#"
---
apiVersion: tern/v1
kind: Category
metadata: {name: content}
---
apiVersion: tern/v1
kind: Category
metadata: {name: account}
---
apiVersion: tern/v1
kind: Generator
metadata: {name: new-release}
spec:
  on: {event: artist_release}
  message: {template: new_release, category: content}
  channels: [push]
  ttl: 48h
  dedupeKey: "'release:' + event.release_id"
  payload:
    release_id: "event.release_id"
    title: "event.title"
    popularity: "event.popularity"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_event_becomes_an_opportunity_whose_payload_dedupe_key_and_locale_the_sender_pulls() {
    let db = TestDb::new().await;
    let daemon = Daemon::start_with(&db, &format!("{BUNDLE}{CONTRACT_BUNDLE}")).await;
    let channel = daemon.channel().await;
    let mut users = UserServiceClient::new(channel.clone());
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    users
        .upsert(pb::UpsertUsersRequest {
            users: vec![pb::User {
                locale: "sv-SE".into(),
                ..user("fan")
            }],
        })
        .await
        .unwrap();

    let release = pb::Event {
        strings: [
            ("release_id".to_string(), "r-77".to_string()),
            ("title".to_string(), "Blå himmel".to_string()),
        ]
        .into(),
        numbers: [("popularity".to_string(), 0.5)].into(),
        ..event("artist_release", "ev-77", &["fan", "fan"])
    };
    let reply = opportunities
        .submit_events(pb::SubmitEventsRequest {
            events: vec![release.clone(), release],
        })
        .await
        .unwrap()
        .into_inner();
    // The reply says what each event created, in request order.
    assert_eq!(reply.results.len(), 2, "{reply:?}");
    let first = &reply.results[0];
    assert_eq!(first.event_id, "ev-77");
    assert!(!first.duplicate_event);
    let [made] = first.opportunities.as_slice() else {
        panic!("one opportunity (the user is named twice): {first:?}")
    };
    assert_eq!(
        (made.generator.as_str(), made.user_id.as_str()),
        ("new-release", "fan")
    );
    assert_eq!(made.dedupe_key, "release:r-77");
    assert!(made.opportunity_id > 0 && !made.duplicate);
    assert!(reply.results[1].duplicate_event && reply.results[1].opportunities.is_empty());

    admin.replan(pb::ReplanRequest::default()).await.unwrap();
    let items = pull(&mut schedule, "sender", 10, 60).await;
    let [item] = items.as_slice() else {
        panic!("one item: {items:?}")
    };
    assert_eq!(item.opportunity_id, made.opportunity_id);
    assert_eq!(item.dedupe_key, "release:r-77");
    assert_eq!(item.locale, "sv-SE");
    assert_eq!(
        item.payload,
        [
            ("release_id".to_string(), "r-77".to_string()),
            ("title".to_string(), "Blå himmel".to_string()),
            ("popularity".to_string(), "0.5".to_string()),
        ]
        .into()
    );
    let scheduled = schedule
        .get_user_schedule(pb::GetUserScheduleRequest {
            user_id: "fan".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(scheduled[0].payload, item.payload);
    assert_eq!(scheduled[0].dedupe_key, "release:r-77");

    // A submitted payload travels the same way; a user without a locale gets an empty one.
    users
        .upsert(pb::UpsertUsersRequest {
            users: vec![user("plain")],
        })
        .await
        .unwrap();
    let reply = opportunities
        .submit(pb::SubmitRequest {
            source: "orders".into(),
            opportunities: vec![pb::Opportunity {
                payload: [("order".to_string(), "A-1".to_string())].into(),
                ..opportunity("plain", "order:A-1", &["push"])
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.created, 1, "{reply:?}");
    admin
        .replan(pb::ReplanRequest {
            user_ids: vec!["plain".into()],
        })
        .await
        .unwrap();
    let items = pull(&mut schedule, "sender", 10, 60).await;
    let [item] = items.as_slice() else {
        panic!("one item: {items:?}")
    };
    assert_eq!(item.payload["order"], "A-1");
    assert_eq!(
        (item.locale.as_str(), item.dedupe_key.as_str()),
        ("", "order:A-1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_naming_what_the_policy_does_not_declare_is_refused_alone() {
    let db = TestDb::new().await;
    let daemon = Daemon::start_with(&db, &format!("{BUNDLE}{CONTRACT_BUNDLE}")).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let reply = opportunities
        .submit(pb::SubmitRequest {
            source: "upstream".into(),
            opportunities: vec![
                pb::Opportunity {
                    priority: "urgent".into(),
                    ..opportunity("u1", "a", &["push"])
                },
                opportunity("u1", "b", &["sms"]),
                pb::Opportunity {
                    category: "promo".into(),
                    ..opportunity("u1", "c", &["push"])
                },
                pb::Opportunity {
                    template: "t".repeat(129),
                    ..opportunity("u1", "d", &["push"])
                },
                pb::Opportunity {
                    category: "c".repeat(64),
                    ..opportunity("u1", "e", &["push"])
                },
                opportunity("u1", "ok", &["push", "email"]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.created, 1, "{reply:?}");
    let reasons: Vec<&str> = reply.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "priority \"urgent\" is not a priority class; use one of: transactional, high, normal, low",
            "channel \"sms\" is not declared by the active policy; declared: email, push",
            "category \"promo\" is not declared by the active policy; declared: account, content",
            "template must be 1 to 128 bytes",
            "category \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\" is not a valid name: use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter",
        ]
    );
}

/// A small deterministic generator of hostile input.
struct Hostile(tern_core::SplitMix64);

impl Hostile {
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.0.below(xs.len())].clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.0.next_f64() < p
    }

    /// A string that is wrong half the time: empty, a NUL, too long, not a name, random
    /// characters, an undeclared channel.
    fn text(&mut self, good: &str) -> String {
        if self.chance(0.5) {
            return good.into();
        }
        match self.0.below(8) {
            0 => String::new(),
            1 => format!("{good}\0"),
            2 => "\0".into(),
            3 => "x".repeat(600),
            4 => "n".repeat(64),
            5 => "Push!".into(),
            6 => (0..self.0.below(20))
                .map(|_| char::from_u32(self.0.below(0x2FFF) as u32 + 1).unwrap_or('?'))
                .collect(),
            _ => "sms".into(),
        }
    }

    fn time(&mut self) -> Option<prost_types::Timestamp> {
        if self.chance(0.4) {
            return Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            });
        }
        let seconds = self.pick(&[
            -220_000_000_000,
            253_402_300_800,
            i64::MIN,
            i64::MAX,
            -62_135_596_801,
            0,
            1_790_000_000,
        ]);
        let nanos = self.pick(&[0, -1, 1_000_000_000, i32::MAX]);
        self.chance(0.9)
            .then_some(prost_types::Timestamp { seconds, nanos })
    }

    fn duration(&mut self) -> Option<prost_types::Duration> {
        if self.chance(0.4) {
            return Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            });
        }
        let seconds = self.pick(&[-5, 0, 1, 30, 3_600, 3_601, i64::MAX, i64::MIN]);
        let nanos = self.pick(&[0, -1, 999_999_999, i32::MAX]);
        self.chance(0.8)
            .then_some(prost_types::Duration { seconds, nanos })
    }

    fn json(&mut self) -> String {
        if self.chance(0.4) {
            return r#"{"tier": "gold", "n": [1, 2.5, null]}"#.into();
        }
        self.pick(&[
            r#"{"a": "\u0000"}"#.to_string(),
            r#"{"k\u0000": 1}"#.to_string(),
            r#"{"deep": [[[[["\u0000"]]]]]}"#.to_string(),
            "[1, 2]".to_string(),
            "{".to_string(),
            "null".to_string(),
            "[".repeat(5000),
            r#"{"tier": "gold"}"#.to_string(),
            String::new(),
        ])
    }

    fn number(&mut self) -> f64 {
        self.pick(&[f64::NAN, f64::INFINITY, -0.0, 1e308, 0.5])
    }

    fn opportunity(&mut self, i: usize) -> pb::Opportunity {
        let mut o = opportunity(
            &self.text("u1"),
            &self.text(&format!("k{i}")),
            &[self.text("push").as_str()],
        );
        o.template = self.text("tpl");
        o.category = self.text("content");
        o.priority = self.text("normal");
        if self.chance(0.5) {
            o.created_at = self.time();
        }
        if self.chance(0.3) {
            o.ttl = None;
            o.expires_at = self.time();
        } else if self.chance(0.3) {
            o.ttl = self.duration();
        }
        if self.chance(0.3) {
            o.signals.insert(self.text("s"), self.number());
        }
        if self.chance(0.3) {
            o.payload.insert(self.text("p"), self.text("v"));
        }
        if self.chance(0.05) {
            o.payload = (0..70).map(|k| (format!("k{k}"), "v".into())).collect();
        }
        o
    }
}

/// Hundreds of malformed and random requests at every RPC of a real server: none is answered
/// INTERNAL or UNKNOWN, the server never falls over, and the valid row hidden in each Submit
/// batch is stored.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_at_every_rpc_get_precise_codes_and_valid_rows_are_stored() {
    let db = TestDb::new().await;
    let daemon = Daemon::start_with(&db, &format!("{BUNDLE}{CONTRACT_BUNDLE}")).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut feedback = FeedbackServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut h = Hostile(tern_core::SplitMix64::new(14));
    let mut codes: std::collections::BTreeMap<(&str, String), u32> = Default::default();
    let mut tally = |rpc: &'static str, code: Code| {
        assert!(
            !matches!(code, Code::Internal | Code::Unknown),
            "{rpc} answered {code:?}"
        );
        *codes.entry((rpc, format!("{code:?}"))).or_default() += 1;
    };
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    const ROUNDS: usize = 60;
    let mut valid_rows = 0;

    for round in 0..ROUNDS {
        // Submit: a batch of hostile rows with one valid row among them.
        let mut rows: Vec<pb::Opportunity> = (0..h.0.below(6)).map(|i| h.opportunity(i)).collect();
        let at = h.0.below(rows.len() + 1);
        rows.insert(
            at,
            opportunity("fuzz", &format!("valid-{round}"), &["push"]),
        );
        let source = if h.chance(0.1) {
            h.text("src")
        } else {
            "fuzz".into()
        };
        match opportunities
            .submit(pb::SubmitRequest {
                source: source.clone(),
                opportunities: rows,
            })
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                assert!(
                    matches!(
                        reply.results[at].result,
                        Some(pb::row_result::Result::CreatedId(_))
                    ),
                    "the valid row of round {round} was not stored: {reply:?}"
                );
                valid_rows += 1;
                tally("Submit", Code::Ok);
            }
            Err(s) => {
                assert_ne!(source, "fuzz", "a batch with a good source failed: {s:?}");
                tally("Submit", s.code());
            }
        }

        // SubmitEvents.
        let mut e = event(
            &h.text("artist_release"),
            &h.text(&format!("ev{round}")),
            &[],
        );
        e.user_ids = (0..h.0.below(3)).map(|_| h.text("u1")).collect();
        e.strings.insert(h.text("release_id"), h.text("r1"));
        e.numbers.insert(h.text("popularity"), h.number());
        e.occurred_at = h.time();
        let r = opportunities
            .submit_events(pb::SubmitEventsRequest { events: vec![e] })
            .await;
        tally("SubmitEvents", code(r.map(|_| ())));

        // Upsert.
        let u = pb::User {
            user_id: h.text("u1"),
            timezone: h
                .pick(&["UTC", "UTC", "Mars/Olympus", "Europe/Stockholm\0", ""])
                .into(),
            locale: h.text("sv-SE"),
            attributes_json: h.json(),
            channels: vec![pb::ChannelState {
                channel: h.text("push"),
                reachable: h.chance(0.5),
                opted_out: h.chance(0.2),
            }],
            opted_out_categories: vec![h.text("content")],
        };
        let r = users
            .upsert(pb::UpsertUsersRequest { users: vec![u] })
            .await;
        tally("Upsert", code(r.map(|_| ())));

        // Report and ReportActivity.
        let o = pb::Outcome {
            user_id: h.text("u1"),
            message_id: h.pick(&[0, -1, i64::MAX, 1]),
            kind: h.pick(&[0, 1, 4, 8, 99, -3]),
            occurred_at: h.time(),
            value: h.chance(0.5).then(|| h.number()),
        };
        let r = feedback
            .report(pb::ReportRequest { outcomes: vec![o] })
            .await;
        tally("Report", code(r.map(|_| ())));
        let a = pb::Activity {
            user_id: h.text("u1"),
            occurred_at: h.time(),
        };
        let r = feedback
            .report_activity(pb::ReportActivityRequest { activity: vec![a] })
            .await;
        tally("ReportActivity", code(r.map(|_| ())));

        // Pull, Ack, ExtendLease, GetUserSchedule.
        let r = schedule
            .pull(pb::PullRequest {
                holder: h.text("h"),
                channels: vec![h.text("push")],
                max_items: h.pick(&[0, 1, 1000, 1001, u32::MAX]),
                lease: h.duration(),
            })
            .await;
        tally("Pull", code(r.map(|_| ())));
        let token = h.pick(&[
            String::new(),
            "not-a-token".into(),
            uuid::Uuid::new_v4().to_string(),
            "\0".into(),
        ]);
        let r = schedule
            .ack(pb::AckRequest {
                acks: vec![pb::AckItem {
                    user_id: h.text("u1"),
                    item_id: h.pick(&[0, -1, i64::MAX]),
                    lease_token: token.clone(),
                    status: h.pick(&[0, 1, 2, 3, 42]),
                }],
            })
            .await;
        tally("Ack", code(r.map(|_| ())));
        let r = schedule
            .extend_lease(pb::ExtendLeaseRequest {
                user_id: h.text("u1"),
                item_id: h.pick(&[0, 7, i64::MIN]),
                lease_token: token,
                lease: h.duration(),
            })
            .await;
        tally("ExtendLease", code(r.map(|_| ())));
        let r = schedule
            .get_user_schedule(pb::GetUserScheduleRequest {
                user_id: h.text("u1"),
            })
            .await;
        tally("GetUserSchedule", code(r.map(|_| ())));

        // Admin.
        let r = admin
            .replan(pb::ReplanRequest {
                user_ids: vec![h.text("u1")],
            })
            .await;
        tally("Replan", code(r.map(|_| ())));
        let r = admin
            .advance_clock(pb::AdvanceClockRequest { to: h.time() })
            .await;
        tally("AdvanceClock", code(r.map(|_| ())));
        let r = admin.get_status(pb::GetStatusRequest {}).await;
        tally("GetStatus", code(r.map(|_| ())));
    }

    // Every valid row is there, and nothing else of the fuzzer's source slipped in malformed.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM opportunities WHERE user_id = 'fuzz' AND dedupe_key LIKE 'valid-%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, valid_rows);
    assert!(valid_rows >= (ROUNDS as i64) * 8 / 10, "{valid_rows}");
    let total: u32 = codes.values().sum();
    println!("{total} hostile requests; codes by RPC:");
    for ((rpc, code), n) in &codes {
        println!("  {rpc:16} {code:18} {n}");
    }
    assert_eq!(total as usize, ROUNDS * 12);
    // Still serving.
    admin.get_status(pb::GetStatusRequest {}).await.unwrap();
}

/// A transactional message submitted by an upstream system is due at once, whatever the quiet
/// hours, the value floor or the caps say, without waiting for a scheduled replan; a marketing
/// one submitted beside it is held back by all three.
#[tokio::test(flavor = "multi_thread")]
async fn a_submitted_transactional_message_is_due_at_once_through_quiet_hours_and_caps() {
    const STRICT: &str = r#"apiVersion: tern/v1
kind: Channel
metadata: {name: email}
spec:
  quietHours: {from: "00:00", to: "23:59"}
---
apiVersion: tern/v1
kind: Objective
metadata: {name: default}
spec:
  weights: {conversion: 1.0, engagement: 1.0, retention: 1.0, reachability: 1.0}
  minValue: 100
---
apiVersion: tern/v1
kind: Caps
metadata: {name: default}
spec:
  rules:
    - {channel: any, max: 0, per: 1d}
---
apiVersion: tern/v1
kind: Priority
metadata: {name: transactional}
spec:
  bypass: [caps, budgets, minValue, quietHours, holdouts]
---
apiVersion: tern/v1
kind: Replan
metadata: {name: daily}
spec: {cron: "0 0 3 * * *", horizon: 24h, exploration: 0}
"#;
    let db = TestDb::new().await;
    let daemon = Daemon::start_with(&db, STRICT).await;
    let channel = daemon.channel().await;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    let mut schedule = ScheduleServiceClient::new(channel.clone());
    UserServiceClient::new(channel.clone())
        .upsert(pb::UpsertUsersRequest {
            users: vec![user("u1")],
        })
        .await
        .unwrap();
    let reply = opportunities
        .submit(pb::SubmitRequest {
            source: "accounts".into(),
            opportunities: vec![
                pb::Opportunity {
                    template: "password_reset".into(),
                    priority: "transactional".into(),
                    ttl: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    ..opportunity("u1", "reset-1", &["email"])
                },
                opportunity("u1", "promo-1", &["email"]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.created, 2, "{reply:?}");
    // No Replan call: Submit planned the user at once.
    let items = schedule
        .pull(pb::PullRequest {
            holder: "email-sender".into(),
            channels: vec!["email".into()],
            max_items: 10,
            lease: None,
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let templates: Vec<&str> = items.iter().map(|i| i.template.as_str()).collect();
    assert_eq!(templates, ["password_reset"], "{items:?}");
    assert_eq!(items[0].dedupe_key, "reset-1");
}
