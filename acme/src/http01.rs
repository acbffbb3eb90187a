//! HTTP-01 (RFC 8555 §8.3): pending tokens, and a minimal HTTP/1.1 responder that answers
//! `GET /.well-known/acme-challenge/<token>` for exact pending tokens only, over any
//! futures-io stream.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::accept::{AcceptBackoff, PerClientSlots, accept_with_backoff};
use crate::runtime::{Runtime, timeout};
use crate::tls::ChallengeOwner;

/// The path prefix HTTP-01 validation requests use.
pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending HTTP-01 tokens and their key authorizations, each with the order that published it.
#[derive(Debug, Default)]
pub struct Http01Tokens {
    tokens: RwLock<BTreeMap<String, (Option<ChallengeOwner>, String)>>,
}

impl Http01Tokens {
    /// Answers `token` with `key_authorization` until removed.
    #[doc(hidden)]
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.insert_for(None, token, key_authorization);
    }

    /// Answers `token` on behalf of `owner` until [`Self::remove_owned_by`] (a later owner of
    /// the same token, when the CA reuses an authorization, takes it over).
    pub(crate) fn insert_owned(&self, owner: ChallengeOwner, token: &str, key_authorization: &str) {
        self.insert_for(Some(owner), token, key_authorization);
    }

    fn insert_for(&self, owner: Option<ChallengeOwner>, token: &str, key_authorization: &str) {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        tokens.insert(token.to_owned(), (owner, key_authorization.to_owned()));
    }

    /// Stops answering the tokens `owner` published (and still owns).
    pub(crate) fn remove_owned_by(&self, owner: ChallengeOwner) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (published_by, _)| *published_by != Some(owner));
    }

    /// The order tasks whose tokens are published (tokens inserted without an owner are not
    /// listed).
    #[doc(hidden)]
    pub fn owners(&self) -> Vec<ChallengeOwner> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.values().filter_map(|(owner, _)| *owner).collect()
    }

    /// The key authorization for a pending token.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .map(|(_, key_authorization)| key_authorization.clone())
    }

    /// The key authorization for a request path, if it is exactly a pending token's path.
    pub fn answer_path(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        if token.is_empty() || token.contains(['/', '?', '#']) {
            return None;
        }
        self.answer(token)
    }
}

/// What a plain-HTTP request asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target (origin form), e.g. `/path?q`.
    pub target: String,
    /// `Host` header, if any.
    pub host: Option<String>,
}

/// Reads one request head (up to 8 KiB). `None` if the peer sent something else.
pub async fn read_request_head<S: futures_lite::AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<RequestHead> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > 8192 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = std::str::from_utf8(&buf).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim().to_owned());
    Some(RequestHead {
        method,
        target,
        host,
    })
}

/// Writes a complete response with a text body and closes the exchange.
pub async fn write_response<S: futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

/// Serves one connection of the ready-made port-80 responder: pending tokens get their key
/// authorization, everything else a 404.
pub(crate) async fn serve_challenge_connection<S>(mut stream: S, tokens: &Http01Tokens)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let Some(head) = read_request_head(&mut stream).await else {
        return;
    };
    let answer = (head.method == "GET")
        .then(|| tokens.answer_path(&head.target))
        .flatten();
    let _ = match answer {
        Some(key_authorization) => {
            write_response(&mut stream, "200 OK", &[], &key_authorization).await
        }
        None => write_response(&mut stream, "404 Not Found", &[], "not found\n").await,
    };
}

/// How long one connection to the ready-made responder may take, from accept to the answer
/// written: the same as the proxy's default `request_header_timeout`.
pub const RESPONDER_DEADLINE: Duration = Duration::from_secs(15);

/// How many connections the ready-made responder serves at once; more wait in the backlog.
pub const RESPONDER_MAX_CONNECTIONS: usize = 1024;

/// How many of those one client address (an IPv6 /64) may hold; more are closed at once, so
/// that one client cannot keep the CA's validation requests out.
pub const RESPONDER_MAX_PER_CLIENT: usize = 16;

/// The ready-made port-80 responder over any runtime: accepts with `accept` (backing off on
/// errors, never giving up), serves each connection with `serve_challenge_connection`
/// under [`RESPONDER_DEADLINE`], and holds at most [`RESPONDER_MAX_CONNECTIONS`], of which at
/// most [`RESPONDER_MAX_PER_CLIENT`] from one client. Runs forever.
pub async fn serve_responder<R, F, Fut, S>(rt: R, mut accept: F, tokens: Arc<Http01Tokens>)
where
    R: Runtime,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<(S, IpAddr)>>,
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let mut backoff = AcceptBackoff::default();
    let slots = Arc::new(async_lock::Semaphore::new(RESPONDER_MAX_CONNECTIONS));
    let per_client = PerClientSlots::new(RESPONDER_MAX_PER_CLIENT);
    loop {
        let slot = slots.acquire_arc().await;
        let (stream, peer) = accept_with_backoff(&rt, "http-01", &mut backoff, &mut accept).await;
        let Ok(client_slot) = per_client.take(peer) else {
            tracing::debug!(%peer, "http-01: closed, too many connections from this client");
            continue;
        };
        let (task_rt, tokens) = (rt.clone(), tokens.clone());
        rt.spawn(Box::pin(async move {
            let _slots = (slot, client_slot);
            let served = serve_challenge_connection(stream, &tokens);
            if timeout(&task_rt, RESPONDER_DEADLINE, served)
                .await
                .is_none()
            {
                tracing::debug!("http-01: connection closed after {RESPONDER_DEADLINE:?}");
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_exact_pending_tokens_only() {
        let tokens = Http01Tokens::default();
        tokens.insert("abc", "abc.thumb");
        assert_eq!(
            tokens
                .answer_path("/.well-known/acme-challenge/abc")
                .as_deref(),
            Some("abc.thumb")
        );
        for path in [
            "/.well-known/acme-challenge/ab",
            "/.well-known/acme-challenge/abc/x",
            "/abc",
            "/.well-known/acme-challenge/",
        ] {
            assert_eq!(tokens.answer_path(path), None, "{path}");
        }
    }

    #[test]
    fn an_order_removes_only_the_tokens_it_still_owns() {
        let tokens = Http01Tokens::default();
        let (old, new) = (ChallengeOwner(1), ChallengeOwner(2));
        tokens.insert_owned(old, "reused", "reused.thumb");
        tokens.insert_owned(old, "mine", "mine.thumb");
        tokens.insert_owned(new, "reused", "reused.thumb");
        tokens.remove_owned_by(old);
        assert_eq!(tokens.answer("mine"), None);
        assert_eq!(tokens.answer("reused").as_deref(), Some("reused.thumb"));
    }

    #[test]
    fn serves_over_a_stream() {
        let tokens = Http01Tokens::default();
        tokens.insert("tok", "tok.key");
        let request =
            b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        let mut io = Duplex {
            input: futures_lite::io::Cursor::new(request),
            output: Vec::new(),
        };
        futures_lite::future::block_on(serve_challenge_connection(&mut io, &tokens));
        let response = String::from_utf8(io.output).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200 OK") && response.ends_with("tok.key"),
            "{response}"
        );
    }

    struct Duplex {
        input: futures_lite::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl futures_lite::AsyncRead for Duplex {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl futures_lite::AsyncWrite for Duplex {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
}
