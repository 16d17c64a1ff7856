//! Sweeps page by page under leases, the replan queue, and the publish statement's plan.

use chrono::{NaiveDate, TimeDelta};
use tern_store::{NewOutcome, PageStats, Replanned, Scope, Supersede, User, BUCKETS};
use tern_tests::TestDb;

use crate::{count, ingest_all, item, opportunity, plan, t0};

/// A sweep's pages cover every user once; a page whose lease passed to another replica
/// publishes nothing, and the sweep is finished only when its last page is.
#[tokio::test]
async fn a_sweep_covers_each_user_once_and_a_lost_lease_writes_nothing() {
    let db = TestDb::new().await;
    let s = &db.store;
    let batch: Vec<_> = (0..40)
        .map(|i| opportunity(&format!("user-{i}"), "k"))
        .collect();
    let ids = ingest_all(s, &batch).await;
    let plan_id = s
        .start_sweep(&plan(), 4)
        .await
        .unwrap()
        .expect("no sweep was running");
    assert_eq!(
        s.start_sweep(&plan(), 4).await.unwrap(),
        None,
        "a second sweep starts while one runs"
    );

    // Replica a claims page 0 and stalls past its lease; b takes the page over.
    let lease = TimeDelta::minutes(1);
    let a = s
        .claim_page(plan_id, "a", t0(), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.page, a.buckets.start), (0, 0));
    let later = t0() + TimeDelta::minutes(2);
    let b = s
        .claim_page(plan_id, "b", later, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.page, b.claims),
        (0, 2),
        "the expired page is taken over first"
    );

    let mut seen = Vec::new();
    let mut pages = vec![b.clone()];
    while let Some(c) = s.claim_page(plan_id, "b", later, lease).await.unwrap() {
        pages.push(c);
    }
    assert_eq!(pages.len(), 4);
    assert_eq!(pages.last().unwrap().buckets.end, BUCKETS);
    for claim in &pages {
        let users = s
            .users_in_buckets(claim.buckets.clone(), later)
            .await
            .unwrap();
        let items: Vec<_> = users
            .iter()
            .map(|u| {
                let i: usize = u["user-".len()..].parse().unwrap();
                item(u, ids[i], "push")
            })
            .collect();
        if claim.page == 0 {
            // a wakes up and publishes its (stale) page: refused, nothing written.
            let stale = s
                .publish_page(
                    &a,
                    "a",
                    &items,
                    &Replanned {
                        scope: Scope::Sweep,
                        users: users.clone(),
                        ..Default::default()
                    },
                    &PageStats::default(),
                    later,
                )
                .await
                .unwrap();
            assert_eq!(stale, None);
            assert_eq!(count(s, "SELECT count(*) FROM schedule_items").await, 0);
            assert_eq!(s.finish_sweep(plan_id, later).await.unwrap(), None);
        }
        let published = s
            .publish_page(
                claim,
                "b",
                &items,
                &Replanned {
                    scope: Scope::Sweep,
                    users: users.clone(),
                    ..Default::default()
                },
                &PageStats {
                    users: users.len() as u64,
                    ..Default::default()
                },
                later,
            )
            .await
            .unwrap()
            .expect("b holds the page");
        assert_eq!(published.items as usize, users.len());
        seen.extend(users);
    }
    seen.sort();
    let mut all: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    all.sort();
    assert_eq!(seen, all, "every user in exactly one page");
    let stats = s.finish_sweep(plan_id, later).await.unwrap().unwrap();
    assert_eq!(stats.users, 40);
    assert_eq!(s.running_sweep().await.unwrap(), None);
    assert_eq!(
        count(
            s,
            &format!("SELECT count(*) FROM schedule_items WHERE plan_id = {plan_id} AND state = 'pending'")
        )
        .await,
        40
    );
    assert_eq!(
        s.pages_by_holder(plan_id).await.unwrap(),
        vec![("b".to_string(), 4)]
    );
}

