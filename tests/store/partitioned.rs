//! The hot paths on a copy of the schema whose per-user tables are hash-partitioned by `user_id`:
//! PostgreSQL's stand-in for a Citus cluster (docs/scaling.md, "Past one database"). The store's
//! own functions still work on it, and `EXPLAIN` of each statement in
//! [`tern_store::routing::HOT_PATHS`] shows it touches the partitions its [`Routes`] says: one
//! user's, the named users', or all of them.
//!
//! "Touches" is read two ways from `EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE` of a custom plan, run
//! in a transaction that is rolled back: the partitions the plan lists (what pruning at planning
//! time left), and the partitions that ran (a scan node executed at least once, or a row written,
//! as `pg_stat_xact_user_tables` counts it: inserts reach partitions by tuple routing, which no
//! plan shows). Partitions the plan lists but that never ran were pruned per probe at run time.
//!
//! The tables hold a few tens of thousands of rows of other users, analysed, so that PostgreSQL
//! plans the statements as it does on a populated database (index probes per key) rather than as
//! on an empty one (a sequential scan of every small partition beats any probe).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tern_core::AckStatus;
use tern_store::routing::{Routes, HOT_PATHS};
use tern_store::{Ack, AckResult, LeaseRequest, Store, Supersede, User, BUCKETS};
use tern_tests::TestDb;
use uuid::Uuid;

use crate::{ingest_all, item, opportunity, plan, t0};

/// The per-user tables the hot paths read, partitioned here.
const PER_USER: &[&str] = &[
    "users",
    "user_channels",
    "opportunities",
    "schedule_items",
    "messages",
    "outcomes",
    "user_activity",
    "replan_queue",
];

const MODULUS: u32 = 8;

