//! When a connection has used up its time (pure: the caller passes the bytes read and written,
//! the requests starting and ending, and the time).
//!
//! - A request head that has begun must be complete within `request_header_timeout`. On
//!   HTTP/1.1 a head begins with the first byte read while no request is in flight; on HTTP/2
//!   with a HEADERS frame, and it is complete at the END_HEADERS flag, so a header block
//!   dribbled out in CONTINUATION frames is timed as a whole. A stalled HTTP/2 header block
//!   closes the whole connection, since nothing else can be sent on it until the block ends.
//! - While a request waits for the upstream nothing here closes the connection: the upstream
//!   timeout bounds that.
//! - While a response body is being sent, the connection must make progress (a byte read or
//!   written) at least once per `idle_timeout`, so a client that stops reading is let go.
//! - With no request in flight and no head begun, the connection may idle for
//!   `idle_timeout`; pings and window updates do not count as requests.

use std::time::{Duration, Instant};

use crate::h2_frames::FrameScanner;

/// The HTTP version of a connection, as ALPN decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.x (also used when ALPN said nothing).
    Http1,
    /// HTTP/2.
    Http2,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A request head was not complete within `request_header_timeout`.
    HeaderTimeout,
    /// A response body made no progress for `idle_timeout`.
    Stalled,
    /// No request for `idle_timeout`.
    Idle,
}

/// What the watchdog does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Look again at this time (or earlier, when a head begins).
    CheckAt(Instant),
    /// Close the connection.
    Close(CloseReason),
}

/// The two deadlines that apply to a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// See [`crate::limits::Limits::request_header_timeout`].
    pub(crate) request_header: Duration,
    /// See [`crate::limits::Limits::idle_timeout`].
    pub(crate) idle: Duration,
}

/// One connection's activity.
#[derive(Debug)]
pub(crate) struct Activity {
    protocol: Protocol,
    frames: FrameScanner,
    /// Requests whose response head is not ready yet.
    awaiting: usize,
    /// Responses whose body is still being sent.
    streaming: usize,
    idle_since: Instant,
    last_progress: Instant,
    head_began: Option<Instant>,
}

impl Activity {
    /// A connection whose handshake finished at `now`.
    pub(crate) fn new(protocol: Protocol, now: Instant) -> Self {
        Self {
            protocol,
            frames: FrameScanner::default(),
            awaiting: 0,
            streaming: 0,
            idle_since: now,
            last_progress: now,
            head_began: None,
        }
    }

    /// Whether a request head has begun and is not complete yet.
    pub(crate) fn head_pending(&self) -> bool {
        self.head_began.is_some()
    }

    /// `bytes` were read from the client at `now`.
    pub(crate) fn on_read(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_progress = now;
        match self.protocol {
            Protocol::Http1 => {
                if self.awaiting + self.streaming == 0 && self.head_began.is_none() {
                    self.head_began = Some(now);
                }
            }
            Protocol::Http2 => {
                self.frames.feed(bytes);
                if !self.frames.in_header_block() {
                    self.head_began = None;
                } else if self.head_began.is_none() {
                    self.head_began = Some(now);
                }
            }
        }
    }

