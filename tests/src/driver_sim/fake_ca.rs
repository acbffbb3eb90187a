//! An ACME CA in the same process, reached through the driver's `Transport` seam: enough of
//! RFC 8555 for instant-acme (directory, nonces, accounts, orders, authorizations, challenges,
//! finalize, download), with faults per request chosen by the seed. It validates challenges
//! by looking at what the driver publishes (the TLS-ALPN-01 certificate in the resolver, the
//! HTTP-01 token), and issues real certificates for the CSR's key, so everything the driver
//! checks is checked for real. Signatures and nonces are not verified: the client is
//! instant-acme, tested elsewhere against Pebble.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use certloop_acme::CertResolver;
use certloop_acme::Http01Tokens;
use certloop_acme::adapter::{BoxFuture, Runtime};
use certloop_acme::testing::{Transport, TransportResponse};
use certloop_core::{SplitMix64, UnixTime};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use instant_acme::BodyWrapper;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::executor::SimRuntime;

/// The directory URL of the simulated CA.
pub const DIRECTORY_URL: &str = "https://ca.sim/dir";
const BASE: &str = "https://ca.sim";

/// Per-request fault rates, in parts per thousand.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaFaults {
    /// No connection (refused).
    pub refused: u64,
    /// The request is accepted and never answered.
    pub stall: u64,
    /// The answer takes up to 5 s.
    pub slow: u64,
    /// 500 with a `serverInternal` problem.
    pub server_error: u64,
    /// 503 with a Retry-After of up to 10 minutes.
    pub unavailable: u64,
    /// 429 `rateLimited` with a Retry-After of up to 10 minutes.
    pub rate_limited: u64,
    /// 200 with a body that is not JSON.
    pub garbage: u64,
    /// The request takes effect, then the connection is reset before the answer.
    pub lost_answer: u64,
    /// 400 `badNonce`.
    pub bad_nonce: u64,
    /// Of finalized orders, those that stay `processing` for up to 20 minutes (longer than
    /// the core's order timeout) instead of up to 3 seconds.
    pub slow_issuance: u64,
}

/// What the CA saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaStats {
    /// Requests received.
    pub requests: u64,
    /// Faults injected.
    pub faults: u64,
    /// Orders created.
    pub orders: u64,
    /// Certificates issued.
    pub issued: u64,
    /// Challenges whose answer was missing or wrong when validated.
    pub failed_validations: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

impl OrderStatus {
    fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Processing => "processing",
            Self::Valid => "valid",
            Self::Invalid => "invalid",
        }
    }
}

struct Order {
    names: Vec<String>,
    authzs: Vec<u64>,
    status: OrderStatus,
    /// Issued at finalize; downloadable from `valid_at` (monotonic virtual ms).
    chain_pem: Option<String>,
    valid_at: u64,
}

struct Authz {
    name: String,
    token: String,
    /// `None` while pending; `Some(true)` valid, `Some(false)` invalid.
    validated: Option<bool>,
    thumbprint: String,
}

struct Ca {
    faults: CaFaults,
    down: bool,
    rng: SplitMix64,
    next_id: u64,
    accounts: BTreeMap<String, String>,
    orders: BTreeMap<u64, Order>,
    authzs: BTreeMap<u64, Authz>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    issuer_pem: String,
    validity: Duration,
    stats: CaStats,
    /// Order start times by names, for the order-rate check.
    order_times: BTreeMap<Vec<String>, Vec<UnixTime>>,
}

/// Where a running driver publishes its TLS-ALPN-01 and HTTP-01 answers.
type Answers = (Arc<CertResolver>, Arc<Http01Tokens>);

/// What the CA looks at to validate a challenge: the driver's published answers.
#[derive(Clone, Default)]
pub struct Published {
    slot: Arc<Mutex<Option<Answers>>>,
}

impl Published {
    /// Points the CA at a newly launched driver's answers.
    pub fn set(&self, resolver: Arc<CertResolver>, tokens: Arc<Http01Tokens>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((resolver, tokens));
    }

