//! When a connection has used up its time (pure: the caller passes the bytes read, the
//! requests starting and ending, response body progress, the stop signal and the time).
//!
//! - A request head that has begun must be complete within `request_header_timeout`. On
//!   HTTP/1.1 a head begins with the first byte read while no request is in flight; on HTTP/2
//!   with a HEADERS frame, and it is complete at the END_HEADERS flag, so a header block
//!   dribbled out in CONTINUATION frames is timed as a whole. A stalled HTTP/2 header block
//!   closes the whole connection, since nothing else can be sent on it until the block ends.
//! - While a request waits for the upstream nothing here closes the connection: the upstream
//!   timeout bounds that.
//! - Every response body being sent must hand hyper a piece at least once per
//!   `idle_timeout`. hyper asks for the next piece only when the client has made room (TCP
//!   buffers, HTTP/2 flow-control window), so a client that stops reading one body is let go
//!   however busy it keeps the connection otherwise (pings, other streams).
//! - With no request in flight and no head begun, the connection may idle for
//!   `idle_timeout`; pings and window updates do not count as requests. After the stop
//!   signal, such a connection (one that just finished its handshake included) gets
//!   [`STOP_GRACE`] to begin a request. An HTTP/2 connection whose answered streams still
//!   have bytes queued for the client is not idle for that rule: its GOAWAY is out, and it
//!   closes itself once they are written (within the process's `shutdown_grace`).

use std::time::{Duration, Instant};

use crate::h2_frames::FrameScanner;

/// After the stop signal, how long an idle connection may take to begin one last request.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

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
    /// No request began within [`STOP_GRACE`] of the stop signal.
    Stopped,
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

/// Identifies one response body being sent.
pub(crate) type BodyId = u64;

/// One connection's activity.
#[derive(Debug)]
pub(crate) struct Activity {
    protocol: Protocol,
    frames: FrameScanner,
    blocks_seen: u64,
    /// Requests whose response head is not ready yet.
    awaiting: usize,
    /// Response bodies being sent, with the last time each handed hyper a piece.
    bodies: Vec<(BodyId, Instant)>,
    next_body: BodyId,
    idle_since: Instant,
    head_began: Option<Instant>,
    stopping_since: Option<Instant>,
    /// HTTP/2: every response was handed over, but some are still queued for the client.
    unflushed: bool,
}

impl Activity {
    /// A connection whose handshake finished at `now`.
    pub(crate) fn new(protocol: Protocol, now: Instant) -> Self {
        Self {
            protocol,
            frames: FrameScanner::default(),
            blocks_seen: 0,
            awaiting: 0,
            bodies: Vec::new(),
            next_body: 0,
            idle_since: now,
            head_began: None,
            stopping_since: None,
            unflushed: false,
        }
    }

    /// Whether a request head has begun and is not complete yet.
    pub(crate) fn head_pending(&self) -> bool {
        self.head_began.is_some()
    }

    fn in_flight(&self) -> bool {
        self.awaiting > 0 || !self.bodies.is_empty()
    }

    /// `bytes` were read from the client at `now`.
    pub(crate) fn on_read(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.protocol {
            Protocol::Http1 => {
                if !self.in_flight() && self.head_began.is_none() {
                    self.head_began = Some(now);
                }
            }
            Protocol::Http2 => {
                self.frames.feed(bytes);
                let began_another = self.frames.blocks_begun() != self.blocks_seen;
                self.blocks_seen = self.frames.blocks_begun();
                if !self.frames.in_header_block() {
                    self.head_began = None;
                } else if self.head_began.is_none() || began_another {
                    self.head_began = Some(now);
                }
            }
        }
    }

    /// A complete request head reached the service.
    pub(crate) fn on_request_start(&mut self) {
        self.awaiting += 1;
        if self.protocol == Protocol::Http1 {
            self.head_began = None;
        }
    }

    /// A request's response head is ready at `now`; its body is timed from now on under the
    /// returned id until [`Self::on_body_end`].
    pub(crate) fn on_response(&mut self, now: Instant) -> BodyId {
        self.awaiting = self.awaiting.saturating_sub(1);
        let id = self.next_body;
        self.next_body += 1;
        self.bodies.push((id, now));
        id
    }

    /// A request ended at `now` without a response (its stream was reset).
    pub(crate) fn on_request_dropped(&mut self, now: Instant) {
        self.awaiting = self.awaiting.saturating_sub(1);
        self.settle(now);
    }

    /// Body `id` handed hyper a piece at `now`.
    pub(crate) fn on_body_progress(&mut self, id: BodyId, now: Instant) {
        if let Some(body) = self.bodies.iter_mut().find(|(b, _)| *b == id) {
            body.1 = now;
        }
    }

    /// Body `id` was sent completely (or dropped) at `now`.
    pub(crate) fn on_body_end(&mut self, id: BodyId, now: Instant) {
        self.bodies.retain(|(b, _)| *b != id);
        self.settle(now);
    }

