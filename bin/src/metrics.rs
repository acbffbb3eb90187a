//! The metrics `/metrics` serves, in the Prometheus text format through `prometheus-client`:
//! the proxy's own counters (handshakes, open connections, requests, upstream timings and
//! errors), updated as traffic flows, and the certificates' figures and ACME request timings,
//! read from each listener's status at scrape time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use certloop_tokio::{DURATION_BUCKETS, DurationHistogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cert_status::{CertRow, CertSource, CertSources, live_rows};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    listener: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    listener: String,
    code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    listener: String,
    kind: &'static str,
}

fn upstream_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric of the process. Built once at startup; listeners take their handles from it.
pub(crate) struct Metrics {
    registry: Registry,
    handshakes: Family<ResultLabel, Counter>,
    connections: Family<ListenerLabel, Gauge>,
    requests: Family<CodeLabel, Counter>,
    upstream_duration: Family<ListenerLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<KindLabel, Counter>,
    certificates: Arc<Certificates>,
}

/// One listener's metrics, resolved once so that counting costs an atomic add.
#[derive(Clone)]
pub(crate) struct ListenerMetrics {
    handshake_ok: Counter,
    handshake_failed: Counter,
    handshake_timeout: Counter,
    connections_open: Gauge,
    /// `1xx` to `5xx`.
    requests: [Counter; 5],
    upstream_duration: Histogram,
    upstream_502: Counter,
    upstream_504: Counter,
}

/// How a TLS handshake ended.
pub(crate) enum Handshake {
    Completed,
    Failed,
    TimedOut,
}

/// Counts one open connection until dropped.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ListenerMetrics {
    pub(crate) fn handshake(&self, outcome: Handshake) {
        match outcome {
            Handshake::Completed => &self.handshake_ok,
            Handshake::Failed => &self.handshake_failed,
            Handshake::TimedOut => &self.handshake_timeout,
        }
        .inc();
    }

    /// A connection opened; it counts as open until the guard drops.
    pub(crate) fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// A response with `status` was sent.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
    }

    /// The upstream answered (with headers) after `took`.
    pub(crate) fn upstream_answered(&self, took: Duration) {
        self.upstream_duration.observe(took.as_secs_f64());
    }

    /// The upstream could not be reached (502) or did not answer in time (504).
    pub(crate) fn upstream_failed(&self, timed_out: bool) {
        if timed_out {
            self.upstream_504.inc();
        } else {
            self.upstream_502.inc();
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let handshakes = Family::<ResultLabel, Counter>::default();
        let connections = Family::<ListenerLabel, Gauge>::default();
        let requests = Family::<CodeLabel, Counter>::default();
        let upstream_duration =
            Family::<ListenerLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                upstream_histogram,
            );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "certloop_tls_handshakes",
            "TLS handshakes by result (ok, failed, timeout)",
            handshakes.clone(),
        );
        registry.register(
            "certloop_connections_open",
            "Client connections open now",
            connections.clone(),
        );
        registry.register(
            "certloop_http_requests",
            "Responses sent by the proxy, by status class",
            requests.clone(),
        );
        registry.register(
            "certloop_upstream_duration_seconds",
            "Time until the upstream answered with headers",
            upstream_duration.clone(),
        );
        registry.register(
            "certloop_upstream_errors",
            "Requests the upstream failed: 502 (unreachable) or 504 (timed out)",
            upstream_errors.clone(),
        );
        let certificates = Arc::new(Certificates::default());
        registry.register_collector(Box::new(certificates.clone()));
        Self {
            registry,
            handshakes,
            connections,
            requests,
            upstream_duration,
            upstream_errors,
            certificates,
        }
    }

    /// The metrics of the listener `name`.
    pub(crate) fn listener(&self, name: &str) -> ListenerMetrics {
        let listener = name.to_owned();
        let handshake = |result| {
            let labels = ResultLabel {
                listener: listener.clone(),
                result,
            };
            self.handshakes.get_or_create(&labels).clone()
        };
        let requests = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|code_class| {
            let labels = CodeLabel {
                listener: listener.clone(),
                code_class,
            };
            self.requests.get_or_create(&labels).clone()
        });
        let error = |kind| {
            let labels = KindLabel {
                listener: listener.clone(),
                kind,
            };
            self.upstream_errors.get_or_create(&labels).clone()
        };
        let by_listener = ListenerLabel {
            listener: listener.clone(),
        };
        ListenerMetrics {
            handshake_ok: handshake("ok"),
            handshake_failed: handshake("failed"),
            handshake_timeout: handshake("timeout"),
            connections_open: self.connections.get_or_create(&by_listener).clone(),
            requests,
            upstream_duration: self.upstream_duration.get_or_create(&by_listener).clone(),
            upstream_502: error("502"),
            upstream_504: error("504"),
        }
    }

    /// From now on, scrapes report these certificates.
    pub(crate) fn watch_certificates(&self, sources: CertSources) {
        let _ = self.certificates.0.set(sources);
    }

    /// Everything, in the Prometheus text format (0.0.4).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }
}

