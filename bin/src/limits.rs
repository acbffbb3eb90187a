//! The edge's limits: deadlines and caps that keep one hostile client from costing the
//! others. Every value has a safe default (`docs/limits.md` says why each one is what it is);
//! `[limits]` changes them for every listener, `[listeners.limits]` for one.

use std::time::Duration;

/// Concurrent HTTP/2 streams per connection (the h2 default of 200 halved: a browser opens
/// about 100).
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;

/// The HTTP/2 flow-control window offered to a client, for each stream and for the connection
/// (1 MiB): how much of a request body may be in flight before the upstream has read it.
pub(crate) const HTTP2_WINDOW: u32 = 1024 * 1024;

/// How much of a response one HTTP/2 stream may have queued for a client that is slow to
/// make room for it (400 KiB).
pub(crate) const HTTP2_SEND_BUFFER: usize = 400 * 1024;

/// Streams a client may make the server reset for its errors before the connection is closed
/// (the HTTP/2 "MadeYouReset" attack, CVE-2025-8671).
pub(crate) const HTTP2_LOCAL_ERROR_RESETS: usize = 1024;

/// The smallest `max_request_header_bytes` accepted: below it, ordinary browser requests
/// (cookies, long URLs) start failing.
pub(crate) const MIN_REQUEST_HEADER_BYTES: usize = 8192;

/// The largest `max_request_header_bytes` accepted.
pub(crate) const MAX_REQUEST_HEADER_BYTES: usize = 1 << 20;

/// How long a connection closed for a timeout may take to say goodbye (HTTP/2 GOAWAY,
/// TLS close_notify) before it is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The limits of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// TCP accept to finished TLS handshake.
    pub(crate) tls_handshake_timeout: Duration,
    /// First byte to complete request head (HTTP/1.1), and per HTTP/2 header block.
    pub(crate) request_header_timeout: Duration,
    /// Keep-alive with no request in flight (HTTP/1.1 and HTTP/2).
    pub(crate) idle_timeout: Duration,
    /// Open connections per listener; at the cap new ones wait in the kernel's backlog
    /// (`listen::BACKLOG`).
    pub(crate) max_connections: usize,
    /// Open connections per client address; 0 is unlimited.
    pub(crate) max_connections_per_ip: usize,
    /// The largest request head: beyond it HTTP/1.1 gets a 431, HTTP/2 a stream error.
    pub(crate) max_request_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            request_header_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_request_header_bytes: 32_768,
        }
    }
}
