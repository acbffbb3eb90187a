//! `[access_log]`: one line per request, as JSON or in the Common Log Format with certloop's
//! fields appended, to stdout or a file that SIGUSR1 reopens (for log rotation). Requests never
//! wait for the disk: each line is formatted by the request's task and appended to a shared
//! buffer; a writer thread takes the whole buffer every [`FLUSH_EVERY`] (sooner when it
//! passes [`WAKE_AT`]) and writes it in one go. When the buffer holds [`MAX_BUFFERED`] bytes
//! the writer is behind: new lines are dropped and counted, and the count is logged.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;

/// How often the writer writes what has been logged.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that wake the writer before its time.
const WAKE_AT: usize = 256 * 1024;
/// Buffered bytes beyond which lines are dropped (the writer is stuck or far behind).
pub(crate) const MAX_BUFFERED: usize = 16 * 1024 * 1024;

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

/// One finished request. The request's own parts are kept as hyper holds them (cheap clones).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// When the request head arrived.
    pub(crate) time: SystemTime,
    pub(crate) listener: Arc<str>,
    pub(crate) client: std::net::SocketAddr,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) method: Method,
    pub(crate) path: Option<PathAndQuery>,
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

impl Entry {
    fn host(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }

    fn path(&self) -> &str {
        self.path.as_ref().map_or("/", PathAndQuery::as_str)
    }
}

/// What the request tasks and the writer thread share.
struct Shared {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    reopen: AtomicBool,
    closing: AtomicBool,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The access log's sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessLog {
    format: Format,
    shared: Arc<Shared>,
    /// Disconnected when the writer thread has ended.
    writer_done: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
}

