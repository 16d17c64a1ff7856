//! Prometheus metrics: a small registry and the `/metrics` HTTP endpoint.
//!
//! Every metric tern exports is declared once in [`METRICS`], with its type and help, so that the
//! exposition always lists every family (dashboards see zeros rather than gaps) and a name used in
//! code that is not declared there is caught by a test. The registry is a mutex around ordered
//! maps: metrics are updated per request and per plan, not per row, so contention is negligible,
//! and the text format is produced in a stable order.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric family: name, type, label names, help.
pub const METRICS: &[(&str, Kind, &[&str], &str)] = &[
    (
        "tern_plans_total",
        Kind::Counter,
        &["trigger", "result"],
        "Plans run, by trigger (a Replan document or manual) and result (published, failed).",
    ),
    (
        "tern_plan_duration_seconds",
        Kind::Histogram,
        &[],
        "Wall time of a plan, from the lock to the published schedule.",
    ),
    (
        "tern_plan_pages_total",
        Kind::Counter,
        &["result"],
        "Pages of full replans (sweeps), by result: published, lost (the lease passed to another replica first), failed.",
    ),
    (
        "tern_plan_users_total",
        Kind::Counter,
        &["scope"],
        "Users planned, by the plan's scope: sweep, incremental, users.",
    ),
    (
        "tern_replan_queue",
        Kind::Gauge,
        &["state"],
        "Rows in the replan queue after the last incremental replan: due (waiting for one) and later (revisits).",
    ),
    (
        "tern_plan_candidates",
        Kind::Gauge,
        &[],
        "Candidates (opportunity x channel) in the last plan.",
    ),
    (
        "tern_plan_chosen_total",
        Kind::Counter,
        &["channel"],
        "Schedule items published, by channel.",
    ),
    (
        "tern_plan_suppressed_total",
        Kind::Counter,
        &["reason"],
        "Candidates not chosen, by reason.",
    ),
    (
        "tern_generator_opportunities_total",
        Kind::Counter,
        &["generator"],
        "Opportunities created by generators (from events or scheduled runs), by generator.",
    ),
    (
        "tern_generator_errors_total",
        Kind::Counter,
        &["generator"],
        "Users for whom a generator's expression failed (they got nothing from it), by generator.",
    ),
    (
        "tern_generator_runs_total",
        Kind::Counter,
        &["generator"],
        "Scheduled generator runs, by generator.",
    ),
    (
        "tern_trainings_total",
        Kind::Counter,
        &["result"],
        "Scheduled model trainings, by result (promoted; registered, kept as a candidate; failed).",
    ),
    (
        "tern_pull_requests_total",
        Kind::Counter,
        &["channel"],
        "Pull requests, by requested channel.",
    ),
    (
        "tern_pulled_items_total",
        Kind::Counter,
        &["channel"],
        "Items leased to delivery services, by channel.",
    ),
    (
        "tern_acks_total",
        Kind::Counter,
        &["result"],
        "Acks, by result (acked, already_acked, stale, conflict, cancelled, not_found).",
    ),
    (
        "tern_lease_expired_total",
        Kind::Counter,
        &[],
        "Items leased again after an earlier lease expired unacknowledged.",
    ),
    (
        "tern_grpc_requests_total",
        Kind::Counter,
        &["method", "code"],
        "gRPC requests, by method and status code.",
    ),
    (
        "tern_grpc_request_duration_seconds",
        Kind::Histogram,
        &["method"],
        "gRPC request handling time, by method.",
    ),
    (
        "tern_policy_reloads_total",
        Kind::Counter,
        &["result"],
        "Policy bundle changes seen, by result (ok, rejected).",
    ),
    (
        "tern_policy_info",
        Kind::Gauge,
        &["version"],
        "The active policy bundle's version (always 1).",
    ),
    (
        "tern_model_info",
        Kind::Gauge,
        &["version"],
        "The version of the model used by the last plan (always 1; none without a model).",
    ),
    (
        "tern_database_errors_total",
        Kind::Counter,
        &[],
        "Requests that failed because of the database (unavailable or an unexpected error).",
    ),
    (
        "tern_opportunities_submitted_total",
        Kind::Counter,
        &["result"],
        "Submitted opportunities, by result (created, duplicate, rejected).",
    ),
];

