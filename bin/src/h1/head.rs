//! HTTP/1.1 heads as the proxy forwards them (RFC 9112), pure: a request head is parsed once,
//! checked, and written again for the upstream (hop-by-hop headers removed, forwarding headers
//! set, the body's framing stated once); a response head likewise for the client.

use std::net::IpAddr;
use std::ops::Range;

use hyper::header::HeaderName;

use crate::forwarding::{FORWARDING_NAMES, forwarding_plan};

/// The most header lines a head may have (hyper's default); more is answered with 431.
const MAX_HEADERS: usize = 100;

/// The methods a request may be sent again with (RFC 9110 §9.2.2).
pub(crate) const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// The largest upstream response head.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus those the proxy
/// states itself: the body's framing, the host, and `Expect` (the proxy answers it).
const NOT_PASSED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding, passed on as it is.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A request head that is refused, with the status that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400, with what is wrong.
    Malformed(&'static str),
    /// 431: over the head size or header count limit.
    TooLarge,
    /// 501: a transfer coding other than chunked.
    UnsupportedCoding,
}

impl Refusal {
    /// The status code, reason and body of the answer.
    pub(crate) fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::Malformed(what) => (400, "Bad Request", what),
            Self::TooLarge => (
                431,
                "Request Header Fields Too Large",
                "request header too large\n",
            ),
            Self::UnsupportedCoding => (501, "Not Implemented", "unsupported transfer coding\n"),
        }
    }
}

/// What the request rewrite needs to know about the upstream and the client.
pub(crate) struct Rewrite<'a> {
    /// The upstream's path prefix, without a trailing `/` (often empty).
    pub(crate) prefix: &'a str,
    /// The upstream's authority: the `Host` of a request that names none.
    pub(crate) authority: &'a str,
    /// The client's address, as `canonical_ip` gives it.
    pub(crate) peer: IpAddr,
    /// Whether the client is a trusted proxy (its forwarding headers are extended, not replaced).
    pub(crate) peer_is_trusted: bool,
}

/// A request head, checked and written again for the upstream.
#[derive(Debug)]
pub(crate) struct ForwardedRequest {
    /// The head's length in the client's bytes.
    pub(crate) head_len: usize,
    /// The head to send upstream.
    pub(crate) upstream_head: Vec<u8>,
    pub(crate) framing: Framing,
    /// `HEAD`: the response has no body whatever its headers say.
    pub(crate) is_head: bool,
    /// An HTTP/1.0 request (forwarded as HTTP/1.0, so the answer is never chunked).
    pub(crate) http10: bool,
    /// Whether the client keeps the connection open after this request.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` with a body: the client waits for a 100 before sending it.
    pub(crate) expects_continue: bool,
    /// The client asks to upgrade the connection (WebSocket and the like).
    pub(crate) upgrade: bool,
    /// Sending it twice has the effect of sending it once (RFC 9110 §9.2.2), so it may be sent
    /// again on a new connection when a pooled one turns out closed.
    pub(crate) idempotent: bool,
    /// Where the method, the request target and the host (if any) are in the client's bytes.
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    pub(crate) host: Option<Range<usize>>,
}

