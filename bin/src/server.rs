//! Accept loops: TLS listeners (HTTP/1.1 and HTTP/2 through the proxy, TLS-ALPN-01 handshakes
//! closed after the handshake) and the plain-HTTP listener (HTTP-01 answers, 308 to HTTPS).

use std::convert::Infallible;
use std::sync::Arc;

use certloop_tokio::Http01Tokens;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::proxy::{Proxy, ProxyBody, text};

/// Accepts TLS connections until `stop` turns true; connections are tracked by `graceful`.
pub(crate) async fn serve_tls(
    name: String,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(listener = %name, "accept failed: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, proxy, watcher) = (acceptor.clone(), proxy.clone(), graceful.watcher());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(certloop_acme::tls::ACME_TLS_ALPN) {
                return; // a TLS-ALPN-01 validation: the handshake was the answer
            }
            let service = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
}

/// The `[http]` listener: HTTP-01 answers for every ACME listener, 308 to HTTPS otherwise.
pub(crate) async fn serve_http(
    listener: TcpListener,
    tokens: Arc<Vec<Arc<Http01Tokens>>>,
    https_port: u16,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let (tokens, watcher) = (tokens.clone(), graceful.watcher());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let tokens = tokens.clone();
                async move { Ok::<_, Infallible>(http_response(&req, &tokens, https_port)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            let _ = watcher.watch(conn).await;
        });
    }
}

fn http_response(
    req: &Request<Incoming>,
    tokens: &[Arc<Http01Tokens>],
    https_port: u16,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    if req.method() == Method::GET
        && let Some(answer) = tokens.iter().find_map(|t| t.answer_path(path))
    {
        return text(StatusCode::OK, &answer);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    if host.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing Host header\n");
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut response = text(StatusCode::PERMANENT_REDIRECT, "redirecting to HTTPS\n");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
