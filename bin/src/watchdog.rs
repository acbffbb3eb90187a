//! When a connection has used up its time (pure: the caller passes the bytes read, the
//! requests starting and ending, and the time).
//!
//! - A request head that has begun must be complete within `request_header_timeout`. On
//!   HTTP/1.1 a head begins with the first byte read while no request is in flight; on HTTP/2
//!   with the first byte of a HEADERS frame, and it is complete at the END_HEADERS flag, so a
//!   header block dribbled out in CONTINUATION frames is timed as a whole.
//! - With no request in flight and no head begun, the connection may idle for
//!   `idle_timeout`; pings and window updates do not count as activity.
//! - While a request is in flight nothing here closes the connection: the upstream timeout
//!   bounds a request.

use std::time::{Duration, Instant};

/// The connection-level HTTP/2 preface a client sends first.
const H2_PREFACE_LEN: usize = 24;
const H2_FRAME_HEADER_LEN: usize = 9;
const H2_HEADERS: u8 = 0x1;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

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
    in_flight: usize,
    idle_since: Instant,
    head_began: Option<Instant>,
}

impl Activity {
    /// A connection whose handshake finished at `now`.
    pub(crate) fn new(protocol: Protocol, now: Instant) -> Self {
        Self {
            protocol,
            frames: FrameScanner::default(),
            in_flight: 0,
            idle_since: now,
            head_began: None,
        }
    }

    /// Whether a request head has begun and is not complete yet.
    pub(crate) fn head_pending(&self) -> bool {
        self.head_began.is_some()
    }

    /// `bytes` were read from the client at `now`.
    pub(crate) fn on_read(&mut self, now: Instant, bytes: &[u8]) {
        match self.protocol {
            Protocol::Http1 => {
                if self.in_flight == 0 && self.head_began.is_none() && !bytes.is_empty() {
                    self.head_began = Some(now);
                }
            }
            Protocol::Http2 => {
                self.frames.feed(bytes);
                if !self.frames.in_header_block {
                    self.head_began = None;
                } else if self.head_began.is_none() {
                    self.head_began = Some(now);
                }
            }
        }
    }

    /// A complete request head reached the service.
    pub(crate) fn on_request_start(&mut self) {
        self.in_flight += 1;
        if self.protocol == Protocol::Http1 {
            self.head_began = None;
        }
    }

    /// A request's response was handed back at `now`.
    pub(crate) fn on_request_end(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
        }
    }

    /// What to do at `now`.
    pub(crate) fn verdict(&self, now: Instant, deadlines: Deadlines) -> Verdict {
        let (deadline, reason) = match self.head_began {
            Some(began) => (began + deadlines.request_header, CloseReason::HeaderTimeout),
            None if self.in_flight > 0 => return Verdict::CheckAt(now + deadlines.idle),
            None => (self.idle_since + deadlines.idle, CloseReason::Idle),
        };
        if now >= deadline {
            Verdict::Close(reason)
        } else {
            Verdict::CheckAt(deadline)
        }
    }
}

/// Follows HTTP/2 frame boundaries in the client's byte stream, to tell when a header block
/// (HEADERS plus CONTINUATION frames) is open.
#[derive(Debug)]
struct FrameScanner {
    preface_left: usize,
    header: [u8; H2_FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    frame_type: u8,
    frame_flags: u8,
    in_header_block: bool,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            preface_left: H2_PREFACE_LEN,
            header: [0; H2_FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            frame_type: 0,
            frame_flags: 0,
            in_header_block: false,
        }
    }
}

impl FrameScanner {
    /// Consumes `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len());
                self.payload_left -= take;
                bytes = &bytes[take..];
                if self.payload_left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let take = (H2_FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == H2_FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.frame_type = h[3];
                self.frame_flags = h[4];
                if matches!(self.frame_type, H2_HEADERS | H2_CONTINUATION) {
                    self.in_header_block = true;
                }
                if self.payload_left == 0 {
                    self.end_frame();
                }
            }
        }
    }

    fn end_frame(&mut self) {
        if matches!(self.frame_type, H2_HEADERS | H2_CONTINUATION)
            && self.frame_flags & H2_END_HEADERS != 0
        {
            self.in_header_block = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        request_header: Duration::from_secs(15),
        idle: Duration::from_secs(60),
    };

    fn secs(start: Instant, s: u64) -> Instant {
        start + Duration::from_secs(s)
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
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
    fn a_partial_http1_head_closes_after_the_header_timeout() {
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
    fn a_request_in_flight_keeps_the_connection_and_idling_starts_after_it() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http1, t0);
        a.on_read(secs(t0, 1), b"GET / HTTP/1.1\r\n\r\n");
        a.on_request_start();
        a.on_read(secs(t0, 2), b"body bytes");
        assert_eq!(a.verdict(secs(t0, 500), D), Verdict::CheckAt(secs(t0, 560)));
        a.on_request_end(secs(t0, 500));
        assert_eq!(a.verdict(secs(t0, 559), D), Verdict::CheckAt(secs(t0, 560)));
        assert_eq!(
            a.verdict(secs(t0, 560), D),
            Verdict::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn http2_times_header_blocks_and_ignores_other_frames() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(0x6, 0, 0, &[0; 8])); // PING
        a.on_read(secs(t0, 1), &bytes);
        assert!(!a.head_pending(), "control frames are not a request head");
        // HEADERS without END_HEADERS, then a CONTINUATION split across reads.
        a.on_read(secs(t0, 2), &frame(H2_HEADERS, 0, 1, b"abc"));
        assert!(a.head_pending());
        let continuation = frame(H2_CONTINUATION, 0, 1, b"defgh");
        a.on_read(secs(t0, 5), &continuation[..4]);
        a.on_read(secs(t0, 9), &continuation[4..]);
        assert_eq!(
            a.verdict(secs(t0, 17), D),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
        a.on_read(
            secs(t0, 10),
            &frame(H2_CONTINUATION, H2_END_HEADERS, 1, b"i"),
        );
        assert!(!a.head_pending());
        a.on_request_start();
        assert_eq!(a.verdict(secs(t0, 100), D), Verdict::CheckAt(secs(t0, 160)));
    }

    #[test]
    fn a_complete_http2_head_in_one_read_starts_no_clock_and_a_split_frame_header_is_followed() {
        let t0 = Instant::now();
        let mut a = Activity::new(Protocol::Http2, t0);
        a.on_read(t0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let headers = frame(H2_HEADERS, H2_END_HEADERS | 0x1, 1, &[0x82, 0x87, 0x84]);
        a.on_read(t0, &headers);
        assert!(!a.head_pending());
        let data = frame(0x0, 0, 1, &[7; 300]);
        for chunk in data.chunks(4) {
            a.on_read(t0, chunk);
            assert!(!a.head_pending());
        }
        let headers = frame(H2_HEADERS, 0, 3, &[0; 20]);
        a.on_read(t0, &headers[..5]);
        assert!(!a.head_pending(), "the frame type is not known yet");
        a.on_read(t0, &headers[5..12]);
        assert!(a.head_pending());
    }
}
