//! `tern bench replan`: a full replan of a large population through the daemon's own path
//! (sweep pages, the store, the planner, publishing), then an incremental replan after a share
//! of the users changed, then the full replan again with several replicas side by side.
//!
//! The population is loaded with `COPY` into a scratch database, and the first replan runs
//! right after the load, before autovacuum has analysed anything: the state a database is in
//! after a bulk backfill, where a plan that depends on statistics goes wrong.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use tern_core::NewOpportunity;
use tern_store::{Store, User};

use crate::db::Database;

#[derive(Debug, clap::Args)]
pub struct ReplanArgs {
    /// Users in the population, each with --opportunities open opportunities.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Open opportunities per user, over one to three channels.
    #[arg(long, default_value_t = 8)]
    opportunities: usize,
    /// The share of users that change (one new opportunity each) before the incremental replan.
    #[arg(long, default_value_t = 0.01)]
    change: f64,
    /// Replicas planning the second full replan together (each its own daemon and pool).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Open opportunities per page of a full replan.
    #[arg(long, default_value_t = 50_000)]
    page_opportunities: u64,
    /// Pages each replica plans at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    page_workers: u32,
    /// ANALYZE after the load (by default the first replan runs on a freshly loaded database).
    #[arg(long)]
    analyze: bool,
}

/// Peak resident memory of this process since the last [`reset_peak`], in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak to the current resident memory (Linux: `5` to `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
}

/// User `i`'s opportunities: deterministic, realistic sizes, one to three channels.
fn opportunities_of(i: usize, n: usize, now: DateTime<Utc>, tag: &str) -> Vec<NewOpportunity> {
    (0..n)
        .map(|j| {
            let k = i * n + j;
            NewOpportunity {
                user_id: format!("user-{i:09}"),
                dedupe_key: format!("{tag}-{j}"),
                source: "bench".into(),
                template: ["new_release", "weekly_digest", "price_drop"][k % 3].into(),
                category: ["content", "digest", "commerce"][k % 3].into(),
                priority: "marketing".into(),
                channels: ["push", "email", "in_app"][..1 + (k * 7 + i) % 3]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                signals: BTreeMap::from([
                    ("relevance".into(), (k % 97) as f64 / 97.0),
                    ("popularity".into(), (k % 13) as f64 / 13.0),
                ]),
                payload: Default::default(),
                created_at: now - TimeDelta::hours(1),
                expires_at: now + TimeDelta::hours(48),
            }
        })
        .collect()
}