    /// Forgets them (the process crashed).
    pub fn clear(&self) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn get(&self) -> Option<Answers> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The simulated CA; cloning shares it.
#[derive(Clone)]
pub struct FakeCa {
    ca: Arc<Mutex<Ca>>,
    rt: SimRuntime,
    published: Published,
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Vec<u8>);

fn problem(status: StatusCode, kind: &str, detail: &str) -> Answer {
    let body = json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    });
    (
        status,
        vec![("content-type", "application/problem+json".into())],
        body.to_string().into_bytes(),
    )
}

fn ok_json(status: StatusCode, location: Option<String>, body: &Value) -> Answer {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(location) = location {
        headers.push(("location", location));
    }
    (status, headers, body.to_string().into_bytes())
}

impl FakeCa {
    /// A CA issuing certificates valid for `validity`, with `faults`, on `rt`'s clock.
    pub fn new(rt: SimRuntime, validity: Duration, faults: CaFaults, seed: u64) -> Self {
        let key = rcgen::KeyPair::generate().expect("issuer key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "certloop simulated CA");
        let issuer_pem = params.self_signed(&key).expect("issuer").pem();
        Self {
            ca: Arc::new(Mutex::new(Ca {
                faults,
                down: false,
                rng: SplitMix64::new(seed),
                next_id: 1,
                accounts: BTreeMap::new(),
                orders: BTreeMap::new(),
                authzs: BTreeMap::new(),
                issuer: rcgen::Issuer::new(params, key),
                issuer_pem,
                validity,
                stats: CaStats::default(),
                order_times: BTreeMap::new(),
            })),
            rt,
            published: Published::default(),
        }
    }

    fn ca(&self) -> std::sync::MutexGuard<'_, Ca> {
        self.ca.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the CA looks for challenge answers.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// Sets the per-request fault rates (zero heals the CA).
    pub fn set_faults(&self, faults: CaFaults) {
        self.ca().faults = faults;
    }

    /// Takes the CA off the network (every connection refused) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.ca().down = down;
    }

    /// Whether the CA is off the network.
    pub fn is_down(&self) -> bool {
        self.ca().down
    }

    /// What the CA saw so far.
    pub fn stats(&self) -> CaStats {
        self.ca().stats
    }