/// Every write that changes what a user's plan reads queues the user; a plan deletes only the
/// rows it read (a change committed while it ran stays queued) and replaces its users'
/// revisits, which come due when they say.
#[tokio::test]
async fn writes_queue_their_users_and_a_plan_deletes_only_what_it_read() {
    let db = TestDb::new().await;
    let s = &db.store;
    let ids = ingest_all(s, &[opportunity("a", "1"), opportunity("b", "1")]).await;
    let due = s.due_replans(t0(), 100).await.unwrap();
    let reasons: Vec<(&str, &str)> = due
        .iter()
        .map(|q| (q.user_id.as_str(), q.reason.as_str()))
        .collect();
    assert_eq!(reasons, vec![("a", "opportunity"), ("b", "opportunity")]);

    // A plan of a and b that read those rows; meanwhile c's activity and b's profile arrive.
    s.record_activity(&[("c".into(), NaiveDate::from_ymd_opt(2026, 3, 1).unwrap())])
        .await
        .unwrap();
    s.upsert_users(
        &[User {
            user_id: "b".into(),
            timezone: "UTC".into(),
            locale: None,
            attributes: serde_json::json!({}),
            opted_out_categories: Vec::new(),
            channels: Vec::new(),
        }],
        t0(),
    )
    .await
    .unwrap();
    let published = s
        .publish_plan_with(
            &plan(),
            &[item("a", ids[0], "push")],
            &Supersede::Users(vec!["a".into(), "b".into()]),
            &Replanned {
                scope: Scope::Incremental,
                seen: due.iter().map(|q| (q.user_id.clone(), q.seq)).collect(),
                users: vec!["a".into(), "b".into()],
                revisits: vec![("b".into(), t0() + TimeDelta::hours(2))],
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(published.items, 1);
    let left: Vec<(String, String)> = s
        .due_replans(t0(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.user_id, q.reason))
        .collect();
    assert_eq!(
        left,
        vec![("c".into(), "activity".into()), ("b".into(), "user".into())],
        "the rows the plan did not read stay"
    );
    assert_eq!(s.replan_queue_len(t0()).await.unwrap(), (2, 1));
    let revisit = s
        .due_replans(t0() + TimeDelta::hours(2), 100)
        .await
        .unwrap();
    assert!(revisit
        .iter()
        .any(|q| q.user_id == "b" && q.reason == "revisit"));

    // An outcome queues its user; so does a failed send (not a sent one: it was planned).
    let messages = s
        .record_messages(&[tern_store::NewMessage {
            user_id: "a".into(),
            opportunity_id: ids[0],
            channel: "push".into(),
            sent_at: t0(),
        }])
        .await
        .unwrap();
    s.record_outcomes(
        &[NewOutcome {
            user_id: "a".into(),
            message_id: messages[0],
            kind: tern_core::OutcomeKind::Opened,
            occurred_at: t0(),
            value: None,
        }],
        t0(),
    )
    .await
    .unwrap();
    let reasons: Vec<String> = s
        .due_replans(t0(), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.user_id == "a")
        .map(|q| q.reason)
        .collect();
    assert_eq!(reasons, vec!["message", "outcome"]);
}

/// The regression test of the publish that ran for 12 minutes: after a bulk load, with
/// `schedule_items` analysed while empty, publishing probes each item by key (an index scan
/// per check, no sequential scan) and its work grows with the batch, not with its square.
#[tokio::test]
async fn publishing_after_a_bulk_load_probes_each_item_by_key() {
    let db = TestDb::new().await;
    let s = &db.store;
    let n_users = 2_500;
    let per_user = 8;
    let opportunities: Vec<_> = (0..n_users * per_user)
        .map(|i| {
            opportunity(
                &format!("user-{:06}", i / per_user),
                &format!("k{}", i % per_user),
            )
        })
        .collect();
    s.copy_load(&[], &opportunities, t0()).await.unwrap();
    // The trap: statistics that say the schedule is empty, as they do on a new database.
    sqlx::query("ANALYZE schedule_items")
        .execute(s.pool())
        .await
        .unwrap();
    let ids: Vec<(String, i64)> =
        sqlx::query_as("SELECT user_id, opportunity_id FROM opportunities ORDER BY 1, 2")
            .fetch_all(s.pool())
            .await
            .unwrap();
    let items: Vec<_> = ids.iter().map(|(u, id)| item(u, *id, "push")).collect();
    let lines = s.explain_publish(&items, t0()).await.unwrap();
    let text = lines.join("\n");
    assert!(
        !text.contains("Seq Scan"),
        "a sequential scan in the publish:\n{text}"
    );
    assert!(
        text.contains("Index Scan using opportunities_pkey"),
        "{text}"
    );
    // A probe of the live items' index (an index-only scan, its predicate naming the states).
    assert!(
        text.contains("Scan using schedule_items_opportunity on schedule_items"),
        "{text}"
    );
    // Shared buffers touched by the statement: about 15 per item (two probes, the row, its
    // index entries). The quadratic plan touched 300 per item at 16,000 items, and
    // more the larger the batch.
    let buffers = |key: &str| -> u64 {
        lines[1]
            .split(key)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        lines[1].contains("shared hit="),
        "no buffer counts in {}",
        lines[1]
    );
    let hits = buffers("shared hit=") + buffers(" read=");
    assert!(
        hits < 40 * items.len() as u64,
        "{hits} buffers for {} items:\n{text}",
        items.len()
    );
}

/// Waits until PostgreSQL's statistics, which each backend sends on its own schedule, report
/// at least `rows` (`n_live_tup`, or `n_dead_tup` with `dead`) in `table`.
async fn await_table_stats(s: &tern_store::Store, table: &str, dead: bool, rows: i64) {
    let column = if dead { "n_dead_tup" } else { "n_live_tup" };
    let sql = format!("SELECT {column} FROM pg_stat_user_tables WHERE relname = $1");
    for _ in 0..300 {
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(table)
            .fetch_one(s.pool())
            .await
            .unwrap();
        if n >= rows {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the statistics never showed {rows} {column} in {table}");
}

/// What autovacuum would do, where it is off: a loaded table without statistics is analysed,
/// a churned one vacuumed (its pages then visible to index-only scans), a quiet one left alone.
#[tokio::test]
async fn maintenance_analyses_loaded_tables_and_vacuums_churned_ones() {
    let db = TestDb::new().await;
    let s = &db.store;
    let opportunities: Vec<_> = (0..20_000)
        .map(|i| opportunity(&format!("user-{:05}", i / 8), &format!("k{}", i % 8)))
        .collect();
    s.copy_load(&[], &opportunities, t0()).await.unwrap();
    let pg_class = |column: &'static str| async move {
        let sql = format!("SELECT {column}::float8 FROM pg_class WHERE relname = 'opportunities'");
        sqlx::query_scalar::<_, f64>(&sql)
            .fetch_one(s.pool())
            .await
            .unwrap()
    };
    assert_eq!(pg_class("reltuples").await, -1.0, "never analysed");

    await_table_stats(s, "opportunities", false, 20_000).await;
    let done = s.maintain_tables().await.unwrap();
    assert!(
        done.analysed.contains(&"opportunities".to_string()),
        "{done:?}"
    );
    assert!(done.vacuumed.is_empty(), "nothing is dead yet: {done:?}");
    assert_eq!(pg_class("reltuples").await, 20_000.0);
    assert!(!done.analysed.contains(&"messages".to_string()), "empty");

    // Every opportunity leaves `open`: 20,000 dead row versions.
    assert_eq!(s.expire(t0() + TimeDelta::days(3)).await.unwrap(), 20_000);
    await_table_stats(s, "opportunities", true, 20_000).await;
    assert_eq!(pg_class("relallvisible").await, 0.0);
    let done = s.maintain_tables().await.unwrap();
    assert_eq!(done.vacuumed, vec!["opportunities".to_string()], "{done:?}");
    assert!(pg_class("relallvisible").await > 0.0);
}