/// Replaces each per-user table with a copy partitioned by `PARTITION BY HASH (user_id)` into
/// [`MODULUS`] partitions named `{table}_p{remainder}`: same columns, defaults, identities, checks
/// and indexes (`LIKE ... INCLUDING ALL`; every unique index leads with `user_id`, so each is
/// valid per partition), rows copied. PostgreSQL 15 accepts an identity column on a partitioned
/// table: inserts through the parent draw from its sequence, which is moved past the copied rows.
/// Foreign keys are dropped with the old tables (`CASCADE`) and not recreated: this copy checks
/// routing, not constraints, and `LIKE` copies no foreign keys anyway.
async fn partition(conn: &mut PgConnection) {
    for t in PER_USER {
        for sql in [
            format!("ALTER TABLE {t} RENAME TO {t}_flat"),
            format!("CREATE TABLE {t} (LIKE {t}_flat INCLUDING ALL) PARTITION BY HASH (user_id)"),
        ] {
            sqlx::raw_sql(&sql).execute(&mut *conn).await.unwrap();
        }
        for r in 0..MODULUS {
            sqlx::raw_sql(&format!(
                "CREATE TABLE {t}_p{r} PARTITION OF {t} \
                 FOR VALUES WITH (MODULUS {MODULUS}, REMAINDER {r})"
            ))
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        sqlx::raw_sql(&format!(
            "INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT * FROM {t}_flat"
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
        let identities: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
        )
        .bind(t)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for c in identities {
            sqlx::raw_sql(&format!(
                "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), max({c})) FROM {t} \
                 HAVING max({c}) IS NOT NULL"
            ))
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }
    for t in PER_USER {
        sqlx::raw_sql(&format!("DROP TABLE {t}_flat CASCADE"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

/// Partition name → (its parent, its remainder), for the per-user tables.
async fn partitions(conn: &mut PgConnection) -> HashMap<String, (String, u32)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, p.relname::text, pg_get_expr(c.relpartbound, c.oid) \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname::text = ANY($1)",
    )
    .bind(PER_USER)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(child, parent, bound)| {
            // FOR VALUES WITH (modulus 8, remainder 3)
            let r = bound
                .rsplit("remainder ")
                .next()
                .and_then(|s| s.trim_end_matches(')').parse().ok())
                .unwrap_or_else(|| panic!("unexpected bound {bound}"));
            (child, (parent, r))
        })
        .collect()
}

/// The partition (remainder) that `user` hashes to, in every per-user table alike.
async fn remainder(conn: &mut PgConnection, user: &str) -> u32 {
    let r: i32 = sqlx::query_scalar(
        "SELECT r FROM generate_series(0, $2 - 1) AS r \
         WHERE satisfies_hash_partition('users'::regclass, $2, r, $1::text)",
    )
    .bind(user)
    .bind(MODULUS as i32)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    r as u32
}

/// An argument of a hot statement, as the store binds it.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Texts(Vec<String>),
    /// `text[]` with NULLs (experiment, arm, withheld_by).
    OptTexts(Vec<Option<String>>),
    Int4(i32),
    Int8(i64),
    Int8s(Vec<i64>),
    Float8s(Vec<f64>),
    Time(DateTime<Utc>),
    Times(Vec<DateTime<Utc>>),
    Date(NaiveDate),
    Uuid(Uuid),
    Uuids(Vec<Uuid>),
    Jsons(Vec<Value>),
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn array(items: impl IntoIterator<Item = String>, ty: &str) -> String {
    format!(
        "ARRAY[{}]::{ty}",
        items.into_iter().collect::<Vec<_>>().join(", ")
    )
}

impl Arg {
    /// The parameter type the store's bind sends.
    fn pg_type(&self) -> &'static str {
        match self {
            Arg::Text(_) => "text",
            Arg::Texts(_) | Arg::OptTexts(_) => "text[]",
            Arg::Int4(_) => "int4",
            Arg::Int8(_) => "int8",
            Arg::Int8s(_) => "int8[]",
            Arg::Float8s(_) => "float8[]",
            Arg::Time(_) => "timestamptz",
            Arg::Times(_) => "timestamptz[]",
            Arg::Date(_) => "date",
            Arg::Uuid(_) => "uuid",
            Arg::Uuids(_) => "uuid[]",
            Arg::Jsons(_) => "jsonb[]",
        }
    }

    /// The value as an SQL literal, for `EXECUTE name(...)`.
    fn literal(&self) -> String {
        let ty = self.pg_type();
        match self {
            Arg::Text(s) => format!("{}::{ty}", quote(s)),
            Arg::Texts(v) => array(v.iter().map(|s| quote(s)), ty),
            Arg::OptTexts(v) => array(
                v.iter().map(|s| s.as_deref().map_or("NULL".into(), quote)),
                ty,
            ),
            Arg::Int4(n) => format!("{n}::{ty}"),
            Arg::Int8(n) => format!("{n}::{ty}"),
            Arg::Int8s(v) => array(v.iter().map(|n| n.to_string()), ty),
            Arg::Float8s(v) => array(v.iter().map(|n| format!("{n:?}")), ty),
            Arg::Time(t) => format!("{}::{ty}", quote(&t.to_rfc3339())),
            Arg::Times(v) => array(v.iter().map(|t| quote(&t.to_rfc3339())), ty),
            Arg::Date(d) => format!("{}::{ty}", quote(&d.to_string())),
            Arg::Uuid(u) => format!("{}::{ty}", quote(&u.to_string())),
            Arg::Uuids(v) => array(v.iter().map(|u| quote(&u.to_string())), ty),
            Arg::Jsons(v) => array(v.iter().map(|j| quote(&j.to_string())), ty),
        }
    }
}

/// What the store run left behind that the statements' arguments name.
struct Fixture {
    /// The one user of the one-user statements.
    one: String,
    /// Users in distinct partitions, for the statements of named users and of batches.
    few: Vec<String>,
    /// For each of `few`, in order: an item still leased (id, token, opportunity).
    leased: Vec<(i64, Uuid, i64)>,
    /// An item of `one` acked as sent.
    sent_item: i64,
    /// For each of `few`, in order: an open opportunity without an item.
    open: Vec<i64>,
    /// For each of `few`, in order: a replan queue row.
    seqs: Vec<i64>,
    plan_id: i64,
}

/// One statement's example: its arguments, and the users they name (none for a statement of
/// every partition).
struct Case {
    args: Vec<Arg>,
    users: Vec<String>,
    /// The statement runs after publish's `SET LOCAL enable_seqscan = off`.
    seqscan_off: bool,
}

/// The arguments for each hot statement; `None` for a path this test does not know, which fails
/// the test: a new hot statement must come with its example here.
fn case(path: &str, f: &Fixture) -> Option<Case> {
    let t = t0();
    let one = vec![f.one.clone()];
    let few = f.few.clone();
    let n = few.len();
    let items: Vec<i64> = f.leased.iter().map(|l| l.0).collect();
    let named = |args: Vec<Arg>| Case {
        args,
        users: few.clone(),
        seqscan_off: false,
    };
    let of_one = |args: Vec<Arg>| Case {
        args,
        users: one.clone(),
        seqscan_off: false,
    };
    let every = |args: Vec<Arg>| Case {
        args,
        users: Vec::new(),
        seqscan_off: false,
    };
    let after_seqscan_off = |args: Vec<Arg>| Case {
        args,
        users: few.clone(),
        seqscan_off: true,
    };
    let new_opportunities = || {
        vec![
            Arg::Texts(few.clone()),
            Arg::Texts(few.iter().map(|u| format!("new-{u}")).collect()),
            Arg::Texts(vec!["test".into(); n]),
            Arg::Texts(vec!["new_release".into(); n]),
            Arg::Texts(vec!["content".into(); n]),
            Arg::Texts(vec!["marketing".into(); n]),
            Arg::Texts(vec!["push,email".into(); n]),
            Arg::Jsons(vec![json!({"relevance": 0.5}); n]),
            Arg::Jsons(vec![json!({}); n]),
            Arg::Times(vec![t - TimeDelta::hours(1); n]),
            Arg::Times(vec![t + TimeDelta::hours(48); n]),
        ]
    };
    Some(match path {
        "pull.lease" => every(vec![
            Arg::Texts(vec!["email".into(), "push".into()]),
            Arg::Time(t),
            Arg::Int8(100),
            Arg::Text("puller".into()),
            Arg::Time(t + TimeDelta::minutes(5)),
        ]),
        "ack.lock_item" => of_one(vec![Arg::Text(f.one.clone()), Arg::Int8(f.leased[0].0)]),
        "ack.apply" => of_one(vec![
            Arg::Text(f.one.clone()),
            Arg::Int8(f.leased[0].0),
            Arg::Text("sent".into()),
            Arg::Time(t),
        ]),
        "ack.message_of" => of_one(vec![Arg::Text(f.one.clone()), Arg::Int8(f.sent_item)]),
        "ack.lock_batch" | "ack.record_sent" | "ack.close_sent" | "ack.close_skipped" => {
            let mut args = vec![Arg::Texts(few.clone()), Arg::Int8s(items)];
            if path == "ack.record_sent" {
                args.push(Arg::Time(t));
            }
            named(args)
        }
        "ack.apply_batch" => named(vec![
            Arg::Texts(few.clone()),
            Arg::Int8s(items),
            Arg::Uuids(f.leased.iter().map(|l| l.1).collect()),
            Arg::Texts(
                ["sent", "skipped", "failed"]
                    .iter()
                    .cycle()
                    .take(n)
                    .map(|s| s.to_string())
                    .collect(),
            ),
            Arg::Time(t),
        ]),
        "ack.enqueue" => named(vec![Arg::Texts(few.clone()), Arg::Text("ack".into())]),
        "extend.lease" => of_one(vec![
            Arg::Text(f.one.clone()),
            Arg::Int8(f.leased[0].0),
            Arg::Uuid(f.leased[0].1),
            Arg::Time(t + TimeDelta::minutes(10)),
            Arg::Time(t),
        ]),
        "ingest.new_keys" | "ingest.on_conflict" => named(new_opportunities()),
        "replan.due" => every(vec![Arg::Time(t), Arg::Int8(1000)]),
        "replan.queued" => named(vec![Arg::Texts(few.clone()), Arg::Time(t)]),
        "replan.opportunities" => named(vec![Arg::Time(t), Arg::Texts(few.clone())]),
        "replan.users" => named(vec![Arg::Texts(few.clone())]),
        "replan.history" => named(vec![
            Arg::Texts(few.clone()),
            Arg::Time(t - TimeDelta::days(28)),
            Arg::Time(t),
        ]),
        "replan.activity" => named(vec![
            Arg::Texts(few.clone()),
            Arg::Date((t - TimeDelta::days(28)).date_naive()),
            Arg::Date(t.date_naive()),
        ]),
        "replan.arrivals" => named(vec![
            Arg::Texts(few.clone()),
            Arg::Time(t - TimeDelta::days(7)),
            Arg::Time(t),
        ]),
        "replan.channel_usage" => every(vec![
            Arg::Text("push".into()),
            Arg::Time(t - TimeDelta::days(1)),
            Arg::Texts(few.clone()),
        ]),
        // One page of eight.
        "sweep.users" => every(vec![Arg::Int4(0), Arg::Int4(BUCKETS / 8), Arg::Time(t)]),
        "sweep.opportunities" => every(vec![Arg::Time(t), Arg::Int4(0), Arg::Int4(BUCKETS / 8)]),
        "publish.settle" => every(vec![Arg::Time(t)]),
        "publish.supersede_pending" | "publish.supersede_counterfactual" => {
            named(vec![Arg::Time(t), Arg::Texts(few.clone())])
        }
        "publish.insert_items" => after_seqscan_off(vec![
            Arg::Int8(f.plan_id),
            Arg::Texts(few.clone()),
            Arg::Int8s(f.open.clone()),
            Arg::Texts(vec!["push".into(); n]),
            Arg::Times(vec![t; n]),
            Arg::Times(vec![t + TimeDelta::hours(1); n]),
            Arg::Float8s(vec![1.0; n]),
            Arg::Float8s(vec![0.9; n]),
            Arg::OptTexts(vec![Some("exp".into()); n]),
            Arg::OptTexts(vec![None; n]),
            Arg::Jsons(vec![json!({"conversion": 0.1}); n]),
            Arg::Time(t),
            Arg::Texts(vec!["pending".into(); n]),
            Arg::OptTexts(vec![None; n]),
        ]),
        "publish.delete_seen" => {
            after_seqscan_off(vec![Arg::Texts(few.clone()), Arg::Int8s(f.seqs.clone())])
        }
        "publish.delete_revisits" => after_seqscan_off(vec![Arg::Texts(few.clone())]),
        "publish.insert_revisits" => after_seqscan_off(vec![
            Arg::Texts(few.clone()),
            Arg::Times(vec![t + TimeDelta::hours(1); n]),
        ]),
        _ => return None,
    })
}

/// What one `EXPLAIN` shows, per per-user table: partitions by remainder.
#[derive(Debug, Default)]
struct Touched {
    /// Partitions the plan lists: scan nodes and an update's or delete's target tables.
    planned: BTreeMap<String, BTreeSet<u32>>,
    /// Partitions of scan nodes only.
    scanned: BTreeMap<String, BTreeSet<u32>>,
    /// Partitions that ran: a scan executed at least once, or a row written.
    ran: BTreeMap<String, BTreeSet<u32>>,
    /// Partitions pruned when the executor started (a generic plan's run-time pruning).
    subplans_removed: i64,
}

impl Touched {
    fn walk(&mut self, node: &Value, parts: &HashMap<String, (String, u32)>) {
        match node {
            Value::Object(map) => {
                if let Some((table, r)) = map
                    .get("Relation Name")
                    .and_then(Value::as_str)
                    .and_then(|name| parts.get(name))
                {
                    self.planned.entry(table.clone()).or_default().insert(*r);
                    // "Target Tables" entries have no node type.
                    if map.contains_key("Node Type") {
                        self.scanned.entry(table.clone()).or_default().insert(*r);
                    }
                    if map.get("Actual Loops").and_then(Value::as_i64).unwrap_or(0) > 0 {
                        self.ran.entry(table.clone()).or_default().insert(*r);
                    }
                }
                if let Some(n) = map.get("Subplans Removed").and_then(Value::as_i64) {
                    self.subplans_removed += n;
                }
                for v in map.values() {
                    self.walk(v, parts);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(v, parts);
                }
            }
            _ => {}
        }
    }

    fn ran_anywhere(&self) -> BTreeSet<u32> {
        self.ran.values().flatten().copied().collect()
    }
}

fn show(sets: &BTreeMap<String, BTreeSet<u32>>) -> String {
    sets.iter()
        .map(|(t, rs)| format!("{t} {rs:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ingests, publishes, pulls, acks, extends and reads through the store on the partitioned
/// schema; returns what the statements' examples name.
async fn run_the_store(store: &Store, few: &[String], extra: &[String]) -> Fixture {
    let t = t0();
    let everyone: Vec<String> = few.iter().chain(extra).cloned().collect();
    let users: Vec<User> = everyone
        .iter()
        .map(|u| User {
            user_id: u.clone(),
            timezone: "Europe/Stockholm".into(),
            locale: Some("sv-SE".into()),
            attributes: json!({}),
            opted_out_categories: Vec::new(),
            channels: vec![tern_store::ChannelState {
                channel: "email".into(),
                reachable: true,
                opted_out: true,
            }],
        })
        .collect();
    store.upsert_users(&users, t).await.unwrap();

    // Five opportunities each: four get an item, the fifth stays open and unplanned.
    let batch: Vec<_> = everyone
        .iter()
        .flat_map(|u| (0..5).map(move |k| opportunity(u, &format!("k{k}"))))
        .collect();
    let ids = ingest_all(store, &batch).await;
    let again = store.ingest_opportunities(&batch).await.unwrap();
    assert_eq!(again.duplicate_count(), batch.len(), "ingest is idempotent");
    let items: Vec<_> = batch
        .iter()
        .zip(&ids)
        .enumerate()
        .filter(|(i, _)| i % 5 != 4)
        .map(|(_, (o, id))| item(&o.user_id, *id, "push"))
        .collect();
    let published = store
        .publish_plan(&plan(), &items, &Supersede::Users(everyone.clone()), t)
        .await
        .unwrap();
    assert_eq!(published.items, items.len() as u64);

    let leased = store
        .lease(
            &LeaseRequest {
                holder: "puller".into(),
                channels: vec!["push".into()],
                max_items: 1000,
                lease_for: TimeDelta::minutes(5),
            },
            t,
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), items.len(), "every item is due once");
    // Per user: the first item sent, the second skipped (a batch), the third failed (alone); the
    // fourth stays leased, and its lease is extended.
    let mut batch_acks = Vec::new();
    let mut kept = Vec::new();
    for u in &everyone {
        let mine: Vec<_> = leased.iter().filter(|i| &i.user_id == u).collect();
        assert_eq!(mine.len(), 4);
        let ack = |i: usize, status| Ack {
            user_id: u.clone(),
            item_id: mine[i].item_id,
            lease_token: mine[i].lease_token,
            status,
        };
        batch_acks.push(ack(0, AckStatus::Sent));
        batch_acks.push(ack(1, AckStatus::Skipped));
        let single = store.ack(&ack(2, AckStatus::Failed), t).await.unwrap();
        assert_eq!(single, AckResult::Acked { message_id: None });
        let extended = store
            .extend_lease(
                u,
                mine[3].item_id,
                mine[3].lease_token,
                TimeDelta::minutes(10),
                t,
            )
            .await
            .unwrap();
        assert_eq!(extended, Some(t + TimeDelta::minutes(10)));
        kept.push((mine[3].item_id, mine[3].lease_token, mine[3].opportunity_id));
    }
    let acked = store.ack_many(&batch_acks, t).await.unwrap();
    assert!(acked.iter().all(|r| matches!(r, AckResult::Acked { .. })));
    let sent_item = batch_acks[0].item_id;
    assert_eq!(batch_acks[0].user_id, few[0]);

    store
        .record_activity(
            &everyone
                .iter()
                .map(|u| (u.clone(), (t - TimeDelta::days(1)).date_naive()))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();

    // What a replan of the named users reads: the unplanned opportunity, a message and a leased
    // item as history, the opted-out channel, the activity.
    let input = store
        .planning_input(t, TimeDelta::days(28), Some(few))
        .await
        .unwrap();
    assert_eq!(input.len(), few.len());
    for u in &input {
        // The unplanned one, and the one whose item failed.
        assert_eq!(u.opportunities.len(), 2, "{}", u.user_id);
        assert_eq!(u.history.len(), 2, "{}", u.user_id);
        assert_eq!(u.opted_out_channels, vec!["email".to_string()]);
        assert_eq!(u.active_days.len(), 1);
        assert_eq!(u.timezone, "Europe/Stockholm");
    }
    // And a sweep's page of every bucket.
    let page = store
        .planning_input_buckets(t, TimeDelta::days(28), 0..BUCKETS)
        .await
        .unwrap();
    assert_eq!(page.len(), everyone.len());
    let in_buckets = store.users_in_buckets(0..BUCKETS, t).await.unwrap();
    assert_eq!(in_buckets.len(), everyone.len());
    let queued = store.queued_for(few, t).await.unwrap();
    let mut seqs = Vec::new();
    for u in few {
        seqs.push(
            queued
                .iter()
                .find(|q| &q.user_id == u)
                .unwrap_or_else(|| panic!("{u} is queued"))
                .seq,
        );
    }
    let open = few
        .iter()
        .map(|u| {
            let i = batch
                .iter()
                .position(|o| &o.user_id == u && o.dedupe_key == "k4")
                .unwrap();
            ids[i]
        })
        .collect();
    Fixture {
        one: few[0].clone(),
        few: few.to_vec(),
        leased: kept[..few.len()].to_vec(),
        sent_item,
        open,
        seqs,
        plan_id: published.plan_id,
    }
}

/// Other users' rows (800 users, 40,000 opportunities and items, their messages, outcomes,
/// channels, activity and queue rows), analysed: a database in use, as the planner sees it.
/// Some items are leased, as some always are while delivery services pull: with none, the
/// small index of leased items (`schedule_items_leased`) reads as empty, and a batch ack's
/// update prefers reading it whole, in every partition, to probing its keys.
async fn fill(conn: &mut PgConnection, plan_id: i64) {
    let t = t0();
    for sql in [
        "INSERT INTO users (user_id) SELECT 'filler-' || n FROM generate_series(0, 799) AS n",
        "INSERT INTO user_channels (user_id, channel, opted_out) \
         SELECT 'filler-' || n, c, n % 7 = 0 \
         FROM generate_series(0, 799) AS n, unnest(ARRAY['push', 'email']) AS c",
        "INSERT INTO opportunities (user_id, dedupe_key, source, template, category, priority, \
           channels, created_at, expires_at, state) \
         SELECT 'filler-' || (n % 800), 'filler-' || n, 'filler', 'new_release', 'content', \
           'marketing', ARRAY['push'], $1 - interval '10 days' + n * interval '10 seconds', \
           $1 + interval '2 days', (ARRAY['open', 'sent', 'expired', 'cancelled'])[1 + n % 4] \
         FROM generate_series(0, 39999) AS n",
        "INSERT INTO schedule_items (user_id, plan_id, opportunity_id, channel, send_after, \
           send_before, value, propensity, state, withheld_by, lease_holder, lease_token, \
           lease_expires_at) \
         SELECT user_id, $2, opportunity_id, 'push', \
           $1 + (opportunity_id % 120 - 60) * interval '1 minute', $1 + interval '2 hours', \
           1, 0.5, state, CASE WHEN state = 'counterfactual' THEN 'holdout' END, \
           CASE WHEN state = 'leased' THEN 'filler' END, \
           CASE WHEN state = 'leased' THEN gen_random_uuid() END, \
           CASE WHEN state = 'leased' THEN $1 + interval '5 minutes' END \
         FROM (SELECT o.user_id, o.opportunity_id, \
                 CASE WHEN o.state = 'sent' THEN 'sent' \
                      WHEN o.state <> 'open' THEN 'superseded' \
                      WHEN o.opportunity_id % 49 = 0 THEN 'leased' \
                      ELSE (ARRAY['pending', 'superseded', 'counterfactual']) \
                           [1 + o.opportunity_id % 3] \
                 END AS state \
               FROM opportunities o WHERE o.source = 'filler') AS f",
        "INSERT INTO messages (user_id, opportunity_id, item_id, channel, category, priority, \
           template, sent_at, plan_id) \
         SELECT s.user_id, s.opportunity_id, s.item_id, s.channel, 'content', 'marketing', \
           'new_release', $1 - (s.item_id % 1000) * interval '1 hour', s.plan_id \
         FROM schedule_items s WHERE s.state = 'sent' AND s.user_id LIKE 'filler-%'",
        "INSERT INTO outcomes (user_id, message_id, kind, occurred_at) \
         SELECT user_id, message_id, 'opened', sent_at + interval '1 hour' FROM messages \
         WHERE message_id % 2 = 0 AND user_id LIKE 'filler-%'",
        "INSERT INTO user_activity (user_id, day) \
         SELECT 'filler-' || n, ($1 - d * interval '1 day')::date \
         FROM generate_series(0, 799) AS n, generate_series(0, 9) AS d",
        "INSERT INTO replan_queue (user_id, due_at, reason) \
         SELECT 'filler-' || n, $1 - interval '1 minute', 'opportunity' \
         FROM generate_series(0, 799) AS n",
    ] {
        let mut q = sqlx::query(sql);
        if sql.contains("$1") {
            q = q.bind(t);
        }
        if sql.contains("$2") {
            q = q.bind(plan_id);
        }
        q.execute(&mut *conn).await.unwrap();
    }
    sqlx::raw_sql("ANALYZE").execute(&mut *conn).await.unwrap();
}

/// Rows written per table, as this backend counts them. Not only this transaction's: in
/// PostgreSQL 15 the `pg_stat_xact_*` views include earlier transactions' counts that the
/// backend has not reported yet, so a statement's writes are the difference it makes.
async fn writes(conn: &mut PgConnection) -> HashMap<String, i64> {
    sqlx::query_as(
        "SELECT relname::text, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// `EXPLAIN (FORMAT JSON)` of prepared statement `name` with `args` (with `ANALYZE`: executed in
/// a transaction that is rolled back, and the partitions it wrote rows to added).
async fn explain(
    conn: &mut PgConnection,
    parts: &HashMap<String, (String, u32)>,
    name: &str,
    case: &Case,
    analyze: bool,
) -> Touched {
    let args: Vec<String> = case.args.iter().map(Arg::literal).collect();
    let options = if analyze {
        "ANALYZE, FORMAT JSON, COSTS OFF, TIMING OFF, SUMMARY OFF"
    } else {
        "FORMAT JSON, COSTS OFF"
    };
    let sql = format!("EXPLAIN ({options}) EXECUTE {name}({})", args.join(", "));
    let mut tx = conn.begin().await.unwrap();
    if case.seqscan_off {
        sqlx::raw_sql("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let before = writes(&mut tx).await;
    let plan: Value = sqlx::query_scalar(&sql)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut touched = Touched::default();
    touched.walk(&plan, parts);
    for (name, n) in writes(&mut tx).await {
        if n > before.get(&name).copied().unwrap_or(0) {
            if let Some((table, r)) = parts.get(&name) {
                touched.ran.entry(table.clone()).or_default().insert(*r);
            }
        }
    }
    tx.rollback().await.unwrap();
    touched
}

#[tokio::test]
async fn hot_paths_prune_to_their_users_partitions_or_fan_out_as_documented() {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    partition(&mut conn).await;
    let parts = partitions(&mut conn).await;
    assert_eq!(parts.len(), PER_USER.len() * MODULUS as usize);

    // Three users in three different partitions, and two more anywhere.
    let mut few: Vec<String> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    let mut remainders: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0.. {
        let user = format!("user-{i}");
        let r = remainder(&mut conn, &user).await;
        if few.len() < 3 && !few.iter().any(|u| remainders[u] == r) {
            few.push(user.clone());
        } else if extra.len() < 2 {
            extra.push(user.clone());
        }
        remainders.insert(user, r);
        if few.len() == 3 && extra.len() == 2 {
            break;
        }
    }
    let fixture = run_the_store(&db.store, &few, &extra).await;
    fill(&mut conn, fixture.plan_id).await;

    let all: BTreeSet<u32> = (0..MODULUS).collect();
    let mut seen = BTreeSet::new();
    let mut report = Vec::new();
    sqlx::raw_sql("SET plan_cache_mode = force_custom_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    for (i, hot) in HOT_PATHS.iter().enumerate() {
        assert!(seen.insert(hot.path), "{} is listed twice", hot.path);
        let case = case(hot.path, &fixture).unwrap_or_else(|| {
            panic!(
                "no example arguments for hot statement {}: add them to `case`",
                hot.path
            )
        });
        let name = format!("hot_{i}");
        let types: Vec<&str> = case.args.iter().map(Arg::pg_type).collect();
        sqlx::raw_sql(&format!(
            "PREPARE {name} ({}) AS {}",
            types.join(", "),
            hot.sql
        ))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("PREPARE {}: {e}", hot.path));
        let named: BTreeSet<u32> = case.users.iter().map(|u| remainders[u]).collect();
        let got = explain(&mut conn, &parts, &name, &case, true).await;
        let at = format!(
            "{} ({:?}): planned {}; ran {}",
            hot.path,
            hot.routes,
            show(&got.planned),
            show(&got.ran)
        );
        match hot.routes {
            Routes::OneUser => {
                assert_eq!(named.len(), 1);
                assert!(!got.planned.is_empty(), "{at}");
                for (table, rs) in &got.planned {
                    assert_eq!(rs, &named, "{at}: {table} is planned beyond the user's");
                }
                assert_eq!(got.ran_anywhere(), named, "{at}");
                // A generic plan (parameters unknown when planned) prunes when the executor
                // starts: the scans left are the user's partition's.
                sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let generic = explain(&mut conn, &parts, &name, &case, false).await;
                sqlx::raw_sql("SET plan_cache_mode = force_custom_plan")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                assert!(
                    generic.subplans_removed >= i64::from(MODULUS - 1),
                    "{at}: generic plan {generic:?}"
                );
                for (table, rs) in &generic.scanned {
                    assert_eq!(
                        rs, &named,
                        "{at}: generic plan scans {table} beyond the user's"
                    );
                }
                report.push(format!(
                    "{at}; generic plan: {} subplans removed, scans {}, lists {}",
                    generic.subplans_removed,
                    show(&generic.scanned),
                    show(&generic.planned)
                ));
                continue;
            }
            Routes::NamedUsers | Routes::KeyedBatch => {
                assert_eq!(
                    named.len(),
                    case.users.len(),
                    "the users are in distinct partitions"
                );
                for (table, rs) in &got.ran {
                    assert!(
                        rs.is_subset(&named),
                        "{at}: {table} ran beyond the named users'"
                    );
                }
                assert_eq!(got.ran_anywhere(), named, "{at}");
                let pruned_when_planned = got.planned.values().any(|rs| rs == &named);
                if hot.routes == Routes::NamedUsers {
                    assert!(pruned_when_planned, "{at}: no table is pruned when planned");
                } else {
                    for (table, rs) in &got.planned {
                        assert_eq!(
                            rs, &all,
                            "{at}: {table} is pruned when planned: `NamedUsers`, then?"
                        );
                    }
                }
            }
            Routes::EveryPartition => {
                assert!(
                    got.planned
                        .iter()
                        .any(|(t, rs)| rs == &all && got.ran.get(t) == Some(&all)),
                    "{at}: no table is read in every partition"
                );
            }
        }
        report.push(at);
    }
    println!("{}", report.join("\n"));
    conn.close().await.unwrap();
}