/// The certificates' figures, read from their status at each scrape.
#[derive(Default)]
struct Certificates(OnceLock<CertSources>);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Collector for Certificates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sources) = self.0.get() else {
            return Ok(());
        };
        let now = certloop_acme::adapter::system_clock().as_secs();
        let sources = sources.read().unwrap_or_else(|e| e.into_inner());
        let rows = live_rows(&sources);
        encode_certificates(&mut encoder, &rows, now)?;
        let mut durations = encoder.encode_descriptor(
            "certloop_acme_request_duration_seconds",
            "Time the CA took to answer, by ACME operation",
            None,
            MetricType::Histogram,
        )?;
        for (listener, source) in sources.iter() {
            let CertSource::Acme(handle) = source else {
                continue;
            };
            for (operation, histogram) in handle.acme_request_durations() {
                let labels = [
                    ("listener", listener.as_str()),
                    ("operation", operation.as_str()),
                ];
                encode_histogram(durations.encode_family(&labels)?, &histogram)?;
            }
        }
        let fleet: Vec<FleetStorageRow> = (sources.iter())
            .filter_map(|(listener, source)| match source {
                CertSource::Acme(handle) => handle.fleet_storage().map(|status| FleetStorageRow {
                    listener: listener.clone(),
                    reachable: status.reachable,
                    since: status.since.as_secs(),
                }),
                CertSource::Manual(_) => None,
            })
            .collect();
        encode_fleet_storage(&mut encoder, &fleet)
    }
}

/// One ACME listener's view of its fleet's Redis (fleet mode only).
struct FleetStorageRow {
    listener: String,
    reachable: bool,
    /// When the current state began (Unix seconds).
    since: u64,
}

/// A gauge's value for one fleet-mode listener.
type FleetGauge = fn(&FleetStorageRow) -> i64;

/// Whether each fleet-mode listener reaches Redis, and since when: while it does not, no
/// certificate is ordered, so `certloop_cert_not_after_seconds` is when Redis must be back.
fn encode_fleet_storage(
    encoder: &mut DescriptorEncoder<'_>,
    rows: &[FleetStorageRow],
) -> Result<(), std::fmt::Error> {
    let gauges: [(&str, &str, FleetGauge); 2] = [
        (
            "certloop_fleet_storage_up",
            "1 while the fleet's Redis answers; no certificate is ordered while 0",
            |row| i64::from(row.reachable),
        ),
        (
            "certloop_fleet_storage_since_seconds",
            "When the fleet storage's current state (up or down) began (Unix time)",
            |row| seconds(row.since),
        ),
    ];
    for (name, help, value) in gauges {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for row in rows {
            let labels = [("listener", row.listener.as_str())];
            metric.encode_family(&labels)?.encode_gauge(&value(row))?;
        }
    }
    Ok(())
}

fn encode_histogram(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    histogram: &DurationHistogram,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = (DURATION_BUCKETS.iter().copied())
        .zip(histogram.buckets.iter().copied())
        .chain([(f64::INFINITY, histogram.count)])
        .collect();
    // Cumulative already; the encoder takes per-bucket counts and sums them itself.
    let mut previous = 0;
    let per_bucket: Vec<(f64, u64)> = buckets
        .into_iter()
        .map(|(bound, cumulative)| {
            let count = cumulative - previous;
            previous = cumulative;
            (bound, count)
        })
        .collect();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        histogram.sum_seconds,
        histogram.count,
        &per_bucket,
        None,
    )
}

/// A gauge's value for one certificate at `now`, if it has one.
type RowGauge = fn(&CertRow, u64) -> Option<i64>;