    /// Bytes were written to the client at `now`.
    pub(crate) fn on_write(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// A complete request head reached the service.
    pub(crate) fn on_request_start(&mut self) {
        self.awaiting += 1;
        if self.protocol == Protocol::Http1 {
            self.head_began = None;
        }
    }

    /// A request ended at `now`: `responded` if its response body is now being sent (it ends
    /// with [`Self::on_response_end`]), otherwise it was dropped before a response.
    pub(crate) fn on_request_end(&mut self, now: Instant, responded: bool) {
        self.awaiting = self.awaiting.saturating_sub(1);
        if responded {
            self.streaming += 1;
            self.last_progress = now;
        } else {
            self.settle(now);
        }
    }

    /// A response body was sent completely (or dropped) at `now`.
    pub(crate) fn on_response_end(&mut self, now: Instant) {
        self.streaming = self.streaming.saturating_sub(1);
        self.settle(now);
    }

    fn settle(&mut self, now: Instant) {
        if self.awaiting + self.streaming == 0 {
            self.idle_since = now;
        }
    }

    /// What to do at `now`.
    pub(crate) fn verdict(&self, now: Instant, deadlines: Deadlines) -> Verdict {
        let (deadline, reason) = match self.head_began {
            Some(began) => (began + deadlines.request_header, CloseReason::HeaderTimeout),
            None if self.awaiting > 0 => return Verdict::CheckAt(now + deadlines.idle),
            None if self.streaming > 0 => {
                (self.last_progress + deadlines.idle, CloseReason::Stalled)
            }
            None => (self.idle_since + deadlines.idle, CloseReason::Idle),
        };
        if now >= deadline {
            Verdict::Close(reason)
        } else {
            Verdict::CheckAt(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2_frames::tests::{PREFACE, frame};

    const D: Deadlines = Deadlines {
        request_header: Duration::from_secs(15),
        idle: Duration::from_secs(60),
    };

    fn secs(start: Instant, s: u64) -> Instant {
        start + Duration::from_secs(s)
    }

    #[test]
    fn an_idle_http1_connection_closes_after_the_idle_timeout() {
        let t0 = Instant::now();
        let a = Activity::new(Protocol::Http1, t0);
        assert_eq!(a.verdict(t0, D), Verdict::CheckAt(secs(t0, 60)));
        assert_eq!(
            a.verdict(secs(t0, 60), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn a_partial_http1_head_closes_after_the_header_timeout_however_it_dribbles() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http1, t0);
        a.on_read(secs(t0, 10), b"GET / HT");
        a.on_read(secs(t0, 20), b"TP/1.1\r\n");
        assert_eq!(a.verdict(secs(t0, 24), D), Verdict::CheckAt(secs(t0, 25)));
        assert_eq!(
            a.verdict(secs(t0, 25), D),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn waiting_for_the_upstream_keeps_the_connection_then_idling_starts_after_the_body() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http1, t0);
        a.on_read(secs(t0, 1), b"GET / HTTP/1.1\r\n\r\n");
        a.on_request_start();
        a.on_read(secs(t0, 2), b"body bytes");
        assert_eq!(a.verdict(secs(t0, 500), D), Verdict::CheckAt(secs(t0, 560)));
        a.on_request_end(secs(t0, 500), true);
        // A long download keeps the connection while bytes flow...
        for s in (510..900).step_by(50) {
            a.on_write(secs(t0, s));
            assert!(matches!(a.verdict(secs(t0, s + 1), D), Verdict::CheckAt(_)));
        }
        // ... and idling counts from the end of the body.
        a.on_response_end(secs(t0, 900));
        assert_eq!(a.verdict(secs(t0, 959), D), Verdict::CheckAt(secs(t0, 960)));
        assert_eq!(
            a.verdict(secs(t0, 960), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn a_client_that_stops_reading_a_body_is_let_go() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_request_start();
        a.on_request_end(secs(t0, 1), true);
        a.on_write(secs(t0, 5));
        assert_eq!(a.verdict(secs(t0, 64), D), Verdict::CheckAt(secs(t0, 65)));
        assert_eq!(
            a.verdict(secs(t0, 65), D),
            Verdict::Close(CloseReason::Stalled)
        );
    }

    #[test]
    fn a_request_dropped_before_its_response_leaves_the_connection_idle() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_request_start();
        a.on_request_end(secs(t0, 3), false);
        assert_eq!(
            a.verdict(secs(t0, 63), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn http2_times_header_blocks_and_ignores_other_frames() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(0x6, 0, 0, &[0; 8])); // PING
        a.on_read(secs(t0, 1), &bytes);
        assert!(!a.head_pending(), "control frames are not a request head");
        a.on_read(secs(t0, 2), &frame(0x1, 0, 1, b"abc"));
        a.on_read(secs(t0, 9), &frame(0x9, 0, 1, b"defgh"));
        assert_eq!(
            a.verdict(secs(t0, 17), D),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
        a.on_read(secs(t0, 10), &frame(0x9, 0x4, 1, b"i"));
        assert!(!a.head_pending());
        a.on_request_start();
        assert_eq!(a.verdict(secs(t0, 100), D), Verdict::CheckAt(secs(t0, 160)));
    }
}
