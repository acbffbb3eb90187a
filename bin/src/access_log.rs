//! `[access_log]`: one line per request, as JSON or in the Common Log Format with certloop's
//! fields appended, to stdout or a file that SIGUSR1 reopens (for log rotation). Requests never
//! wait for the disk: lines go through a bounded queue to a writer thread, which writes them in
//! batches and flushes whenever the queue runs dry; when the queue is full, lines are dropped
//! and counted, and the count is logged.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many lines may wait for the writer before new ones are dropped.
pub(crate) const QUEUE: usize = 65_536;

/// The line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// One JSON object per line.
    Json,
    /// `client - - [time] "METHOD path VERSION" status bytes_out`, then `key=value` fields.
    Common,
}

/// What `[access_log]` configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessLogConfig {
    /// `None`: stdout.
    pub(crate) path: Option<PathBuf>,
    pub(crate) format: Format,
}

/// One finished request.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// When the request head arrived.
    pub(crate) time: SystemTime,
    pub(crate) listener: Arc<str>,
    pub(crate) client: std::net::SocketAddr,
    pub(crate) host: String,
    pub(crate) method: String,
    pub(crate) path: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub(crate) version: &'static str,
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// From the request head to the end of the response body.
    pub(crate) duration: Duration,
    /// From sending to the upstream to its response head; `None` when it did not answer.
    pub(crate) upstream: Option<Duration>,
    /// `TLSv1.3`, `TLSv1.2`.
    pub(crate) tls_version: &'static str,
    /// The negotiated ALPN protocol, or `-`.
    pub(crate) alpn: &'static str,
}

enum Message {
    Line(String),
    Reopen,
}

/// The access log's sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessLog {
    format: Format,
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the destination (creating the file, appending, mode 0640) and starts the writer
    /// thread. Fails with the path and the reason.
    pub(crate) fn open(config: &AccessLogConfig) -> Result<Self, String> {
        let sink = Sink::open(config.path.clone())?;
        let (queue, lines) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("certloop-access-log".into())
            .spawn(move || write_lines(sink, &lines, &counted))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Self {
            format: config.format,
            queue,
            dropped,
        })
    }

    /// Queues the line for `entry`; never waits.
    pub(crate) fn record(&self, entry: &Entry) {
        let line = match self.format {
            Format::Json => json_line(entry),
            Format::Common => common_line(entry),
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Message::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reopens the file (after it was moved away for rotation); stdout stays stdout.
    pub(crate) fn reopen(&self) {
        let _ = self.queue.try_send(Message::Reopen);
    }
}

/// Where lines go.
enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(PathBuf, BufWriter<File>),
}

impl Sink {
    fn open(path: Option<PathBuf>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::Stdout(BufWriter::with_capacity(
                64 * 1024,
                std::io::stdout(),
            )));
        };
        let file = open_append(&path)
            .map_err(|e| format!("access log {}: cannot open: {e}", path.display()))?;
        Ok(Self::File(path, BufWriter::with_capacity(64 * 1024, file)))
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(w) => w,
            Self::File(_, w) => w,
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The writer thread: batches whatever is queued, flushes when the queue is empty, and ends
/// when every sender is gone.
fn write_lines(mut sink: Sink, lines: &Receiver<Message>, dropped: &AtomicU64) {
    let mut reported = 0;
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    if let Err(e) = sink.writer().write_all(line.as_bytes()) {
                        tracing::error!("access log: cannot write: {e}");
                    }
                }
                Message::Reopen => sink = reopened(sink),
            }
            next = lines.try_recv().ok();
        }
        if let Err(e) = sink.writer().flush() {
            tracing::error!("access log: cannot write: {e}");
        }
        let now = dropped.load(Ordering::Relaxed);
        if now != reported {
            tracing::warn!(
                "access log: {} line(s) dropped, the writer could not keep up",
                now - reported
            );
            reported = now;
        }
    }
}

/// SIGUSR1: the file again by its name (the old one was moved away), or the old one kept
/// when the new one cannot be opened.
fn reopened(mut sink: Sink) -> Sink {
    let _ = sink.writer().flush();
    match sink {
        Sink::File(path, old) => match open_append(&path) {
            Ok(file) => {
                tracing::info!("access log reopened: {}", path.display());
                Sink::File(path, BufWriter::with_capacity(64 * 1024, file))
            }
            Err(e) => {
                tracing::error!(
                    "access log {}: cannot reopen, still writing the old file: {e}",
                    path.display()
                );
                Sink::File(path, old)
            }
        },
        stdout => stdout,
    }
}

