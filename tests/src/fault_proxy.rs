//! A fault-injecting HTTPS proxy in front of Pebble, for testing how certloop reads a CA that
//! misbehaves. It forwards every request unchanged (the `Host` header included: Pebble builds
//! its URLs from it, so every URL it hands out points back at the proxy and JWS `url` fields
//! match), unless the current [`FaultPlan`] says to answer a request itself: an error status
//! with or without a problem document and Retry-After, garbage, a stall, a slow answer or a
//! reset connection. It can also add ACME profiles to the directory (Pebble 2.4 has none) and
//! records the payload of every new order, so tests see which profile was asked for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::pebble::Pebble;

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Every request.
    All,
    /// `GET /dir`.
    Directory,
    /// `HEAD /nonce-plz`.
    Nonce,
    /// `POST /order-plz`.
    NewOrder,
    /// `POST /finalize-order/...`.
    Finalize,
    /// `POST /certZ/...`.
    Certificate,
}

impl Path {
    fn matches(self, path: &str) -> bool {
        match self {
            Self::All => true,
            Self::Directory => path == "/dir",
            Self::Nonce => path.starts_with("/nonce-plz"),
            Self::NewOrder => path.starts_with("/order-plz"),
            Self::Finalize => path.starts_with("/finalize-order/"),
            Self::Certificate => path.starts_with("/certZ/"),
        }
    }
}

/// What the proxy does instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status, a `Retry-After` header if given, and an ACME problem document
    /// of this type (`serverInternal`, `rateLimited`, ...) or, without one, an HTML page.
    Status {
        /// HTTP status.
        status: u16,
        /// The `Retry-After` header value, verbatim (seconds or an HTTP date).
        retry_after: Option<String>,
        /// The problem type after `urn:ietf:params:acme:error:`.
        problem: Option<&'static str>,
    },
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers (the connection stays open).
    Stall,
    /// Forwards, but only after this long.
    Delay(Duration),
    /// Closes the connection without an answer.
    Reset,
    /// Forwards the request, then closes the connection instead of relaying Pebble's answer:
    /// the CA acted on a request whose answer was lost.
    LoseAnswer,
    /// `400 badNonce`, the first time each URL is requested; later requests are forwarded.
    BadNonceFirst,
}

/// The fault in force: `fault` for requests matching `path`, the next `times` of them (`None`:
/// every one).
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Which requests.
    pub path: Path,
    /// What happens to them.
    pub fault: Fault,
    /// How many times, then forwarding resumes.
    pub times: Option<usize>,
}

