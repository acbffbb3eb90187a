//! One row per certificate of every listener: the status page, `/status.json`,
//! `certloop status`, `/readyz` and the certificate metrics all read these rows. They come
//! from a running process (each ACME listener's handle, each manual listener's files) or,
//! while it is stopped, from the cache directories on disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use certloop_tokio::{AcmeHandle, CertStatus, ServedCert, UnixTime};
use serde::{Deserialize, Serialize};

use crate::config::{Config, TlsMode};
use crate::manual::ManualResolver;

/// Where one listener's certificates come from, in a running process.
#[derive(Clone)]
pub(crate) enum CertSource {
    /// Managed by ACME.
    Acme(AcmeHandle),
    /// Files, reloaded on SIGHUP.
    Manual(Arc<ManualResolver>),
}

/// Every listener's certificate source, by listener name; a reload changes the list.
pub(crate) type CertSources = Arc<std::sync::RwLock<Vec<(String, CertSource)>>>;

/// One certificate of one listener. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertRow {
    pub(crate) listener: String,
    /// The configured names (for a manual certificate, the names it covers).
    pub(crate) names: Vec<String>,
    /// `acme` or `manual`.
    pub(crate) source: String,
    pub(crate) issuer: Option<String>,
    /// The directory URL of the CA that issued it (ACME; one of the listener's issuers).
    #[serde(default)]
    pub(crate) issued_by: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) key_type: Option<String>,
    pub(crate) not_before: Option<u64>,
    pub(crate) not_after: Option<u64>,
    pub(crate) renew_at: Option<u64>,
    pub(crate) ari_window: Option<(u64, u64)>,
    /// When the next order starts: a retry after failures, or the renewal.
    pub(crate) next_order_at: Option<u64>,
    pub(crate) ordering: bool,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
    /// Orders since launch by result (`issued`, `unreachable`, ...).
    pub(crate) orders: BTreeMap<String, u64>,
}

impl CertRow {
    /// The first name, which names the certificate in metrics.
    pub(crate) fn cert(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }

    /// `true` while a certificate is served and valid at `now` (Unix seconds).
    pub(crate) fn valid_at(&self, now: u64) -> bool {
        matches!((self.not_before, self.not_after), (Some(from), Some(until)) if from <= now && now < until)
    }

    /// When the next attempt after a failure happens, if a failure streak is running.
    pub(crate) fn retry_at(&self) -> Option<u64> {
        self.next_order_at.filter(|_| self.failures > 0)
    }

    fn served(&mut self, served: &ServedCert) {
        self.issuer = Some(served.issuer.clone());
        self.serial = Some(served.serial.clone());
        self.key_type = Some(served.key_type.clone());
        self.not_before = Some(served.not_before.as_secs());
        self.not_after = Some(served.not_after.as_secs());
    }

    fn acme(listener: &str, status: &CertStatus) -> Self {
        let secs = |t: Option<UnixTime>| t.map(UnixTime::as_secs);
        let mut row = Self {
            listener: listener.to_owned(),
            names: status.domains.clone(),
            source: "acme".to_owned(),
            renew_at: secs(status.renew_at),
            ari_window: status.ari_window.map(|(a, b)| (a.as_secs(), b.as_secs())),
            next_order_at: secs(status.next_order_at),
            ordering: status.ordering,
            failures: status.failures,
            last_error: status.last_error.clone(),
            issued_by: status.issued_by.clone(),
            orders: (status.orders.by_result().into_iter())
                .map(|(result, n)| (result.to_owned(), n))
                .collect(),
            ..Self::default()
        };
        if let Some(served) = &status.served {
            row.served(served);
        }
        row
    }

    fn manual(listener: &str, served: Option<ServedCert>) -> Self {
        let mut row = Self {
            listener: listener.to_owned(),
            source: "manual".to_owned(),
            ..Self::default()
        };
        if let Some(served) = served {
            row.names = served.names.clone();
            row.served(&served);
        }
        row
    }
}

/// Every certificate of a running process, listener by listener.
pub(crate) fn live_rows(sources: &[(String, CertSource)]) -> Vec<CertRow> {
    let mut rows = Vec::new();
    for (listener, source) in sources {
        match source {
            CertSource::Acme(handle) => {
                rows.extend(handle.status().iter().map(|s| CertRow::acme(listener, s)));
            }
            CertSource::Manual(resolver) => {
                let served = ServedCert::from_leaf(&resolver.leaf()).ok();
                rows.push(CertRow::manual(listener, served));
            }
        }
    }
    rows
}