/// `{"time":"…","listener":"web",…}` and a newline.
fn json_line(e: &Entry) -> String {
    let value = serde_json::json!({
        "time": rfc3339_millis(e.time),
        "listener": &*e.listener,
        "client": e.client.to_string(),
        "host": e.host,
        "method": e.method,
        "path": e.path,
        "version": e.version,
        "status": e.status,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "duration_ms": millis(e.duration),
        "upstream_ms": e.upstream.map(millis),
        "tls": e.tls_version,
        "alpn": e.alpn,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// The Common Log Format, then certloop's fields as `key=value`.
fn common_line(e: &Entry) -> String {
    let upstream = e
        .upstream
        .map_or_else(|| "-".to_owned(), |d| format!("{:.3}", millis(d)));
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} listener={} host={} in={} duration_ms={:.3} upstream_ms={} tls={} alpn={}\n",
        e.client.ip(),
        clf_time(e.time),
        e.method,
        e.path.replace('"', "%22"),
        e.version,
        e.status,
        e.bytes_out,
        e.listener,
        if e.host.is_empty() { "-" } else { &e.host },
        e.bytes_in,
        millis(e.duration),
        upstream,
        e.tls_version,
        e.alpn,
    )
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn utc(t: SystemTime) -> time::OffsetDateTime {
    let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-29T07:05:09.123Z`.
fn rfc3339_millis(t: SystemTime) -> String {
    let t = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `29/Nov/2026:07:05:09 +0000`.
fn clf_time(t: SystemTime) -> String {
    let t = utc(t);
    let month = t.month().to_string();
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day(),
        &month[..3],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_796_000_709_123),
            listener: "web".into(),
            client: "192.0.2.7:50000".parse().unwrap(),
            host: "web.example.com".to_owned(),
            method: "GET".to_owned(),
            path: "/a?b=\"c\"".to_owned(),
            version: "HTTP/1.1",
            status: 200,
            bytes_in: 12,
            bytes_out: 3456,
            duration: Duration::from_micros(2_500),
            upstream: Some(Duration::from_micros(1_250)),
            tls_version: "TLSv1.3",
            alpn: "http/1.1",
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let line = json_line(&entry());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-11-30T01:05:09.123Z");
        assert_eq!(value["client"], "192.0.2.7:50000");
        assert_eq!(value["path"], "/a?b=\"c\"");
        assert_eq!(value["status"], 200);
        assert_eq!(
            (value["bytes_in"].as_u64(), value["bytes_out"].as_u64()),
            (Some(12), Some(3456))
        );
        assert_eq!(value["duration_ms"], 2.5);
        assert_eq!(value["upstream_ms"], 1.25);
        assert_eq!(
            (value["tls"].as_str(), value["alpn"].as_str()),
            (Some("TLSv1.3"), Some("http/1.1"))
        );
        let mut failed = entry();
        failed.upstream = None;
        let value: serde_json::Value = serde_json::from_str(&json_line(&failed)).unwrap();
        assert!(value["upstream_ms"].is_null());
    }

    #[test]
    fn common_lines_start_like_any_other_server_and_add_certloop_fields() {
        assert_eq!(
            common_line(&entry()),
            "192.0.2.7 - - [30/Nov/2026:01:05:09 +0000] \"GET /a?b=%22c%22 HTTP/1.1\" 200 3456 \
             listener=web host=web.example.com in=12 duration_ms=2.500 upstream_ms=1.250 \
             tls=TLSv1.3 alpn=http/1.1\n"
        );
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("certloop-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let config = AccessLogConfig {
            path: Some(path.clone()),
            format: Format::Json,
        };
        let log = AccessLog::open(&config).unwrap();
        let wait_for = |file: &std::path::Path, lines: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                if text.lines().count() >= lines {
                    return text;
                }
                assert!(std::time::Instant::now() < deadline, "{text}");
                std::thread::yield_now();
            }
        };
        log.record(&entry());
        wait_for(&path, 1);
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen();
        log.record(&entry());
        wait_for(&path, 1);
        assert_eq!(wait_for(&dir.join("access.log.1"), 1).lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