    /// Whether the responses handed over are still partly queued for the client.
    pub(crate) fn on_unflushed(&mut self, unflushed: bool) {
        self.unflushed = unflushed;
    }

    /// The stop signal arrived at `now`.
    pub(crate) fn on_stop(&mut self, now: Instant) {
        self.stopping_since.get_or_insert(now);
    }

    fn settle(&mut self, now: Instant) {
        if !self.in_flight() {
            self.idle_since = now;
        }
    }

    /// What to do at `now`.
    pub(crate) fn verdict(&self, now: Instant, deadlines: Deadlines) -> Verdict {
        let mut due: Vec<(Instant, CloseReason)> = Vec::with_capacity(3);
        if let Some(began) = self.head_began {
            due.push((began + deadlines.request_header, CloseReason::HeaderTimeout));
        }
        if let Some(oldest) = self.bodies.iter().map(|(_, at)| *at).min() {
            due.push((oldest + deadlines.idle, CloseReason::Stalled));
        }
        if !self.in_flight() && self.head_began.is_none() {
            due.push((self.idle_since + deadlines.idle, CloseReason::Idle));
            if let Some(stop) = self.stopping_since.filter(|_| !self.unflushed) {
                due.push((stop.max(self.idle_since) + STOP_GRACE, CloseReason::Stopped));
            }
        }
        match due.into_iter().min_by_key(|(at, _)| *at) {
            Some((at, reason)) if now >= at => Verdict::Close(reason),
            Some((at, _)) => Verdict::CheckAt(at),
            // Only requests waiting for the upstream, which bounds them itself.
            None => Verdict::CheckAt(now + deadlines.idle),
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
        let body = a.on_response(secs(t0, 500));
        // A long download keeps the connection while its pieces flow...
        for s in (510..900).step_by(50) {
            a.on_body_progress(body, secs(t0, s));
            assert!(matches!(a.verdict(secs(t0, s + 1), D), Verdict::CheckAt(_)));
        }
        // ... and idling counts from the end of the body.
        a.on_body_end(body, secs(t0, 900));
        assert_eq!(a.verdict(secs(t0, 959), D), Verdict::CheckAt(secs(t0, 960)));
        assert_eq!(
            a.verdict(secs(t0, 960), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn a_client_that_stops_reading_one_body_is_let_go_however_busy_it_keeps_the_rest() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_read(t0, PREFACE);
        a.on_request_start();
        let stalled = a.on_response(secs(t0, 1));
        a.on_body_progress(stalled, secs(t0, 5));
        // Another stream keeps flowing, another keeps waiting, pings keep arriving.
        a.on_request_start();
        let flowing = a.on_response(secs(t0, 6));
        a.on_request_start();
        for s in (10..70).step_by(10) {
            a.on_body_progress(flowing, secs(t0, s));
            a.on_read(secs(t0, s), &frame(0x6, 0, 0, &[0; 8]));
        }
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
        a.on_request_dropped(secs(t0, 3));
        assert_eq!(
            a.verdict(secs(t0, 63), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn after_the_stop_signal_an_idle_connection_gets_a_moment_to_begin_a_request() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http1, t0);
        a.on_stop(secs(t0, 10));
        assert_eq!(
            a.verdict(secs(t0, 10), D),
            Verdict::CheckAt(secs(t0, 10) + STOP_GRACE)
        );
        assert_eq!(
            a.verdict(secs(t0, 11), D),
            Verdict::Close(CloseReason::Stopped)
        );
        // A request that began in time is served: only the header timeout applies to it.
        let mut b = Activity::new(Protocol::Http1, t0);
        b.on_stop(secs(t0, 10));
        b.on_read(secs(t0, 10), b"GET /");
        assert_eq!(b.verdict(secs(t0, 12), D), Verdict::CheckAt(secs(t0, 25)));
    }

    #[test]
    fn each_http2_header_block_is_timed_from_its_own_start() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_read(t0, PREFACE);
        let first = frame(0x1, 0x4, 1, &[0; 40]);
        let second = frame(0x1, 0x4, 3, &[0; 40]);
        a.on_read(secs(t0, 1), &first[..20]);
        // One read ends the first block and begins the second, which stays open.
        let mut joined = first[20..].to_vec();
        joined.extend_from_slice(&second[..20]);
        a.on_read(secs(t0, 14), &joined);
        assert_eq!(a.verdict(secs(t0, 16), D), Verdict::CheckAt(secs(t0, 29)));
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

    #[test]
    fn a_stopped_http2_connection_is_given_time_to_write_what_it_queued() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_stop(t0);
        a.on_unflushed(true);
        assert_eq!(a.verdict(secs(t0, 5), D), Verdict::CheckAt(secs(t0, 60)));
        a.on_unflushed(false);
        assert_eq!(
            a.verdict(secs(t0, 5), D),
            Verdict::Close(CloseReason::Stopped)
        );
    }
}
