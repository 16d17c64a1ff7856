//! `tern serve` as a process: the real binary, a real PostgreSQL, and gRPC over loopback, for
//! what needs a process of its own: a whole session ended by SIGTERM, a daemon killed with
//! SIGKILL mid-plan, settings from a config file. Every other API scenario runs in process, in
//! `crates/tern-daemon/tests/api.rs`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tern_server::pb;
use tern_server::pb::admin_service_client::AdminServiceClient;
use tern_server::pb::feedback_service_client::FeedbackServiceClient;
use tern_server::pb::opportunity_service_client::OpportunityServiceClient;
use tern_server::pb::schedule_service_client::ScheduleServiceClient;
use tern_server::pb::user_service_client::UserServiceClient;
use tern_tests::TestDb;
use tonic::transport::Channel;

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

/// A running daemon, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    address: String,
    metrics: String,
    policies: PathBuf,
}

impl Daemon {
    fn start(database_url: &str) -> Daemon {
        Daemon::start_with(database_url, BUNDLE)
    }

    fn start_with(database_url: &str, bundle: &str) -> Daemon {
        Daemon::start_args(database_url, bundle, &[])
    }

    fn start_args(database_url: &str, bundle: &str, extra: &[&str]) -> Daemon {
        let policies = std::env::temp_dir().join(format!(
            "tern-serve-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("bundle.yaml"), bundle).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--policy-poll-ms", "50"])
            .args([
                "--policy-settle-ms",
                "100",
                "--shutdown-grace",
                "5",
                "--policies",
            ])
            .arg(&policies)
            .args(extra)
            .env("DATABASE_URL", database_url)
            .env_remove("TERN_PG_BINDIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("tern serve printed nothing").unwrap();
        let parts: Vec<&str> = first
            .strip_prefix("serving tern.v1 on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .split(", ")
            .collect();
        let address = parts[0].to_string();
        let metrics = parts[1]
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Daemon {
            child,
            address,
            metrics,
            policies,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .expect("connect to tern serve")
    }

    /// `GET /metrics`, over a plain socket.
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

    /// SIGTERM, then the exit status. Async, so that the test's own runtime keeps running
    /// (and closes its client connections) while the daemon drains.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tern serve did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

#[tokio::test]
async fn submit_replan_pull_ack_report_status_over_grpc() {
    let db = TestDb::new().await;
    let mut daemon = Daemon::start(&db.url);
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

#[tokio::test]
async fn a_daemon_killed_while_publishing_leaves_no_half_plan_and_the_next_plan_is_whole() {
    let db = TestDb::new().await;
    let mut daemon = Daemon::start_args(&db.url, BUNDLE, &["--page-lease-secs", "2"]);
    let channel = daemon.channel().await;
    let total = 60_000;
    let mut opportunities = OpportunityServiceClient::new(channel.clone());
    for chunk in (0..total).collect::<Vec<usize>>().chunks(10_000) {
        let rows = chunk
            .iter()
            .map(|i| opportunity(&format!("u{}", i % 5_000), &format!("k{i}"), &["push"]))
            .collect();
        opportunities
            .submit(pb::SubmitRequest {
                source: "load".into(),
                opportunities: rows,
            })
            .await
            .unwrap();
    }
    let mut admin = AdminServiceClient::new(channel.clone());
    let replan = tokio::spawn(async move { admin.replan(pb::ReplanRequest::default()).await });
    // Kill the daemon while its publishing statement is running.
    let mut seen = false;
    for _ in 0..4_000 {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE 'INSERT INTO schedule_items%'",
        )
        .fetch_one(db.store.pool())
        .await
        .unwrap();
        if active > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert!(seen, "the publishing statement was never seen running");
    assert!(
        replan.await.unwrap().is_err(),
        "the caller sees the failure"
    );

    // Whatever was committed is whole: every plan's items are all there, or the plan is not.
    let wait_rolled_back = async {
        loop {
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'INSERT INTO schedule_items%' AND state <> 'idle'",
            )
            .fetch_one(db.store.pool())
            .await
            .unwrap();
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait_rolled_back)
        .await
        .expect("the killed daemon's transaction ends");
    let half: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plans p WHERE p.trigger = 'manual' AND p.state = 'published' AND \
           (SELECT count(*) FROM schedule_items s WHERE s.plan_id = p.plan_id) \
           <> (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(p.stats->'chosen'))",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(half, 0, "no plan is missing items");

    // A new daemon plans every opportunity exactly once (finishing the killed one's full
    // replan once the page lease it left expires).
    let daemon = Daemon::start_args(&db.url, BUNDLE, &["--page-lease-secs", "2"]);
    let channel = daemon.channel().await;
    let plan = AdminServiceClient::new(channel)
        .replan(pb::ReplanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.chosen_per_channel["push"], total as u64);
    let (live, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (user_id, opportunity_id)) FROM schedule_items \
         WHERE state = 'pending'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!((live, distinct), (total as i64, total as i64));
}

/// Two `tern serve` replicas on one database; the one running a full replan is killed with
/// SIGKILL part-way. The other takes its pages over once their leases expire, and the replan is
/// published with every page done once and every user planned once.
#[tokio::test]
async fn a_replica_killed_mid_replan_leaves_its_pages_to_the_other_and_each_user_is_planned_once() {
    let db = TestDb::new().await;
    let users = 4_000;
    let now = chrono::Utc::now();
    let rows: Vec<tern_core::NewOpportunity> = (0..users * 4)
        .map(|i| tern_core::NewOpportunity {
            user_id: format!("u{:05}", i / 4),
            dedupe_key: format!("k{}", i % 4),
            source: "load".into(),
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
    db.store.copy_load(&[], &rows, now).await.unwrap();
    let paging = ["--page-opportunities", "1000", "--page-lease-secs", "2"];
    let mut a = Daemon::start_args(&db.url, BUNDLE, &paging);
    let b = Daemon::start_args(&db.url, BUNDLE, &paging);
    let mut admin = AdminServiceClient::new(a.channel().await);
    let replan = tokio::spawn(async move { admin.replan(pb::ReplanRequest::default()).await });
    let pool = db.store.pool();
    // Kill a in the middle of a page: once some pages are published and it holds another.
    let a_holder = format!("%/{}", a.child.id());
    let mut done: i64 = 0;
    for _ in 0..2_000 {
        let (published, held): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'done'), \
                    count(*) FILTER (WHERE state = 'running' AND holder LIKE $1) FROM plan_pages",
        )
        .bind(&a_holder)
        .fetch_one(pool)
        .await
        .unwrap();
        done = published;
        if done >= 3 && held > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(done >= 3, "the replan never got going");
    assert!(
        replan.await.unwrap().is_err(),
        "the caller sees the failure"
    );

    // b, which never ran the replan, finishes it from its cron loop.
    let plan_id: i64 = sqlx::query_scalar("SELECT plan_id FROM plans WHERE scope = 'sweep'")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..300 {
        state = sqlx::query_scalar("SELECT state FROM plans WHERE plan_id = $1")
            .bind(plan_id)
            .fetch_one(pool)
            .await
            .unwrap();
        if state == "published" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        state, "published",
        "the other replica did not finish the replan in 30 s"
    );
    let (pages, done, retaken): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), \
                count(*) FILTER (WHERE claims > 1) FROM plan_pages WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((pages, done), (16, 16));
    assert!(
        retaken >= 1,
        "no page was taken over from the killed replica"
    );
    let (planned, replaced): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT user_id), count(*) FILTER (WHERE state = 'superseded') \
         FROM schedule_items WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(replaced, 0, "a user was planned twice in one replan");
    assert_eq!(planned, users as i64, "every user has the replan's items");
    let users_in_pages: i64 = sqlx::query_scalar(
        "SELECT sum((stats->>'users')::bigint)::bigint FROM plan_pages WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        users_in_pages, users as i64,
        "the pages' users add up to everyone once"
    );
    drop(b);
}

#[tokio::test]
async fn settings_can_come_from_a_config_file_and_an_unknown_key_is_located() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("tern-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/bundle.yaml"), BUNDLE).unwrap();
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\npolicies = {:?}\nshutdown_grace = 3\n",
            dir.join("policies").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("DATABASE_URL", &db.url)
        .env_remove("TERN_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("serving tern.v1 on 127.0.0.1:"),
        "{first}"
    );

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_on = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tern.toml:2: unknown setting \"listen_on\""),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
