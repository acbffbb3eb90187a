//! A small HTTP/1.1 upstream for the demo and the end-to-end tests. It answers every request
//! with what it saw (method, path, forwarding headers, body length and hash); `/slow?ms=N`
//! answers after N milliseconds; `/drip?ms=N&chunks=K` sends K chunks of 1 KiB, one every N
//! milliseconds; `/big?mb=N` sends N MiB at once; `/ws` accepts a WebSocket-style upgrade and
//! echoes bytes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Requests this process's upstream has started answering (tests wait on it).
pub static REQUESTS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// Answers one request.
pub async fn answer(
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    REQUESTS_STARTED.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == "/ws" && req.headers().contains_key(hyper::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        return Ok(response);
    }
    let query_number = |name: &str| {
        req.uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match req.uri().path() {
        "/drip" => {
            let (ms, chunks) = (
                query_number("ms").unwrap_or(100),
                query_number("chunks").unwrap_or(10),
            );
            let stream = futures_lite::stream::unfold(0, move |sent| async move {
                if sent == chunks {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some((Ok(Frame::data(Bytes::from(vec![b'd'; 1024]))), sent + 1))
            });
            return Ok(Response::new(StreamBody::new(stream).boxed()));
        }
        "/big" => {
            let mib = query_number("mb").unwrap_or(1);
            let body = Bytes::from(vec![b'b'; usize::try_from(mib << 20).unwrap_or(0)]);
            return Ok(Response::new(Full::new(body).boxed()));
        }
        _ => {}
    }
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/slow" {
        let ms = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let text = format!(
        "upstream saw {} {}\nhost: {}\nx-forwarded-for: {}\nx-forwarded-proto: {}\nx-forwarded-host: {}\nx-real-ip: {}\nforwarded: {}\nconnection: {}\nbody-bytes: {}\nbody-sha: {:016x}\n",
        parts.method,
        parts.uri,
        header("host"),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("x-forwarded-host"),
        header("x-real-ip"),
        header("forwarded"),
        header("connection"),
        body.len(),
        body.iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b))
                .wrapping_mul(0x0100_0000_01b3)),
    );
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

/// Serves `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(answer))
                .with_upgrades()
                .await;
        });
    }
}
