//! A fake ACME directory with ARI (RFC 9773) in front of Pebble 2.4, which has none: it
//! serves Pebble's directory with a `renewalInfo` URL added (every other URL still points at
//! Pebble), and answers renewal-information requests itself. The first certificate asked
//! about gets a window opening in two seconds, long before the default renewal time; later
//! ones a window months away.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

use crate::pebble::Pebble;

/// The fake directory; runs until the test process ends.
pub struct AriDirectory {
    /// The directory URL to configure.
    pub url: String,
    /// Certificate identifiers asked about, in order.
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl AriDirectory {
    /// Starts the fake in front of `pebble`, on a free port, with Pebble's listener certificate.
    pub fn start(pebble: &Pebble) -> Self {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&pebble.directory_ca)
            .arg(&pebble.directory_url)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "Pebble's directory: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut directory: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("directory JSON");
        // The port is only known once bound; handlers read the directory from this cell.
        let directory_json = Arc::new(Mutex::new(String::new()));
        let tls = pebble.listener_server_config();
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(tls));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let served = directory_json.clone();
        let port = crate::serve_in_background(move |listener| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, directory, seen) = (acceptor.clone(), served.clone(), seen.clone());
                tokio::spawn(async move {
                    let tcp = tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp);
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let directory = directory.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let seen = seen.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&req, &directory, &seen)) }
                    });
                    let io = certloop_acme::testing::HyperIo(tls);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        directory["renewalInfo"] = format!("https://127.0.0.1:{port}/renewal-info").into();
        *directory_json.lock().unwrap_or_else(|e| e.into_inner()) = directory.to_string();
        Self {
            url: format!("https://127.0.0.1:{port}/dir"),
            asked,
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    directory: &str,
    seen: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/dir" {
        return Response::new(Full::new(Bytes::from(directory.to_owned())));
    }
    let Some(id) = path.strip_prefix("/renewal-info/") else {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let first =
        seen.iter().collect::<BTreeSet<_>>().len() <= 1 && seen.first().is_none_or(|f| f == id);
    seen.push(id.to_owned());
    let now = certloop_acme::adapter::system_clock();
    let (start, end) = if first {
        // Opens in two seconds: the renewed certificate must expire later than the first one,
        // and Pebble's validity has one-second resolution.
        (
            now.saturating_add(Duration::from_secs(2)),
            now.saturating_add(Duration::from_secs(3)),
        )
    } else {
        (
            now.saturating_add(Duration::from_secs(60 * 86_400)),
            now.saturating_add(Duration::from_secs(61 * 86_400)),
        )
    };
    let body = format!(r#"{{"suggestedWindow": {{"start": "{start}", "end": "{end}"}}}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        "retry-after",
        hyper::header::HeaderValue::from_static("21600"),
    );
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