pub async fn run(db: &Database, args: ReplanArgs) -> Result<ExitCode> {
    ensure!(
        args.users > 0 && args.opportunities > 0,
        "--users and --opportunities must be positive"
    );
    ensure!(
        (0.0..=1.0).contains(&args.change),
        "--change is a share in [0, 1]"
    );
    ensure!(args.replicas > 0, "--replicas must be at least 1");
    let scratch = format!("tern_bench_{}", std::process::id());
    db.store.create_database(&scratch, None).await?;
    let result = run_in(&db.url, &scratch, &args).await;
    db.store.drop_database(&scratch).await?;
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

async fn start(
    url: &str,
    database: &str,
    policies: &std::path::Path,
    args: &ReplanArgs,
    now: DateTime<Utc>,
    holder: String,
) -> Result<tern_daemon::Service> {
    let store = Store::connect_to_database(url, database).await?;
    let mut config = tern_daemon::ServiceConfig::local(policies);
    config.simulate_from = Some(now);
    config.holder = holder;
    config.paging = tern_daemon::Paging {
        page_opportunities: args.page_opportunities,
        lease: TimeDelta::seconds(600),
        workers: args.page_workers,
    };
    Ok(tern_daemon::service::start(store, config).await?)
}

async fn run_in(url: &str, database: &str, args: &ReplanArgs) -> Result<String> {
    let mut out = String::new();
    let admin = Store::connect_to_database(url, database).await?;
    admin.migrate().await?;
    let now = Utc::now();

    // The load, in slices so that this process never holds the population at once.
    let started = Instant::now();
    let slice = 20_000;
    let mut loaded = 0;
    for from in (0..args.users).step_by(slice) {
        let to = (from + slice).min(args.users);
        let users: Vec<User> = (from..to)
            .map(|i| User {
                user_id: format!("user-{i:09}"),
                timezone: ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"][i % 4].into(),
                locale: None,
                attributes: serde_json::json!({}),
                opted_out_categories: Vec::new(),
                channels: Vec::new(),
            })
            .collect();
        let opportunities: Vec<NewOpportunity> = (from..to)
            .flat_map(|i| opportunities_of(i, args.opportunities, now, "o"))
            .collect();
        loaded += admin.copy_load(&users, &opportunities, now).await?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    if args.analyze {
        admin.analyze().await?;
    }
    out.push_str(&format!(
        "replan of {} users x {} opportunities ({} loaded by COPY in {:.1} s, {:.0} rows/s{})\n",
        args.users,
        args.opportunities,
        loaded,
        load_secs,
        loaded as f64 / load_secs,
        if args.analyze {
            ", then ANALYZE"
        } else {
            ", not analysed"
        }
    ));

    let policies = std::env::temp_dir().join(format!("tern-bench-policies-{}", std::process::id()));
    std::fs::create_dir_all(&policies)?;
    for (name, text) in tern_policy::example::FILES {
        std::fs::write(policies.join(name), text)?;
    }
    let result = phases(url, database, &policies, args, now, &admin, &mut out).await;
    let _ = std::fs::remove_dir_all(&policies);
    result?;
    admin.close().await;
    Ok(out)
}

async fn phases(
    url: &str,
    database: &str,
    policies: &std::path::Path,
    args: &ReplanArgs,
    now: DateTime<Utc>,
    admin: &Store,
    out: &mut String,
) -> Result<()> {
    let service = start(url, database, policies, args, now, "bench-1".into()).await?;
    let daemon = service.daemon.clone();

    // 1. A full replan, one replica.
    let before = rss();
    reset_peak();
    let started = Instant::now();
    let full = daemon.replan("manual", Vec::new()).await?;
    let full_secs = started.elapsed().as_secs_f64();
    let peak = peak_rss();
    let candidates = full.candidates;
    let chosen: u64 = full.chosen_per_channel.values().sum();
    out.push_str(&format!(
        "{:<34} {:>8.2} s  {:>12} candidates/s  ({} candidates, {} chosen; RSS {} before, peak {})\n",
        "full replan, 1 replica",
        full_secs,
        crate::bench::thousands(candidates as f64 / full_secs),
        candidates,
        chosen,
        mib(before),
        mib(peak),
    ));

    // 2. An incremental replan after --change of the users got a new opportunity each, through
    // the ingest path (which queues them).
    let changed = ((args.users as f64 * args.change).round() as usize).max(1);
    let step = (args.users / changed).max(1);
    let fresh: Vec<NewOpportunity> = (0..changed)
        .flat_map(|k| opportunities_of((k * step) % args.users, 1, now, "changed"))
        .collect();
    for chunk in fresh.chunks(10_000) {
        admin.ingest_opportunities(chunk).await?;
    }
    reset_peak();
    let started = Instant::now();
    let incremental = daemon.replan_incremental("manual").await?;
    let incremental_secs = started.elapsed().as_secs_f64();
    out.push_str(&format!(
        "{:<34} {:>8.2} s  {:>12} candidates/s  ({} users changed, {} candidates; peak RSS {})\n",
        format!("incremental replan, {:.1}% changed", args.change * 100.0),
        incremental_secs,
        crate::bench::thousands(incremental.candidates as f64 / incremental_secs.max(1e-9)),
        changed,
        incremental.candidates,
        mib(peak_rss()),
    ));

    // 3. The full replan again, by --replicas daemons together.
    let mut services = vec![service];
    for r in 1..args.replicas {
        services.push(
            start(
                url,
                database,
                policies,
                args,
                now,
                format!("bench-{}", r + 1),
            )
            .await?,
        );
    }
    let started = Instant::now();
    let runs = futures::future::join_all(
        services
            .iter()
            .map(|s| s.daemon.clone())
            .map(|d| async move { d.replan("manual", Vec::new()).await }),
    )
    .await;
    let shared_secs = started.elapsed().as_secs_f64();
    let mut summary = None;
    for r in runs {
        summary = Some(r?);
    }
    let summary = summary.context("no replica ran")?;
    let pages = admin.pages_by_holder(summary.plan_id).await?;
    out.push_str(&format!(
        "{:<34} {:>8.2} s  {:>12} candidates/s  (speedup {:.2}x; pages per replica: {})\n",
        format!("full replan, {} replicas", args.replicas),
        shared_secs,
        crate::bench::thousands(summary.candidates as f64 / shared_secs),
        full_secs / shared_secs,
        pages
            .iter()
            .map(|(h, n)| format!("{h} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    for s in services {
        s.stop();
        s.shutdown(std::time::Duration::from_secs(5)).await?;
    }
    Ok(())
}