/// Upper bounds of histogram buckets, in seconds: 1 ms to about 65 s.
const BUCKETS: [f64; 17] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768, 65.536,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        debug_assert!(
            declared(name, Kind::Counter),
            "{name} is not a declared counter"
        );
        self.with(|m| {
            *m.values
                .entry(name)
                .or_default()
                .entry(labels(pairs))
                .or_default() += by
        });
    }

    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, pairs, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        debug_assert!(
            declared(name, Kind::Gauge),
            "{name} is not a declared gauge"
        );
        self.with(|m| {
            m.values
                .entry(name)
                .or_default()
                .insert(labels(pairs), value)
        });
    }

    /// An info gauge: the one series `name{label="value"} 1`, replacing any earlier value.
    pub fn set_info(&self, name: &'static str, label: &'static str, value: &str) {
        self.with(|m| {
            let family = m.values.entry(name).or_default();
            family.clear();
            family.insert(labels(&[(label, value)]), 1.0);
        });
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        debug_assert!(
            declared(name, Kind::Histogram),
            "{name} is not a declared histogram"
        );
        self.with(|m| {
            let h = m
                .histograms
                .entry(name)
                .or_default()
                .entry(labels(pairs))
                .or_default();
            for (i, le) in BUCKETS.iter().enumerate() {
                if value <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += value;
        });
    }

    /// A counter's or gauge's current value (0 if never set): for tests and status.
    pub fn value(&self, name: &str, pairs: &[(&'static str, &str)]) -> f64 {
        let key = labels(pairs);
        self.with(|m| {
            m.values
                .get(name)
                .and_then(|f| f.get(&key))
                .copied()
                .unwrap_or(0.0)
        })
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            for (name, kind, label_names, help) in METRICS {
                let kind_name = match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind_name}");
                match kind {
                    Kind::Histogram => {
                        for (l, h) in m.histograms.get(name).into_iter().flatten() {
                            for (i, le) in BUCKETS.iter().enumerate() {
                                let _ = writeln!(
                                    out,
                                    "{name}_bucket{} {}",
                                    render_labels(l, Some(&le.to_string())),
                                    h.buckets[i]
                                );
                            }
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {}",
                                render_labels(l, Some("+Inf")),
                                h.count
                            );
                            let _ = writeln!(out, "{name}_sum{} {}", render_labels(l, None), h.sum);
                            let _ =
                                writeln!(out, "{name}_count{} {}", render_labels(l, None), h.count);
                        }
                    }
                    _ => {
                        let family = m.values.get(name);
                        // Unlabelled counters start at zero; labelled series appear when used.
                        if family.is_none_or(|f| f.is_empty())
                            && *kind == Kind::Counter
                            && label_names.is_empty()
                        {
                            let _ = writeln!(out, "{name} 0");
                        }
                        for (l, v) in family.into_iter().flatten() {
                            let _ = writeln!(out, "{name}{} {v}", render_labels(l, None));
                        }
                    }
                }
            }
        });
        out
    }
}

fn declared(name: &str, kind: Kind) -> bool {
    METRICS.iter().any(|(n, k, _, _)| *n == name && *k == kind)
}

fn render_labels(l: &Labels, le: Option<&str>) -> String {
    if l.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` (and `GET /healthz`) over plain HTTP/1.1 until `shutdown` completes.
/// Deliberately minimal: one request per connection, no keep-alive; scrapers need no more.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut socket, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = socket.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                std::io::Result::Ok(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let line = request.lines().next().unwrap_or("");
            let (status, content_type, body) =
                match line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
                    ["GET", "/metrics"] => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.render(),
                    ),
                    ["GET", "/healthz"] => ("200 OK", "text/plain", "ok\n".to_string()),
                    ["GET", _] => ("404 Not Found", "text/plain", "not found\n".to_string()),
                    _ => (
                        "405 Method Not Allowed",
                        "text/plain",
                        "only GET\n".to_string(),
                    ),
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_lists_every_family_with_its_series() {
        let m = Metrics::default();
        m.inc("tern_acks_total", &[("result", "acked")]);
        m.add("tern_acks_total", &[("result", "acked")], 2.0);
        m.set_info("tern_policy_info", "version", "abc");
        m.set_info("tern_policy_info", "version", "def");
        m.observe("tern_plan_duration_seconds", &[], 0.003);
        let text = m.render();
        for (name, _, _, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(
            text.contains("tern_acks_total{result=\"acked\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("tern_policy_info{version=\"def\"} 1\n"));
        assert!(!text.contains("version=\"abc\""));
        assert!(text.contains("tern_plan_duration_seconds_bucket{le=\"0.002\"} 0\n"));
        assert!(text.contains("tern_plan_duration_seconds_bucket{le=\"0.004\"} 1\n"));
        assert!(text.contains("tern_plan_duration_seconds_count 1\n"));
        assert!(text.contains("tern_lease_expired_total 0\n"));
        assert_eq!(m.value("tern_acks_total", &[("result", "acked")]), 3.0);
    }
}