/// The proxy; runs until the test process ends.
pub struct FaultProxy {
    /// The directory URL to configure.
    pub directory_url: String,
    plan: Arc<Mutex<Option<FaultPlan>>>,
    requests: Arc<Mutex<Vec<String>>>,
    faulted: Arc<AtomicUsize>,
    profiles: Arc<Mutex<Vec<String>>>,
    new_orders: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `pebble` on a free port, with Pebble's listener certificate
    /// (so `pebble.directory_ca` verifies it), forwarding everything until a plan is set.
    pub fn start(pebble: &Pebble) -> Self {
        let server = pebble.listener_server_config();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pebble.directory_ca).expect("CA") {
            roots.add(cert.expect("CA")).expect("CA");
        }
        let client =
            rustls::ClientConfig::builder_with_provider(certloop_acme::adapter::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let upstream_port: u16 = pebble
            .directory_url
            .trim_start_matches("https://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("Pebble's port");
        let context = Arc::new(Context {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: futures_rustls::TlsConnector::from(Arc::new(client)),
            upstream_port,
            plan: Arc::new(Mutex::new(None)),
            requests: Arc::new(Mutex::new(Vec::new())),
            faulted: Arc::new(AtomicUsize::new(0)),
            bad_nonce_seen: Mutex::new(Vec::new()),
            profiles: Arc::new(Mutex::new(Vec::new())),
            new_orders: Arc::new(Mutex::new(Vec::new())),
        });
        let serving = context.clone();
        let port = crate::serve_in_background(move |listener| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serving.clone().serve(tcp));
            }
        });
        Self {
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            plan: context.plan.clone(),
            requests: context.requests.clone(),
            faulted: context.faulted.clone(),
            profiles: context.profiles.clone(),
            new_orders: context.new_orders.clone(),
        }
    }

    /// From now on, the directory lists these profiles in `meta.profiles` (Pebble issues the
    /// same certificates whichever is asked for).
    pub fn offer_profiles(&self, names: &[&str]) {
        *self.profiles.lock().unwrap_or_else(|e| e.into_inner()) =
            names.iter().map(|n| (*n).to_owned()).collect();
    }

    /// The JWS payload of every new-order request so far.
    pub fn new_orders(&self) -> Vec<serde_json::Value> {
        self.new_orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `plan` in force (`None`: forward everything).
    pub fn set(&self, plan: Option<FaultPlan>) {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// `METHOD path` of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests got a fault instead of Pebble.
    pub fn faulted(&self) -> usize {
        self.faulted.load(Ordering::SeqCst)
    }
}

struct Context {
    acceptor: futures_rustls::TlsAcceptor,
    connector: futures_rustls::TlsConnector,
    upstream_port: u16,
    plan: Arc<Mutex<Option<FaultPlan>>>,
    requests: Arc<Mutex<Vec<String>>>,
    faulted: Arc<AtomicUsize>,
    bad_nonce_seen: Mutex<Vec<String>>,
    profiles: Arc<Mutex<Vec<String>>>,
    new_orders: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// What to do with one request.
enum Decision {
    Forward(Option<Duration>),
    ForwardThenReset,
    Answer(Response<Full<Bytes>>),
    Stall,
    Reset,
}

impl Context {
    async fn serve(self: Arc<Self>, tcp: tokio::net::TcpStream) {
        let Ok(tls) = self.acceptor.accept(tcp.compat()).await else {
            return;
        };
        let context = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let context = context.clone();
            async move { context.handle(req).await }
        });
        let io = certloop_acme::testing::HyperIo(tls);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }

    fn decide(&self, method: &str, path: &str) -> Decision {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let Some(current) = plan.as_mut().filter(|p| p.path.matches(path)) else {
            return Decision::Forward(None);
        };
        if current.fault == Fault::BadNonceFirst {
            let mut seen = self
                .bad_nonce_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if method != "POST" || seen.iter().any(|p| p == path) {
                return Decision::Forward(None);
            }
            seen.push(path.to_owned());
        }
        if let Some(times) = &mut current.times {
            if *times == 0 {
                return Decision::Forward(None);
            }
            *times -= 1;
        }
        self.faulted.fetch_add(1, Ordering::SeqCst);
        match &current.fault {
            Fault::Status {
                status,
                retry_after,
                problem,
            } => Decision::Answer(status_answer(*status, retry_after.as_deref(), *problem)),
            Fault::BadNonceFirst => Decision::Answer(status_answer(400, None, Some("badNonce"))),
            Fault::Garbage => Decision::Answer(Response::new(Full::new(Bytes::from_static(
                b"<html>this is not JSON",
            )))),
            Fault::Stall => Decision::Stall,
            Fault::Delay(by) => Decision::Forward(Some(*by)),
            Fault::Reset => Decision::Reset,
            Fault::LoseAnswer => Decision::ForwardThenReset,
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{method} {path}"));
        match self.decide(&method, &path) {
            Decision::Answer(response) => Ok(response),
            Decision::Stall => std::future::pending().await,
            Decision::Reset => Err(std::io::Error::other("reset by the fault proxy")),
            Decision::ForwardThenReset => {
                let _ = self.forward(req).await;
                Err(std::io::Error::other("answer dropped by the fault proxy"))
            }
            Decision::Forward(delay) => {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                self.forward(req)
                    .await
                    .map_err(|e| std::io::Error::other(format!("forwarding to Pebble: {e}")))
            }
        }
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, String> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let path = parts.uri.path().to_owned();
        if Path::NewOrder.matches(&path)
            && let Some(payload) = jws_payload(&body)
        {
            (self.new_orders.lock().unwrap_or_else(|e| e.into_inner())).push(payload);
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.upstream_port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").expect("IP name");
        let tls = self
            .connector
            .connect(name, tcp.compat())
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(certloop_acme::testing::HyperIo(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        // The Host header stays the proxy's: Pebble builds its URLs from it.
        let response = sender
            .send_request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| e.to_string())?;
        let (mut parts, body) = response.into_parts();
        let mut body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let profiles = self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if Path::Directory.matches(&path) && !profiles.is_empty() {
            let mut directory: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let offered: serde_json::Map<String, serde_json::Value> = (profiles.into_iter())
                .map(|name| {
                    (
                        name.clone(),
                        format!("https://ca.test/profiles#{name}").into(),
                    )
                })
                .collect();
            directory["meta"]["profiles"] = offered.into();
            body = Bytes::from(directory.to_string());
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
        }
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

/// The decoded payload of a flattened JWS (`{"protected", "payload", "signature"}`).
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws["payload"].as_str()?)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

fn status_answer(
    status: u16,
    retry_after: Option<&str>,
    problem: Option<&str>,
) -> Response<Full<Bytes>> {
    let body = match problem {
        Some(kind) => format!(
            r#"{{"type": "urn:ietf:params:acme:error:{kind}", "detail": "injected by the fault proxy", "status": {status}}}"#
        ),
        None => format!("<html><body>{status} from the fault proxy</body></html>"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    let content_type = if problem.is_some() {
        "application/problem+json"
    } else {
        "text/html"
    };
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    if let Some(value) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            hyper::header::HeaderValue::from_str(value).expect("header value"),
        );
    }
    response
}