/// How long shutdown waits for the last lines to be written (a stuck disk must not hang it).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl AccessLog {
    /// Opens the destination (creating the file, appending, mode 0640) and starts the writer
    /// thread. Fails with the path and the reason.
    pub(crate) fn open(config: &AccessLogConfig) -> Result<Self, String> {
        let sink = Sink::open(config.path.clone())?;
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let for_writer = shared.clone();
        let (done, writer_done) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("certloop-access-log".into())
            .spawn(move || {
                write_lines(sink, &for_writer);
                drop(done);
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Self {
            format: config.format,
            shared,
            writer_done: Arc::new(Mutex::new(writer_done)),
        })
    }

    /// Logs `entry`; never waits for the disk.
    pub(crate) fn record(&self, entry: &Entry) {
        let mut line = String::with_capacity(320);
        match self.format {
            Format::Json => json_line(&mut line, entry),
            Format::Common => common_line(&mut line, entry),
        }
        let mut buffer = self.shared.buffer();
        if buffer.len() + line.len() > MAX_BUFFERED {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.extend_from_slice(line.as_bytes());
        if buffer.len() >= WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Reopens the file (after it was moved away for rotation); stdout stays stdout.
    pub(crate) fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Writes what is buffered and stops the writer (at shutdown), waiting
    /// [`CLOSE_WAIT`] at most.
    pub(crate) fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let done = self.writer_done.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(CLOSE_WAIT) {
            tracing::warn!("access log: the last lines could not be written within {CLOSE_WAIT:?}");
        }
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File(PathBuf, File),
}

impl Sink {
    fn open(path: Option<PathBuf>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::Stdout);
        };
        let file = open_append(&path)
            .map_err(|e| format!("access log {}: cannot open: {e}", path.display()))?;
        Ok(Self::File(path, file))
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Self::File(_, file) => file.write_all(bytes),
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

/// The writer thread: every [`FLUSH_EVERY`] (or when woken), takes the buffer and writes it;
/// reopens the file when asked; ends after a last write when closing.
fn write_lines(mut sink: Sink, shared: &Shared) {
    let mut spare = Vec::with_capacity(WAKE_AT * 2);
    let mut reported = 0;
    loop {
        {
            let buffer = shared.buffer();
            let (mut buffer, _) = shared
                .wake
                .wait_timeout_while(buffer, FLUSH_EVERY, |b| {
                    b.len() < WAKE_AT
                        && !shared.reopen.load(Ordering::SeqCst)
                        && !shared.closing.load(Ordering::SeqCst)
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *buffer, &mut spare);
        }
        // Reopened before writing: what was buffered when the file was moved away goes to the
        // new one (logrotate signals after the move), and nothing is lost either way.
        if shared.reopen.swap(false, Ordering::SeqCst) {
            sink = reopened(sink);
        }
        if !spare.is_empty() {
            if let Err(e) = sink.write(&spare) {
                tracing::error!("access log: cannot write: {e}");
            }
            spare.clear();
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped != reported {
            tracing::warn!(
                "access log: {} line(s) dropped, the writer could not keep up",
                dropped - reported
            );
            reported = dropped;
        }
        if shared.closing.load(Ordering::SeqCst) && shared.buffer().is_empty() {
            return;
        }
    }
}

/// SIGUSR1: the file again by its name (the old one was moved away), or the old one kept
/// when the new one cannot be opened.
fn reopened(sink: Sink) -> Sink {
    match sink {
        Sink::File(path, old) => match open_append(&path) {
            Ok(file) => {
                tracing::info!("access log reopened: {}", path.display());
                Sink::File(path, file)
            }
            Err(e) => {
                tracing::error!(
                    "access log {}: cannot reopen, still writing the old file: {e}",
                    path.display()
                );
                Sink::File(path, old)
            }
        },
        Sink::Stdout => Sink::Stdout,
    }
}

/// `{"time":"…","listener":"web",…}` and a newline.
fn json_line(out: &mut String, e: &Entry) {
    out.push_str("{\"time\":\"");
    rfc3339_millis(out, e.time);
    out.push_str("\",\"listener\":");
    json_string(out, &e.listener);
    let _ = write!(out, ",\"client\":\"{}\",\"host\":", e.client);
    json_string(out, e.host());
    out.push_str(",\"method\":");
    json_string(out, e.method.as_str());
    out.push_str(",\"path\":");
    json_string(out, e.path());
    let _ = write!(
        out,
        ",\"version\":\"{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{}",
        e.version,
        e.status,
        e.bytes_in,
        e.bytes_out,
        Millis(e.duration)
    );
    match e.upstream {
        Some(took) => {
            let _ = write!(out, ",\"upstream_ms\":{}", Millis(took));
        }
        None => out.push_str(",\"upstream_ms\":null"),
    }
    let _ = writeln!(
        out,
        ",\"tls\":\"{}\",\"alpn\":\"{}\"}}",
        e.tls_version, e.alpn
    );
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The Common Log Format, then certloop's fields as `key=value`.
fn common_line(out: &mut String, e: &Entry) {
    let _ = write!(out, "{} - - [", e.client.ip());
    clf_time(out, e.time);
    let _ = write!(out, "] \"{} ", e.method);
    for (i, part) in e.path().split('"').enumerate() {
        if i > 0 {
            out.push_str("%22");
        }
        out.push_str(part);
    }
    let _ = write!(
        out,
        " {}\" {} {} listener={} host={} in={} duration_ms={} upstream_ms=",
        e.version,
        e.status,
        e.bytes_out,
        e.listener,
        if e.host().is_empty() { "-" } else { e.host() },
        e.bytes_in,
        Millis(e.duration),
    );
    match e.upstream {
        Some(took) => {
            let _ = write!(out, "{}", Millis(took));
        }
        None => out.push('-'),
    }
    let _ = writeln!(out, " tls={} alpn={}", e.tls_version, e.alpn);
}

/// Milliseconds with three decimals (`2.500`), written with integer arithmetic.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

fn utc(t: SystemTime) -> time::OffsetDateTime {
    let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-29T07:05:09.123Z`. The part up to the second is formatted once per second and
/// thread.
fn rfc3339_millis(out: &mut String, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != since.as_secs() {
            let t = utc(t);
            prefix.clear();
            let _ = write!(
                prefix,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            *second = since.as_secs();
        }
        out.push_str(prefix);
    });
    let _ = write!(out, ".{:03}Z", since.subsec_millis());
}

/// `29/Nov/2026:07:05:09 +0000`.
fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = utc(t);
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_796_000_709_123),
            listener: "web".into(),
            client: "192.0.2.7:50000".parse().unwrap(),
            host: Some(HeaderValue::from_static("web.example.com")),
            method: Method::GET,
            path: Some(PathAndQuery::from_static("/a?b=%22c%22&d=e")),
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
        let mut line = String::new();
        json_line(&mut line, &entry());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-11-30T01:05:09.123Z");
        assert_eq!(value["client"], "192.0.2.7:50000");
        assert_eq!(value["path"], "/a?b=%22c%22&d=e");
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
        let mut line = String::new();
        json_line(&mut line, &failed);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value["upstream_ms"].is_null());
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\u000ad\\u0001é\"");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn common_lines_start_like_any_other_server_and_add_certloop_fields() {
        let mut line = String::new();
        common_line(&mut line, &entry());
        assert_eq!(
            line,
            "192.0.2.7 - - [30/Nov/2026:01:05:09 +0000] \"GET /a?b=%22c%22&d=e HTTP/1.1\" 200 3456 \
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