/// Every certificate as the disk holds it (ACME cache directories, manual files as loaded
/// when the configuration was read), for `certloop status` while nothing answers.
pub(crate) fn rows_on_disk(config: &Config, now: UnixTime) -> Vec<CertRow> {
    let mut rows = Vec::new();
    for listener in &config.listeners {
        match &listener.tls {
            TlsMode::Acme(acme) => match acme.cached_status(now) {
                Ok(statuses) => {
                    rows.extend(statuses.iter().map(|s| CertRow::acme(&listener.name, s)));
                }
                Err(e) => rows.push(CertRow {
                    listener: listener.name.clone(),
                    source: "acme".to_owned(),
                    last_error: Some(e.to_string()),
                    ..CertRow::default()
                }),
            },
            TlsMode::Manual { loaded, .. } => {
                let served = loaded
                    .cert
                    .first()
                    .and_then(|leaf| ServedCert::from_leaf(leaf).ok());
                rows.push(CertRow::manual(&listener.name, served));
            }
        }
    }
    rows
}

/// The listeners that do not serve a valid certificate at `now`, with why: `/readyz`.
pub(crate) fn not_ready(rows: &[CertRow], now: u64) -> Vec<(String, String)> {
    let mut not_ready: Vec<(String, String)> = Vec::new();
    for row in rows.iter().filter(|r| !r.valid_at(now)) {
        if not_ready
            .iter()
            .any(|(listener, _)| *listener == row.listener)
        {
            continue;
        }
        let reason = match (row.not_before, row.not_after) {
            (None, _) | (_, None) => format!("{}: no certificate yet", row.names.join(",")),
            (Some(from), _) if now < from => {
                format!(
                    "{}: not valid before {}",
                    row.names.join(","),
                    rfc3339(from)
                )
            }
            (_, Some(until)) => format!("{}: expired at {}", row.names.join(","), rfc3339(until)),
        };
        not_ready.push((row.listener.clone(), reason));
    }
    not_ready
}

/// `2026-11-29T07:00:00Z`.
pub(crate) fn rfc3339(unix_seconds: u64) -> String {
    UnixTime::from_secs(unix_seconds).to_string()
}

/// The status table for a terminal: listener, names, not after, renews at, last error,
/// retry at.
pub(crate) fn table(rows: &[CertRow]) -> String {
    let header = [
        "LISTENER",
        "NAMES",
        "NOT AFTER",
        "RENEWS AT",
        "LAST ERROR",
        "RETRY AT",
    ];
    let or_dash = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), rfc3339);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.listener.clone(),
                if row.names.is_empty() {
                    "-".to_owned()
                } else {
                    row.names.join(",")
                },
                or_dash(row.not_after),
                or_dash(row.renew_at),
                row.last_error.clone().unwrap_or_else(|| "-".to_owned()),
                or_dash(row.retry_at()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        // The last error is the last-but-one column; it is not padded past 60 characters.
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count().min(60));
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &cells {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(listener: &str, not_before: Option<u64>, not_after: Option<u64>) -> CertRow {
        CertRow {
            listener: listener.to_owned(),
            names: vec![format!("{listener}.example.com")],
            not_before,
            not_after,
            ..CertRow::default()
        }
    }

    #[test]
    fn a_listener_is_ready_only_while_every_certificate_is_valid() {
        let rows = [
            row("web", Some(100), Some(200)),
            row("api", None, None),
            row("old", Some(10), Some(50)),
            row("web", Some(100), Some(300)),
        ];
        let waiting = not_ready(&rows, 150);
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        assert_eq!(waiting[0].0, "api");
        assert!(waiting[0].1.contains("no certificate yet"));
        assert_eq!(waiting[1].0, "old");
        assert!(waiting[1].1.contains("expired at 1970-01-01T00:00:50Z"));
        let later = not_ready(&rows, 200);
        assert!(
            later.iter().any(|(l, _)| l == "web"),
            "one of web's expired"
        );
    }

    #[test]
    fn the_table_has_a_column_each_and_dashes_for_nothing() {
        let mut failing = row("api", Some(0), Some(86_400));
        failing.failures = 2;
        failing.next_order_at = Some(3600);
        failing.last_error = Some("CA unreachable: connection refused".to_owned());
        let table = table(&[row("web", None, None), failing]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("LISTENER  NAMES"), "{table}");
        assert!(
            lines[1].starts_with("web       web.example.com  -"),
            "{table}"
        );
        assert!(
            lines[2].contains("1970-01-02T00:00:00Z")
                && lines[2].contains("connection refused")
                && lines[2].ends_with("1970-01-01T01:00:00Z"),
            "{table}"
        );
    }
}