/// Parses the request head at the start of `bytes`: `Ok(None)` while it is incomplete (and
/// within `max_head` bytes).
pub(crate) fn forward_request(
    bytes: &[u8],
    max_head: usize,
    rewrite: &Rewrite<'_>,
) -> Result<Option<ForwardedRequest>, Refusal> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if bytes.len() <= max_head => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed("malformed request head\n")),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(Refusal::Malformed("malformed request head\n"));
    };
    let http10 = minor == 0;
    let at = |s: &[u8]| offset_of(bytes, s);
    let facts = HeaderFacts::of(header_lines(request.headers))?;
    let framing = match (facts.chunked, facts.length) {
        (Some(_), Some(_)) => {
            return Err(Refusal::Malformed(
                "Content-Length and Transfer-Encoding together\n",
            ));
        }
        (Some(true), None) if !http10 => Framing::Chunked,
        (Some(_), None) => return Err(Refusal::UnsupportedCoding),
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    if method == "CONNECT" {
        return Err(Refusal::Malformed("CONNECT is not supported\n"));
    }
    let (path, target_authority) = split_target(target)?;
    // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2).
    let host = target_authority.or(facts.host);
    let keep_alive = if http10 {
        facts.connection_has("keep-alive")
    } else {
        !facts.connection_has("close")
    };
    // `h2c` means nothing over TLS, and a tunnel to an h2c upstream would carry requests the
    // proxy never rewrites: such a request is forwarded without its upgrade.
    let upgrade = !http10
        && facts.connection_has("upgrade")
        && facts
            .upgrade
            .is_some_and(|protocol| !trimmed(protocol).eq_ignore_ascii_case(b"h2c"));

    let outgoing = Outgoing {
        method,
        path,
        http10,
        host,
        framing,
        upgrade: facts.upgrade.filter(|_| upgrade),
    };
    let head = upstream_head(&outgoing, rewrite, header_lines(request.headers), &facts);
    Ok(Some(ForwardedRequest {
        head_len,
        upstream_head: head,
        framing,
        is_head: method == "HEAD",
        http10,
        keep_alive,
        expects_continue: framing != Framing::Empty
            && !http10
            && facts
                .expect
                .is_some_and(|e| e.eq_ignore_ascii_case(b"100-continue")),
        upgrade,
        idempotent: IDEMPOTENT.contains(&method),
        method: at(method.as_bytes()),
        target: at(target.as_bytes()),
        host: host.map(|h| at(h.as_bytes())),
    }))
}

/// A request as the upstream receives it, besides the header lines passed on.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a str,
    /// The path and query (without the upstream's prefix).
    pub(crate) path: &'a str,
    pub(crate) http10: bool,
    /// The host the client asked for; the upstream's authority when `None`.
    pub(crate) host: Option<&'a str>,
    pub(crate) framing: Framing,
    /// The protocol of an upgrade the client asks for.
    pub(crate) upgrade: Option<&'a [u8]>,
}

