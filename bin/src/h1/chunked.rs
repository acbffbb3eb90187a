//! Chunked bodies (RFC 9112 §7.1), pure. Towards an HTTP/1.1 client the bytes are passed on
//! as they are, so this only follows the chunk sizes, extensions and trailer lines to find the
//! end; towards an HTTP/2 client it also says where the data is. Either way it refuses what a
//! lenient parser elsewhere could read differently (a bare LF, a size that overflows, an
//! endless extension).

use std::ops::Range;

/// The longest chunk extension, and the longest trailer section.
const MAX_EXTENSION: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked body that cannot be passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadChunk;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits (`digits` so far).
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: an extension, or whitespace before one, until CR.
    Extension {
        size: u64,
    },
    /// CR seen after the size line; LF expected.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk's data.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows one chunked body.
#[derive(Debug)]
pub(crate) struct ChunkedBody {
    state: State,
    /// Extension or trailer bytes seen, against their limits.
    extra: usize,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            extra: 0,
        }
    }
}

/// The chunk that ends a chunked body (with an empty trailer section).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk (`data` must not be empty: that is the last chunk).
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

impl ChunkedBody {
    /// Whether the body's last byte has been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`, the body's next bytes: returns how many of them belong to the body
    /// (all, or up to its end).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        let mut at = 0;
        while at < bytes.len() && !self.is_done() {
            at += self.next_data(&bytes[at..])?.0;
        }
        Ok(at)
    }

    /// Follows `bytes` up to the end of the first run of chunk data in them: returns how many
    /// bytes that took, and where the data is (empty when there was none).
    pub(crate) fn next_data(&mut self, bytes: &[u8]) -> Result<(usize, Range<usize>), BadChunk> {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Data { left } = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - at);
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                return Ok((at + take, at..at + take));
            }
            if self.state == State::Done {
                break;
            }
            self.state = self.step(bytes[at])?;
            at += 1;
        }
        Ok((at, at..at))
    }

    fn step(&mut self, byte: u8) -> Result<State, BadChunk> {
        Ok(match self.state {
            State::Size { value, digits } => match (byte as char).to_digit(16) {
                Some(d) if digits < 16 => State::Size {
                    value: value << 4 | u64::from(d),
                    digits: digits + 1,
                },
                None if digits > 0 && byte == b'\r' => State::SizeLf { size: value },
                None if digits > 0 && matches!(byte, b';' | b' ' | b'\t') => {
                    self.extra = 1;
                    State::Extension { size: value }
                }
                _ => return Err(BadChunk),
            },
            State::Extension { size } => match byte {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(BadChunk),
                _ if self.extra < MAX_EXTENSION => {
                    self.extra += 1;
                    State::Extension { size }
                }
                _ => return Err(BadChunk),
            },
            State::SizeLf { size: 0 } if byte == b'\n' => {
                self.extra = 0;
                State::TrailerStart
            }
            State::SizeLf { size } if byte == b'\n' => State::Data { left: size },
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::TrailerStart if byte == b'\r' => State::EndLf,
            State::TrailerStart | State::TrailerLine if byte != b'\n' => {
                self.extra += 1;
                if self.extra > MAX_TRAILERS {
                    return Err(BadChunk);
                }
                if byte == b'\r' {
                    State::TrailerLf
                } else {
                    State::TrailerLine
                }
            }
            State::TrailerLf if byte == b'\n' => State::TrailerStart,
            State::EndLf if byte == b'\n' => State::Done,
            _ => return Err(BadChunk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes: how many bytes belong to the body, and whether
    /// it ended.
    fn follow(body: &[u8], step: usize) -> Result<(usize, bool), BadChunk> {
        let mut chunked = ChunkedBody::default();
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = chunked.feed(piece)?;
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((taken, chunked.is_done()))
    }

    #[test]
    fn the_end_is_found_in_any_split_and_what_follows_is_left() {
        let body =
            b"5\r\nhello\r\nA;name=value\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for step in 1..body.len() {
            assert_eq!(follow(body, step), Ok((end, true)), "pieces of {step}");
        }
        assert_eq!(follow(b"0\r\n\r\n", 100), Ok((5, true)));
        assert_eq!(follow(b"5\r\nhel", 100), Ok((6, false)));
    }

    #[test]
    fn the_data_is_found_in_any_split() {
        let body = b"5\r\nhello\r\nA;x=y\r\n0123456789\r\n0\r\nT: 1\r\n\r\nnext";
        for step in 1..body.len() {
            let (mut chunked, mut data, mut taken) = (ChunkedBody::default(), Vec::new(), 0);
            for piece in body.chunks(step) {
                let mut at = 0;
                while at < piece.len() && !chunked.is_done() {
                    let (used, run) = chunked.next_data(&piece[at..]).unwrap();
                    data.extend_from_slice(&piece[at..][run]);
                    at += used;
                }
                taken += at;
            }
            assert_eq!(data, b"hello0123456789", "pieces of {step}");
            assert_eq!(taken, body.len() - 4, "pieces of {step}");
        }
    }

    #[test]
    fn what_another_parser_could_read_differently_is_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"10000000000000000\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert_eq!(
                follow(bad, 100),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_extension = [b"1;".as_slice(), &[b'x'; MAX_EXTENSION + 1]].concat();
        assert_eq!(follow(&long_extension, 100), Err(BadChunk));
    }
}
