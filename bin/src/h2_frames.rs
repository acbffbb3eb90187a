//! Follows HTTP/2 frame boundaries (RFC 9113 §4.1) in the bytes a client sends, to tell when a
//! header block (a HEADERS frame and its CONTINUATION frames, up to the END_HEADERS flag) is
//! open. Only the 9-byte frame headers are looked at; payloads are skipped.

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
/// Where the frame type sits in a frame header.
const TYPE_OFFSET: usize = 3;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// The scanner's position in the client's byte stream.
#[derive(Debug)]
pub(crate) struct FrameScanner {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    in_header_block: bool,
    blocks_begun: u64,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            in_header_block: false,
            blocks_begun: 0,
        }
    }
}

fn is_header_frame(kind: u8) -> bool {
    matches!(kind, HEADERS | CONTINUATION)
}

impl FrameScanner {
    /// Whether a header block has begun (its frame type was seen) and not ended.
    pub(crate) fn in_header_block(&self) -> bool {
        self.in_header_block
    }

    /// How many header blocks have begun so far.
    pub(crate) fn blocks_begun(&self) -> u64 {
        self.blocks_begun
    }

    /// Consumes the next bytes the client sent.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
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
            let take = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            // A header block begins as soon as its type is known, so that a frame header
            // stalled halfway is timed too.
            if self.header_len > TYPE_OFFSET
                && is_header_frame(self.header[TYPE_OFFSET])
                && !self.in_header_block
            {
                self.in_header_block = true;
                self.blocks_begun += 1;
            }
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                if self.payload_left == 0 {
                    self.end_frame();
                }
            }
        }
    }

    fn end_frame(&mut self) {
        if is_header_frame(self.header[TYPE_OFFSET]) && self.header[4] & END_HEADERS != 0 {
            self.in_header_block = false;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One frame: type, flags, stream, payload.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn header_blocks_open_at_headers_and_close_at_end_headers_across_reads() {
        let mut s = FrameScanner::default();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(0x6, 0, 0, &[0; 8])); // PING
        s.feed(&bytes);
        assert!(!s.in_header_block());
        s.feed(&frame(HEADERS, 0, 1, b"abc"));
        assert!(s.in_header_block());
        let continuation = frame(CONTINUATION, END_HEADERS, 1, b"defgh");
        s.feed(&continuation[..12]);
        assert!(s.in_header_block());
        s.feed(&continuation[12..]);
        assert!(!s.in_header_block());
        // DATA split into tiny reads never opens a block.
        for chunk in frame(0x0, 0, 1, &[7; 300]).chunks(4) {
            s.feed(chunk);
            assert!(!s.in_header_block());
        }
    }

    #[test]
    fn a_frame_header_stalled_after_its_type_counts_as_an_open_block() {
        let mut s = FrameScanner::default();
        s.feed(PREFACE);
        let headers = frame(HEADERS, END_HEADERS, 3, &[0; 20]);
        s.feed(&headers[..3]);
        assert!(!s.in_header_block(), "the type is not known yet");
        s.feed(&headers[3..5]);
        assert!(s.in_header_block());
        s.feed(&headers[5..]);
        assert!(!s.in_header_block(), "END_HEADERS with the frame's end");
        let empty = frame(HEADERS, END_HEADERS, 5, &[]);
        s.feed(&empty);
        assert!(!s.in_header_block(), "an empty frame ends at once");
    }
}
