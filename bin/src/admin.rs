//! The `[admin]` listener (plain HTTP, loopback by default): `/metrics`, `/healthz`,
//! `/readyz`, the status page at `/` and the same rows as JSON at `/status.json`, which
//! `certloop status` reads. It runs under the same connection caps and deadlines as every
//! other listener.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpStream;

use crate::admission::Admitted;
use crate::cert_status::{CertSources, live_rows, not_ready};
use crate::connection;
use crate::listen::ListenSocket;
use crate::metrics::Metrics;
use crate::proxy::{ProxyBody, respond};
use crate::server::{ListenerContext, accept_loop};
use crate::status_page;

/// What the admin endpoints read.
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) sources: CertSources,
}

/// Serves the admin endpoints until the context's stop signal.
pub(crate) async fn serve_admin(
    ctx: Arc<ListenerContext>,
    listener: ListenSocket,
    admin: Arc<Admin>,
) -> ListenSocket {
    let accepting = ctx.clone();
    let serve = move |tcp: TcpStream, _peer: SocketAddr, admitted: Admitted| {
        let (admin, builders, stop) = (admin.clone(), ctx.builders(), ctx.stop());
        async move {
            let _admitted = admitted;
            let handler = move |req: Request<Incoming>| std::future::ready(admin.answer(&req));
            connection::serve(tcp, handler, builders, stop).await;
        }
    };
    accept_loop(accepting, listener, serve).await
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let mut response = self.route(req);
        (response.headers_mut())
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn route(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "use GET\n".into(),
            );
        }
        let now = certloop_acme::adapter::system_clock().as_secs();
        match req.uri().path() {
            "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                let waiting = not_ready(
                    &live_rows(&self.sources.read().unwrap_or_else(|e| e.into_inner())),
                    now,
                );
                let listeners: Vec<serde_json::Value> = (waiting.iter())
                    .map(|(listener, reason)| {
                        serde_json::json!({ "listener": listener, "reason": reason })
                    })
                    .collect();
                let ready = listeners.is_empty();
                let body = serde_json::json!({ "ready": ready, "not_ready": listeners });
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                respond(status, "application/json", format!("{body}\n"))
            }
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.encode(),
            ),
            "/status.json" => {
                let rows = live_rows(&self.sources.read().unwrap_or_else(|e| e.into_inner()));
                let body = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
                respond(StatusCode::OK, "application/json", body)
            }
            "/" => {
                let page = status_page::render(
                    &live_rows(&self.sources.read().unwrap_or_else(|e| e.into_inner())),
                    now,
                );
                respond(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found; try /, /metrics, /healthz, /readyz or /status.json\n".into(),
            ),
        }
    }
}