/// The request head for the upstream: `request`'s line under the upstream's prefix, its host,
/// the header `lines` that are not hop-by-hop (nor named by `Connection`), nor forwarding
/// headers the plan replaces, nor framing; then the forwarding headers and the framing.
pub(crate) fn upstream_head<'h>(
    request: &Outgoing<'_>,
    rewrite: &Rewrite<'_>,
    lines: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    facts: &HeaderFacts<'h>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(request.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(rewrite.prefix.as_bytes());
    head.extend_from_slice(request.path.as_bytes());
    head.extend_from_slice(if request.http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let host = request.host.unwrap_or(rewrite.authority);
    line(&mut head, b"host", host.as_bytes());
    let plan = forwarding_plan(
        rewrite.peer,
        rewrite.peer_is_trusted,
        request.host,
        |name| {
            lines
                .clone()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .collect()
        },
    );
    for (name, value) in lines {
        let replaced = FORWARDING_NAMES
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_str()))
            && (!rewrite.peer_is_trusted
                || plan
                    .iter()
                    .any(|(p, _)| name.eq_ignore_ascii_case(p.as_str())));
        if replaced
            || forwarding_alias(name)
            || NOT_PASSED.iter().any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case("expect")
            || facts.connection_names(name)
        {
            continue;
        }
        line(&mut head, name.as_bytes(), value);
    }
    for (name, value) in &plan {
        line(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    match request.framing {
        Framing::Length(n) => line(&mut head, b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => line(&mut head, b"transfer-encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if let Some(protocol) = request.upgrade {
        line(&mut head, b"connection", b"upgrade");
        line(&mut head, b"upgrade", protocol);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Whether `name` is a forwarding header spelt with underscores (`X_Forwarded_For`), which
/// CGI-style upstreams read as the header itself: never passed on.
fn forwarding_alias(name: &str) -> bool {
    name.contains('_')
        && FORWARDING_NAMES.iter().any(|f| {
            f.as_str().len() == name.len()
                && f.as_str()
                    .bytes()
                    .zip(name.bytes())
                    .all(|(f, n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
        })
}

/// httparse's header lines as name and value.
fn header_lines<'h>(
    headers: &[httparse::Header<'h>],
) -> impl Iterator<Item = (&'h str, &'h [u8])> + Clone {
    headers.iter().map(|h| (h.name, h.value))
}

/// A response head, written again for the client.
#[derive(Debug)]
pub(crate) struct ForwardedResponse {
    /// The head's length in the upstream's bytes.
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    /// The head to send the client (empty for an informational response, which is dropped).
    pub(crate) client_head: Vec<u8>,
    pub(crate) framing: Framing,
    /// Whether the upstream connection can carry another request after this response.
    pub(crate) upstream_reusable: bool,
    /// Whether the client connection closes after this response.
    pub(crate) close: bool,
}

/// Parses the upstream's response head at the start of `bytes` to a request whose facts are
/// given; `keep_client` says whether the client connection may stay open. `Ok(None)` while the
/// head is incomplete; `Err` when the upstream's answer cannot be forwarded.
pub(crate) fn forward_response(
    bytes: &[u8],
    request: &ForwardedRequest,
    keep_client: bool,
    date: &[u8],
) -> Result<Option<ForwardedResponse>, &'static str> {
    let mut close = false;
    let parsed = parse_response(
        bytes,
        request.is_head,
        request.http10,
        |status, reason, lines, framing| {
            if status < 200 {
                return Vec::new();
            }
            close = !keep_client || framing == Framing::UntilClose;
            let mut head = Vec::with_capacity(bytes.len() + 64);
            head.extend_from_slice(b"HTTP/1.1 ");
            head.extend_from_slice(status.to_string().as_bytes());
            head.push(b' ');
            head.extend_from_slice(reason.as_bytes());
            head.extend_from_slice(b"\r\n");
            let mut dated = false;
            for (name, value) in lines {
                dated |= name.eq_ignore_ascii_case("date");
                line(&mut head, name.as_bytes(), value);
            }
            if !dated {
                line(&mut head, b"date", date);
            }
            match framing {
                Framing::Length(n) => line(&mut head, b"content-length", n.to_string().as_bytes()),
                Framing::Chunked => line(&mut head, b"transfer-encoding", b"chunked"),
                Framing::Empty | Framing::UntilClose => {}
            }
            if close {
                line(&mut head, b"connection", b"close");
            } else if request.http10 {
                line(&mut head, b"connection", b"keep-alive");
            }
            head.extend_from_slice(b"\r\n");
            head
        },
    )?;
    Ok(parsed.map(|parsed| ForwardedResponse {
        head_len: parsed.head_len,
        status: parsed.status,
        client_head: parsed.written,
        framing: parsed.framing,
        // An HTTP/1.0 request went upstream without keep-alive: the upstream closes after it.
        upstream_reusable: parsed.upstream_reusable && !request.http10,
        close,
    }))
}

/// An upstream response head, parsed.
pub(crate) struct ParsedResponse<W> {
    /// The head's length in the upstream's bytes.
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// Whether the upstream connection can carry another request after this response.
    pub(crate) upstream_reusable: bool,
    /// What the caller wrote from the status and the header lines to pass on.
    pub(crate) written: W,
}

/// Parses the upstream's response head at the start of `bytes`, to a `HEAD` request or not,
/// of HTTP/1.0 or not, and hands `write` the status, the reason, the header lines the client
/// may see (hop-by-hop and framing headers removed; a length kept when the body is empty,
/// since it then states the length a body would have) and the body's framing. `Ok(None)` while
/// the head is incomplete; `Err` when the answer cannot be forwarded.
pub(crate) fn parse_response<W>(
    bytes: &[u8],
    is_head: bool,
    http10: bool,
    write: impl FnOnce(u16, &str, &mut dyn Iterator<Item = (&str, &[u8])>, Framing) -> W,
) -> Result<Option<ParsedResponse<W>>, &'static str> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut lines);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() <= MAX_RESPONSE_HEAD_BYTES => {
            return Ok(None);
        }
        Ok(httparse::Status::Partial) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(status @ 100..), Some(minor)) = (response.code, response.version) else {
        return Err("malformed response head");
    };
    let facts = HeaderFacts::of(header_lines(response.headers))
        .map_err(|_| "malformed response framing")?;
    let framing = if status < 200 || is_head || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (facts.chunked, facts.length) {
            (Some(true), _) if !http10 => Framing::Chunked,
            (Some(_), _) => return Err("unsupported response transfer coding"),
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let upstream_keeps = if minor == 0 {
        facts.connection_has("keep-alive")
    } else {
        !facts.connection_has("close")
    };
    let keep_length = framing == Framing::Empty && facts.chunked.is_none();
    let mut passed = response
        .headers
        .iter()
        .filter(|header| {
            let name = header.name;
            (keep_length && name.eq_ignore_ascii_case("content-length"))
                || !(NOT_PASSED[..10]
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n))
                    || facts.connection_names(name))
        })
        .map(|header| (header.name, header.value));
    let written = write(status, response.reason.unwrap_or(""), &mut passed, framing);
    Ok(Some(ParsedResponse {
        head_len,
        status,
        framing,
        upstream_reusable: upstream_keeps && framing != Framing::UntilClose,
        written,
    }))
}

/// The client head of a `101 Switching Protocols` from the upstream: its headers, with the
/// upgrade's `Connection` and `Upgrade` kept.
pub(crate) fn switching_head(bytes: &[u8]) -> Vec<u8> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut lines);
    let _ = response.parse(bytes);
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    for header in response.headers.iter().filter(|h| !h.name.is_empty()) {
        if [
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "trailer",
        ]
        .iter()
        .any(|n| header.name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        line(&mut head, header.name.as_bytes(), header.value);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A response of the proxy's own: `status reason`, a plain-text `body` (its length only, to a
/// `head_request`), and `close` to end the connection after it.
pub(crate) fn own_response(
    status: u16,
    reason: &str,
    body: &str,
    close: bool,
    head_request: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\ndate: {}\r\n",
        body.len(),
        String::from_utf8_lossy(&crate::http_date::now()),
    );
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    if !head_request {
        head.push_str(body);
    }
    head.into_bytes()
}

/// What the proxy needs from a head's header lines.
pub(crate) struct HeaderFacts<'h> {
    /// `Some(true)` when `Transfer-Encoding` is exactly `chunked`; `Some(false)` for any
    /// other coding.
    chunked: Option<bool>,
    length: Option<u64>,
    /// The `Host` header.
    pub(crate) host: Option<&'h str>,
    upgrade: Option<&'h [u8]>,
    expect: Option<&'h [u8]>,
    /// The `Connection` header's lines.
    connection: Vec<&'h [u8]>,
}

impl<'h> HeaderFacts<'h> {
    /// The facts of the header `lines`; `Err` for framing or a host that cannot be trusted.
    pub(crate) fn of(lines: impl Iterator<Item = (&'h str, &'h [u8])>) -> Result<Self, Refusal> {
        let mut facts = Self {
            chunked: None,
            length: None,
            host: None,
            upgrade: None,
            expect: None,
            connection: Vec::new(),
        };
        for (name, value) in lines {
            // Header names are compared by length first: most differ there.
            if name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(Refusal::Malformed("bad Content-Length\n"))?;
                if facts.length.is_some_and(|l| l != length) {
                    return Err(Refusal::Malformed("conflicting Content-Length\n"));
                }
                facts.length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let chunked =
                    facts.chunked.is_none() && trimmed(value).eq_ignore_ascii_case(b"chunked");
                facts.chunked = Some(chunked);
            } else if name.eq_ignore_ascii_case("host") {
                if facts.host.is_some() {
                    return Err(Refusal::Malformed("more than one Host\n"));
                }
                let host = std::str::from_utf8(trimmed(value))
                    .map_err(|_| Refusal::Malformed("bad Host\n"))?;
                facts.host = Some(host);
            } else if name.eq_ignore_ascii_case("connection") {
                facts.connection.push(value);
            } else if name.eq_ignore_ascii_case("upgrade") {
                facts.upgrade = Some(value);
            } else if name.eq_ignore_ascii_case("expect") {
                facts.expect = Some(trimmed(value));
            }
        }
        Ok(facts)
    }

    fn connection_tokens(&self) -> impl Iterator<Item = &'h [u8]> + '_ {
        self.connection
            .iter()
            .flat_map(|line| line.split(|b| *b == b','))
            .map(trimmed)
            .filter(|t| !t.is_empty())
    }

    /// Whether `Connection` lists `token`.
    fn connection_has(&self, token: &str) -> bool {
        self.connection_tokens()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether `Connection` names the header `name` (so it is hop-by-hop too).
    fn connection_names(&self, name: &str) -> bool {
        !self.connection.is_empty()
            && self.connection_tokens().any(|t| {
                t.eq_ignore_ascii_case(name.as_bytes()) && HeaderName::from_bytes(t).is_ok()
            })
    }
}

/// The path and query of a request target, and the authority of an absolute-form one.
pub(super) fn split_target(target: &str) -> Result<(&str, Option<&str>), Refusal> {
    if target.starts_with('/') || target == "*" {
        return Ok((target, None));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            target
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])
        })
        .ok_or(Refusal::Malformed("bad request target\n"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // Host, port and IPv6 brackets only: no userinfo, no fragment, nothing a list could split.
    let plain = |b: u8| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b);
    if authority.is_empty() || !authority.bytes().all(plain) {
        return Err(Refusal::Malformed("bad request target\n"));
    }
    Ok((if path.is_empty() { "/" } else { path }, Some(authority)))
}