/// The per-certificate gauges, the info metric and the order counters.
fn encode_certificates(
    encoder: &mut DescriptorEncoder<'_>,
    rows: &[CertRow],
    now: u64,
) -> Result<(), std::fmt::Error> {
    let gauges: [(&str, &str, RowGauge); 5] = [
        (
            "certloop_cert_not_after_seconds",
            "End of validity of the served certificate (Unix time)",
            |row, _| row.not_after.map(seconds),
        ),
        (
            "certloop_cert_not_before_seconds",
            "Start of validity of the served certificate (Unix time)",
            |row, _| row.not_before.map(seconds),
        ),
        (
            "certloop_cert_next_renewal_seconds",
            "When the next order starts: the renewal point, or the retry after failures (Unix time)",
            |row, _| row.next_order_at.or(row.renew_at).map(seconds),
        ),
        (
            "certloop_cert_renewal_failures_consecutive",
            "Failed orders since the last success",
            |row, _| Some(i64::from(row.failures)),
        ),
        (
            "certloop_cert_expired",
            "1 while the served certificate has expired (it is still served)",
            |row, now| row.not_after.map(|until| i64::from(until <= now)),
        ),
    ];
    for (name, help, value) in gauges {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for row in rows {
            if let Some(value) = value(row, now) {
                let labels = [("listener", row.listener.as_str()), ("cert", row.cert())];
                metric.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
    }
    let mut info = encoder.encode_descriptor(
        "certloop_cert",
        "The served certificate's issuer, serial and key type",
        None,
        MetricType::Info,
    )?;
    for row in rows {
        if let (Some(issuer), Some(serial), Some(key_type)) =
            (&row.issuer, &row.serial, &row.key_type)
        {
            let labels = [
                ("listener", row.listener.as_str()),
                ("cert", row.cert()),
                ("issuer", issuer.as_str()),
                ("serial", serial.as_str()),
                ("key_type", key_type.as_str()),
            ];
            info.encode_info(&labels)?;
        }
    }
    let mut orders = encoder.encode_descriptor(
        "certloop_acme_orders",
        "ACME orders since start, by result (issued, or the class of the failure)",
        None,
        MetricType::Counter,
    )?;
    for row in rows.iter().filter(|r| r.source == "acme") {
        for (result, count) in &row.orders {
            let labels = [
                ("listener", row.listener.as_str()),
                ("cert", row.cert()),
                ("result", result.as_str()),
            ];
            let counter = prometheus_client::metrics::counter::ConstCounter::new(*count);
            counter.encode(orders.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn seconds(unix: u64) -> i64 {
    i64::try_from(unix).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_counters_and_certificates_appear_in_the_exposition() {
        let metrics = Metrics::new();
        let web = metrics.listener("web");
        web.handshake(Handshake::Completed);
        web.handshake(Handshake::TimedOut);
        let open = web.connection_opened();
        web.response(200);
        web.response(204);
        web.response(502);
        web.upstream_failed(false);
        web.upstream_answered(Duration::from_millis(7));
        let text = metrics.encode();
        for line in [
            "certloop_tls_handshakes_total{listener=\"web\",result=\"ok\"} 1",
            "certloop_tls_handshakes_total{listener=\"web\",result=\"timeout\"} 1",
            "certloop_connections_open{listener=\"web\"} 1",
            "certloop_http_requests_total{listener=\"web\",code_class=\"2xx\"} 2",
            "certloop_http_requests_total{listener=\"web\",code_class=\"5xx\"} 1",
            "certloop_upstream_errors_total{listener=\"web\",kind=\"502\"} 1",
            "certloop_upstream_duration_seconds_bucket{listener=\"web\",le=\"0.01\"} 1",
            "certloop_upstream_duration_seconds_count{listener=\"web\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        drop(open);
        assert!(
            metrics
                .encode()
                .contains("certloop_connections_open{listener=\"web\"} 0")
        );
    }

    #[test]
    fn certificate_rows_become_gauges_info_and_order_counters() {
        let row = CertRow {
            listener: "web".to_owned(),
            names: vec!["a.test".to_owned(), "b.test".to_owned()],
            source: "acme".to_owned(),
            issuer: Some("Pebble Intermediate CA".to_owned()),
            serial: Some("0ABC".to_owned()),
            key_type: Some("ecdsa-p256".to_owned()),
            not_before: Some(1_000),
            not_after: Some(2_000),
            renew_at: Some(1_500),
            failures: 2,
            orders: [("issued".to_owned(), 1), ("unreachable".to_owned(), 2)].into(),
            ..CertRow::default()
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Rows(vec![row])));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "certloop_cert_not_after_seconds{listener=\"web\",cert=\"a.test\"} 2000",
            "certloop_cert_next_renewal_seconds{listener=\"web\",cert=\"a.test\"} 1500",
            "certloop_cert_renewal_failures_consecutive{listener=\"web\",cert=\"a.test\"} 2",
            "certloop_cert_expired{listener=\"web\",cert=\"a.test\"} 1",
            "certloop_cert_info{listener=\"web\",cert=\"a.test\",issuer=\"Pebble Intermediate CA\",serial=\"0ABC\",key_type=\"ecdsa-p256\"} 1",
            "certloop_acme_orders_total{listener=\"web\",cert=\"a.test\",result=\"unreachable\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn the_fleet_storage_state_becomes_two_gauges() {
        let rows = vec![FleetStorageRow {
            listener: "edge".to_owned(),
            reachable: false,
            since: 1_234,
        }];
        let mut text = String::new();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fleet(rows)));
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "certloop_fleet_storage_up{listener=\"edge\"} 0",
            "certloop_fleet_storage_since_seconds{listener=\"edge\"} 1234",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    struct Fleet(Vec<FleetStorageRow>);

    impl std::fmt::Debug for Fleet {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Fleet")
        }
    }

    impl Collector for Fleet {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_fleet_storage(&mut encoder, &self.0)
        }
    }

    #[derive(Debug)]
    struct Rows(Vec<CertRow>);

    impl Collector for Rows {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_certificates(&mut encoder, &self.0, 5_000)
        }
    }
}