    /// The most orders for one set of names within any hour.
    pub fn max_orders_per_hour(&self) -> usize {
        let ca = self.ca();
        let hour = 3_600_000;
        ca.order_times
            .values()
            .map(|times| {
                (0..times.len())
                    .map(|i| {
                        let end = times[i].as_millis() + hour;
                        times[i..]
                            .iter()
                            .take_while(|t| t.as_millis() < end)
                            .count()
                    })
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    fn answer(&self, method: &http::Method, path: &str, body: &[u8]) -> Answer {
        let now_mono = self.rt.executor().elapsed_ms();
        let now = self.rt.wall_clock();
        let mut ca = self.ca();
        let jws: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let field = |name: &str| -> Value {
            jws.get(name)
                .and_then(Value::as_str)
                .and_then(|s| B64.decode(s).ok())
                .and_then(|bytes| {
                    if bytes.is_empty() {
                        Some(Value::Null)
                    } else {
                        serde_json::from_slice(&bytes).ok()
                    }
                })
                .unwrap_or(Value::Null)
        };
        let (protected, payload) = (field("protected"), field("payload"));
        let mut segments = path.trim_start_matches('/').split('/');
        let kind = segments.next().unwrap_or_default();
        let id = segments.next().and_then(|id| id.parse::<u64>().ok());
        match (kind, id) {
            ("dir", None) => ok_json(
                StatusCode::OK,
                None,
                &json!({
                    "newNonce": format!("{BASE}/nonce"),
                    "newAccount": format!("{BASE}/account"),
                    "newOrder": format!("{BASE}/new-order"),
                    "revokeCert": format!("{BASE}/revoke"),
                    "keyChange": format!("{BASE}/key-change"),
                }),
            ),
            ("nonce", None) if method == http::Method::HEAD || method == http::Method::GET => {
                (StatusCode::OK, Vec::new(), Vec::new())
            }
            ("account", None) => {
                let Some(thumbprint) = jwk_thumbprint(&protected["jwk"]) else {
                    return problem(StatusCode::BAD_REQUEST, "malformed", "no usable jwk");
                };
                let url = format!("{BASE}/acct/{}", ca.next_id);
                ca.next_id += 1;
                ca.accounts.insert(url.clone(), thumbprint);
                ok_json(StatusCode::CREATED, Some(url), &json!({"status": "valid"}))
            }
            ("new-order", None) => {
                let Some(thumbprint) = account_of(&ca, &protected) else {
                    return problem(
                        StatusCode::UNAUTHORIZED,
                        "accountDoesNotExist",
                        "no account",
                    );
                };
                let mut names: Vec<String> = payload["identifiers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| Some(i["value"].as_str()?.to_owned()))
                    .collect();
                names.sort();
                let order_id = ca.next_id;
                ca.next_id += 1;
                let mut authzs = Vec::new();
                for name in &names {
                    let authz_id = ca.next_id;
                    ca.next_id += 1;
                    let token = B64.encode(ca.rng.next_u64().to_be_bytes());
                    ca.authzs.insert(
                        authz_id,
                        Authz {
                            name: name.clone(),
                            token,
                            validated: None,
                            thumbprint: thumbprint.clone(),
                        },
                    );
                    authzs.push(authz_id);
                }
                ca.order_times.entry(names.clone()).or_default().push(now);
                ca.orders.insert(
                    order_id,
                    Order {
                        names,
                        authzs,
                        status: OrderStatus::Pending,
                        chain_pem: None,
                        valid_at: 0,
                    },
                );
                ca.stats.orders += 1;
                let body = order_json(&mut ca, order_id, now_mono);
                ok_json(
                    StatusCode::CREATED,
                    Some(format!("{BASE}/order/{order_id}")),
                    &body,
                )
            }
            ("order", Some(id)) if ca.orders.contains_key(&id) => {
                let body = order_json(&mut ca, id, now_mono);
                ok_json(StatusCode::OK, None, &body)
            }
            ("authz", Some(id)) if ca.authzs.contains_key(&id) => {
                ok_json(StatusCode::OK, None, &authz_json(&ca, id))
            }
            ("chall", Some(id)) if ca.authzs.contains_key(&id) => {
                let is_alpn = path.ends_with("/alpn");
                let authz = &ca.authzs[&id];
                if authz.validated.is_none() {
                    let key_authorization = format!("{}.{}", authz.token, authz.thumbprint);
                    let valid = match self.published.get() {
                        Some((resolver, _)) if is_alpn => resolver
                            .challenge(&authz.name)
                            .is_some_and(|key| alpn_answer_matches(&key, &key_authorization)),
                        Some((_, tokens)) => {
                            tokens.answer(&authz.token).as_deref()
                                == Some(key_authorization.as_str())
                        }
                        None => false,
                    };
                    if !valid {
                        ca.stats.failed_validations += 1;
                    }
                    ca.authzs.get_mut(&id).expect("present").validated = Some(valid);
                }
                ok_json(StatusCode::OK, None, &challenge_json(&ca, id, is_alpn))
            }
            ("finalize", Some(id)) if ca.orders.contains_key(&id) => {
                let _ = order_json(&mut ca, id, now_mono);
                if ca.orders[&id].status != OrderStatus::Ready {
                    return problem(StatusCode::FORBIDDEN, "orderNotReady", "not ready");
                }
                let csr = payload["csr"]
                    .as_str()
                    .and_then(|c| B64.decode(c).ok())
                    .unwrap_or_default();
                let names = ca.orders[&id].names.clone();
                let chain = match issue(&ca, &csr, &names, now) {
                    Ok(chain) => chain,
                    Err(detail) => return problem(StatusCode::BAD_REQUEST, "badCSR", &detail),
                };
                let slow = ca.faults.slow_issuance;
                let delay = if ca.rng.chance(slow, 1000) {
                    ca.stats.faults += 1;
                    ca.rng.up_to(20 * 60_000)
                } else {
                    ca.rng.up_to(3_000)
                };
                let order = ca.orders.get_mut(&id).expect("present");
                order.chain_pem = Some(chain);
                order.status = OrderStatus::Processing;
                order.valid_at = now_mono + delay;
                ca.stats.issued += 1;
                let body = order_json(&mut ca, id, now_mono);
                ok_json(StatusCode::OK, None, &body)
            }
            ("cert", Some(id)) => match ca.orders.get(&id) {
                Some(order) if order.status == OrderStatus::Valid => (
                    StatusCode::OK,
                    vec![("content-type", "application/pem-certificate-chain".into())],
                    order.chain_pem.clone().unwrap_or_default().into_bytes(),
                ),
                _ => problem(StatusCode::NOT_FOUND, "malformed", "no such certificate"),
            },
            _ => problem(StatusCode::NOT_FOUND, "malformed", "no such resource"),
        }
    }

    /// Picks this request's fault, if any.
    fn fault(&self) -> Option<Fault> {
        let mut ca = self.ca();
        ca.stats.requests += 1;
        if ca.down {
            ca.stats.faults += 1;
            return Some(Fault::Refused);
        }
        let f = ca.faults;
        let roll = ca.rng.up_to(999);
        let table = [
            (f.refused, Fault::Refused),
            (f.stall, Fault::Stall),
            (f.slow, Fault::Slow(ca.rng.up_to(5_000))),
            (f.server_error, Fault::ServerError),
            (f.unavailable, Fault::Unavailable(1 + ca.rng.up_to(600))),
            (f.rate_limited, Fault::RateLimited(1 + ca.rng.up_to(600))),
            (f.garbage, Fault::Garbage),
            (f.lost_answer, Fault::LostAnswer),
            (f.bad_nonce, Fault::BadNonce),
        ];
        let mut floor = 0;
        for (rate, fault) in table {
            if roll < floor + rate {
                ca.stats.faults += 1;
                return Some(fault);
            }
            floor += rate;
        }
        None
    }
}

#[derive(Clone, Copy)]
enum Fault {
    Refused,
    Stall,
    Slow(u64),
    ServerError,
    Unavailable(u64),
    RateLimited(u64),
    Garbage,
    LostAnswer,
    BadNonce,
}

fn account_of(ca: &Ca, protected: &Value) -> Option<String> {
    let kid = protected["kid"].as_str()?;
    ca.accounts.get(kid).cloned()
}

/// RFC 7638 thumbprint of an EC P-256 JWK.
fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str()?,
        jwk["kty"].as_str()?,
        jwk["x"].as_str()?,
        jwk["y"].as_str()?
    );
    Some(B64.encode(Sha256::digest(canonical.as_bytes())))
}

/// Whether a TLS-ALPN-01 certificate carries the digest of `key_authorization` (RFC 8737).
fn alpn_answer_matches(key: &rustls::sign::CertifiedKey, key_authorization: &str) -> bool {
    use x509_parser::prelude::FromDer;
    let Some(leaf) = key.cert.first() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
        return false;
    };
    let digest = Sha256::digest(key_authorization.as_bytes());
    cert.extensions().iter().any(|ext| {
        ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31" && ext.value.ends_with(digest.as_slice())
    })
}

/// Moves the order along (pending → ready once every authorization is valid; processing →
/// valid once its certificate is due) and describes it.
fn order_json(ca: &mut Ca, id: u64, now_mono: u64) -> Value {
    let validated: Vec<Option<bool>> = ca.orders[&id]
        .authzs
        .iter()
        .map(|a| ca.authzs[a].validated)
        .collect();
    let order = ca.orders.get_mut(&id).expect("present");
    match order.status {
        OrderStatus::Pending if validated.contains(&Some(false)) => {
            order.status = OrderStatus::Invalid;
        }
        OrderStatus::Pending if validated.iter().all(|v| *v == Some(true)) => {
            order.status = OrderStatus::Ready;
        }
        OrderStatus::Processing if now_mono >= order.valid_at => {
            order.status = OrderStatus::Valid;
        }
        _ => {}
    }
    let mut body = json!({
        "status": order.status.name(),
        "identifiers": order.names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>(),
        "authorizations": order.authzs.iter().map(|a| format!("{BASE}/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{BASE}/finalize/{id}"),
    });
    if order.status == OrderStatus::Valid {
        body["certificate"] = json!(format!("{BASE}/cert/{id}"));
    }
    if order.status == OrderStatus::Invalid {
        body["error"] = json!({
            "type": "urn:ietf:params:acme:error:unauthorized",
            "detail": "a challenge answer was missing or wrong",
            "status": 403,
        });
    }
    body
}

fn challenge_json(ca: &Ca, id: u64, alpn: bool) -> Value {
    let authz = &ca.authzs[&id];
    let (kind, suffix) = if alpn {
        ("tls-alpn-01", "alpn")
    } else {
        ("http-01", "http")
    };
    let mut challenge = json!({
        "type": kind,
        "url": format!("{BASE}/chall/{id}/{suffix}"),
        "token": authz.token,
        "status": validation_status(authz.validated),
    });
    if authz.validated == Some(false) {
        challenge["error"] = json!({
            "type": "urn:ietf:params:acme:error:unauthorized",
            "detail": format!("no answer for {} at validation", authz.name),
            "status": 403,
        });
    }
    challenge
}

/// An authorization's (and its challenges') status: validation is immediate and final.
fn validation_status(validated: Option<bool>) -> &'static str {
    match validated {
        None => "pending",
        Some(true) => "valid",
        Some(false) => "invalid",
    }
}

fn authz_json(ca: &Ca, id: u64) -> Value {
    let authz = &ca.authzs[&id];
    json!({
        "identifier": {"type": "dns", "value": authz.name},
        "status": validation_status(authz.validated),
        "challenges": [challenge_json(ca, id, true), challenge_json(ca, id, false)],
    })
}

/// Issues a certificate for the CSR's key and the order's names, valid from `now`.
fn issue(ca: &Ca, csr_der: &[u8], names: &[String], now: UnixTime) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| format!("CSR: {e}"))?;
    let spki =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| format!("CSR key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    let secs = |t: UnixTime| {
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(t.as_millis() / 1000).unwrap_or(0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    params.not_before = secs(now);
    params.not_after = secs(now.saturating_add(ca.validity));
    let leaf = params
        .signed_by(&spki, &ca.issuer)
        .map_err(|e| e.to_string())?;
    Ok(format!("{}{}", leaf.pem(), ca.issuer_pem))
}

impl Transport for FakeCa {
    fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> BoxFuture<Result<TransportResponse, String>> {
        let this = self.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let mut lost = false;
            let answer = match this.fault() {
                Some(Fault::Refused) => return Err("connect to ca.sim:443: refused".into()),
                Some(Fault::Stall) => futures_lite::future::pending().await,
                Some(Fault::Slow(ms)) => {
                    this.rt.sleep(Duration::from_millis(ms)).await;
                    this.answer(&method, &path, &body)
                }
                Some(Fault::ServerError) => problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "serverInternal",
                    "simulated failure",
                ),
                Some(Fault::Unavailable(secs)) => {
                    let mut a = problem(StatusCode::SERVICE_UNAVAILABLE, "serverInternal", "busy");
                    a.1.push(("retry-after", secs.to_string()));
                    a
                }
                Some(Fault::RateLimited(secs)) => {
                    let mut a = problem(StatusCode::TOO_MANY_REQUESTS, "rateLimited", "slow down");
                    a.1.push(("retry-after", secs.to_string()));
                    a
                }
                Some(Fault::Garbage) => (StatusCode::OK, Vec::new(), b"<html>oops".to_vec()),
                Some(Fault::LostAnswer) => {
                    lost = true;
                    this.answer(&method, &path, &body)
                }
                Some(Fault::BadNonce) => problem(StatusCode::BAD_REQUEST, "badNonce", "stale"),
                None => this.answer(&method, &path, &body),
            };
            if lost {
                return Err("connection reset by peer".into());
            }
            let (status, headers, body) = answer;
            let mut rsp = http::Response::builder().status(status);
            let nonce = B64.encode(this.ca().rng.next_u64().to_be_bytes());
            rsp = rsp.header("replay-nonce", nonce);
            for (name, value) in headers {
                rsp = rsp.header(name, value);
            }
            let body = Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync();
            rsp.body(body).map_err(|e| e.to_string())
        })
    }
}