/// Appends the header line `name: value`.
pub(super) fn line(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Where `part`, a slice of `whole`, lies in it.
fn offset_of(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(trusted: bool) -> Rewrite<'static> {
        Rewrite {
            prefix: "",
            authority: "127.0.0.1:8080",
            peer: "203.0.113.9".parse().unwrap(),
            peer_is_trusted: trusted,
        }
    }

    fn forward(head: &str) -> Result<Option<ForwardedRequest>, Refusal> {
        forward_request(head.as_bytes(), 32_768, &rewrite(false))
    }

    fn upstream_head(head: &str) -> String {
        String::from_utf8(forward(head).unwrap().unwrap().upstream_head).unwrap()
    }

    #[test]
    fn a_request_is_written_again_without_hop_by_hop_headers_and_with_forwarding_ones() {
        let out = upstream_head(
            "GET /a?b HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, x-secret\r\n\
             X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 6.6.6.6\r\n\
             Accept: */*\r\n\r\n",
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nhost: a.test\r\nAccept: */*\r\nx-forwarded-for: 203.0.113.9\r\n\
             forwarded: for=203.0.113.9;host=\"a.test\";proto=https\r\nx-real-ip: 203.0.113.9\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: a.test\r\n\r\n"
        );
    }

    #[test]
    fn a_trusted_proxy_keeps_its_claims_and_has_its_address_appended() {
        let head = "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.1.1.1\r\n\
                    X-Real-IP: 1.1.1.1\r\nX-Forwarded-Proto: http\r\n\r\n";
        let out = forward_request(head.as_bytes(), 32_768, &rewrite(true))
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out.upstream_head).unwrap();
        assert!(out.contains("X-Real-IP: 1.1.1.1\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
        assert!(
            out.contains("x-forwarded-for: 1.1.1.1, 203.0.113.9\r\n"),
            "{out}"
        );
        assert!(!out.contains("x-real-ip: 203"), "{out}");
    }

    #[test]
    fn the_target_goes_under_the_upstream_prefix_and_an_absolute_one_loses_its_authority() {
        let r = Rewrite {
            prefix: "/api",
            ..rewrite(false)
        };
        let out = forward_request(b"GET http://b.test/v1?x HTTP/1.1\r\n\r\n", 32_768, &r)
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out.upstream_head).unwrap();
        assert!(
            out.starts_with("GET /api/v1?x HTTP/1.1\r\nhost: b.test\r\n"),
            "{out}"
        );
        let out = upstream_head("GET / HTTP/1.0\r\n\r\n");
        assert!(
            out.starts_with("GET / HTTP/1.0\r\nhost: 127.0.0.1:8080\r\n"),
            "{out}"
        );
    }

    #[test]
    fn body_framing_is_read_once_and_stated_once() {
        let r = forward("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        let out = String::from_utf8(r.upstream_head).unwrap();
        assert_eq!(out.matches("content-length").count(), 1, "{out}");
        let r = forward("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        let refused = [
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("CONNECT a.test:443 HTTP/1.1\r\n\r\n", 400),
            ("GET ftp://a/ HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        ];
        for (head, status) in refused {
            assert_eq!(forward(head).unwrap_err().answer().0, status, "{head}");
        }
    }

    #[test]
    fn forwarding_headers_under_other_spellings_and_h2c_upgrades_do_not_pass() {
        let out = upstream_head(
            "GET / HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\n\
             Connection: Upgrade\r\nUpgrade: h2c\r\nX_Other: 1\r\n\r\n",
        );
        assert!(!out.contains("6.6.6.6"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
        assert!(out.contains("X_Other: 1\r\n"), "{out}");
        let r = forward("GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(r.upstream_head)
                .unwrap()
                .contains("host: b.test\r\n")
        );
        for bad in [
            "GET http://u@b.test/ HTTP/1.1\r\n\r\n",
            "GET http://a,b/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(forward(bad).unwrap_err().answer().0, 400, "{bad}");
        }
        let r = forward("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.expects_continue);
        assert!(!r.idempotent);
    }

    #[test]
    fn a_head_over_the_limit_is_refused_complete_or_not() {
        let long = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(100));
        assert!(forward_request(long.as_bytes(), 64, &rewrite(false)).is_err());
        assert!(matches!(
            forward_request(long.as_bytes(), 1000, &rewrite(false)),
            Ok(None)
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(forward(&head).unwrap_err(), Refusal::TooLarge);
    }

    #[test]
    fn keep_alive_upgrade_and_expect_follow_the_version_and_the_connection_header() {
        let r = forward("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        let r = forward("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive && r.http10);
        let r = forward("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.upgrade);
        let out = String::from_utf8(r.upstream_head).unwrap();
        assert!(
            out.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let r = forward("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.expects_continue);
        assert!(
            !String::from_utf8(r.upstream_head)
                .unwrap()
                .contains("xpect")
        );
    }

    const DATE_TEXT: &str = "Sun, 29 Nov 2026 21:25:05 GMT";
    const DATE: &[u8] = DATE_TEXT.as_bytes();

    #[test]
    fn responses_are_framed_for_the_client() {
        let get = forward("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let head = forward("HEAD / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let old = forward("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        let respond = |bytes: &str, request: &ForwardedRequest, keep: bool| {
            forward_response(bytes.as_bytes(), request, keep, DATE)
                .unwrap()
                .unwrap()
        };
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nX-App: 1\r\n\r\nhi";
        let r = respond(ok, &get, true);
        assert_eq!(
            (r.framing, r.head_len, r.upstream_reusable, r.close),
            (Framing::Length(2), ok.len() - 2, true, false)
        );
        assert_eq!(
            String::from_utf8(r.client_head).unwrap(),
            "HTTP/1.1 200 OK\r\nX-App: 1\r\ndate: Sun, 29 Nov 2026 21:25:05 GMT\r\ncontent-length: 2\r\n\r\n"
        );
        // The upstream's own date is kept, and not doubled.
        let dated =
            "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\nContent-Length: 0\r\n\r\n";
        let kept = String::from_utf8(respond(dated, &get, true).client_head).unwrap();
        assert!(
            kept.contains("Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n"),
            "{kept}"
        );
        assert!(!kept.contains(DATE_TEXT), "{kept}");
        let r = respond(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            true,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = respond("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &head, true);
        assert_eq!(r.framing, Framing::Empty);
        assert!(
            String::from_utf8(r.client_head)
                .unwrap()
                .contains("Content-Length: 9\r\n")
        );
        let r = respond("HTTP/1.0 200 OK\r\n\r\n", &get, true);
        assert_eq!(
            (r.framing, r.upstream_reusable, r.close),
            (Framing::UntilClose, false, true)
        );
        assert!(
            String::from_utf8(r.client_head)
                .unwrap()
                .ends_with("connection: close\r\n\r\n")
        );
        let r = respond(
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            &get,
            true,
        );
        assert_eq!((r.framing, r.upstream_reusable), (Framing::Empty, false));
        let r = respond("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &old, true);
        assert!(
            !r.upstream_reusable,
            "an HTTP/1.0 request went upstream without keep-alive"
        );
        assert!(
            String::from_utf8(r.client_head)
                .unwrap()
                .contains("connection: keep-alive\r\n")
        );
        let r = respond("HTTP/1.1 100 Continue\r\n\r\n", &get, true);
        assert_eq!((r.status, r.head_len), (100, 25));
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
        ] {
            assert!(
                forward_response(bad.as_bytes(), &get, true, DATE).is_err(),
                "{bad}"
            );
        }
        assert!(
            forward_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &old,
                true,
                DATE
            )
            .is_err()
        );
    }

    #[test]
    fn an_own_answer_to_head_states_its_length_and_sends_no_body() {
        let get =
            String::from_utf8(own_response(502, "Bad Gateway", "down\n", false, false)).unwrap();
        let head =
            String::from_utf8(own_response(502, "Bad Gateway", "down\n", false, true)).unwrap();
        assert!(
            get.contains("content-length: 5\r\n") && get.ends_with("\r\n\r\ndown\n"),
            "{get}"
        );
        assert!(
            head.contains("content-length: 5\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }
}
