//! The ACME step runner: account, order, challenges, polling, finalization. Generic over the
//! runtime seam; polls with `refresh()`/`certificate()` and the runtime's own timer (never
//! instant-acme's tokio-only `poll_*`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use certloop_core::{CertBundle, Certificate, FailureKind, OrderError, UnixTime};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, Key, NewAccount, NewOrder, OrderStatus, Problem,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cache::{decode_cert_file, encode_cert_file};
use crate::dns01::{DnsProvider, record_name, wait_until_visible};
use crate::fleet::{FleetMember, Keys, SharedChallenge};
use crate::http_client::{AcmeHttpClient, CaAnswered, RetryAfterSlot, Transport};
use crate::http01::Http01Tokens;
use crate::ip_identifier::{identifier_of, reverse_dns_name};
use crate::key_type::KeyType;
use crate::profiles::missing_profile;
use crate::runtime::Runtime;
use crate::status::{AcmeOperation, RequestDurations};
use crate::store::DirStore;
use crate::tls::{CertResolver, ChallengeOwner, alpn_challenge_cert, certified_key_from_bundle};

/// Which challenge proves control of the names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeKind {
    /// TLS-ALPN-01 on the TLS port (RFC 8737).
    #[default]
    TlsAlpn01,
    /// HTTP-01 on port 80.
    Http01,
    /// DNS-01: a TXT record, published through [`crate::AcmeConfig::dns01_rfc2136`]. The only
    /// challenge that can obtain wildcard names.
    Dns01,
}

impl ChallengeKind {
    /// The challenge's name in RFC 8555 terms, e.g. `tls-alpn-01`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
        }
    }
}

/// External Account Binding credentials (RFC 8555 §7.3.4).
#[derive(Clone)]
pub(crate) struct ExternalAccount {
    /// Key identifier from the CA.
    pub kid: String,
    /// The HMAC key, decoded from the CA's base64url.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAccount")
            .field("kid", &self.kid)
            .field("hmac_key", &"[redacted]")
            .finish()
    }
}

/// Everything an order needs, shared by all orders of one driver.
pub(crate) struct AcmeContext<R: Runtime> {
    /// The runtime seam.
    pub rt: R,
    /// The directory URL.
    pub directory_url: String,
    /// Contact URIs for the account.
    pub contacts: Vec<String>,
    /// How requests reach the CA.
    pub transport: Arc<dyn Transport>,
    /// EAB, if the CA requires it.
    pub eab: Option<ExternalAccount>,
    /// The ACME profile orders ask for, if any.
    pub profile: Option<String>,
    /// Where DNS-01 records are published, when that is the challenge.
    pub dns: Option<Arc<dyn DnsProvider>>,
    /// How long a DNS-01 record may take to reach every authoritative server.
    pub dns_propagation: Duration,
    /// The type of the certificate keys generated.
    pub key_type: KeyType,
    /// The cache directory.
    pub store: Arc<DirStore>,
    /// Where challenge certificates go.
    pub resolver: Arc<CertResolver>,
    /// Where HTTP-01 tokens go.
    pub tokens: Arc<Http01Tokens>,
    /// Which challenge to use.
    pub challenge: ChallengeKind,
    /// The last Retry-After the CA sent.
    pub retry_after: RetryAfterSlot,
    /// How long one ACME request may take.
    pub request_timeout: Duration,
    /// The account, once loaded or created.
    pub account: async_lock::Mutex<Option<Account>>,
    /// The fleet this instance shares certificates, the account and challenges with.
    pub fleet: Option<Arc<FleetMember<R>>>,
    /// How long each request took, by operation.
    pub durations: Arc<RequestDurations>,
}

impl<R: Runtime> AcmeContext<R> {
    /// Runs one request to the CA, recording how long it took as `operation`.
    async fn timed<T>(&self, operation: AcmeOperation, request: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let answer = request.await;
        self.durations.observe(operation, started.elapsed());
        answer
    }

    /// The HTTP client requests to the CA go through.
    pub(crate) fn http_client(&self) -> AcmeHttpClient<R> {
        AcmeHttpClient::new(
            self.rt.clone(),
            self.transport.clone(),
            self.retry_after.clone(),
            self.request_timeout,
        )
    }

    fn builder(&self) -> instant_acme::AccountBuilder {
        Account::builder_with_http(Box::new(self.http_client()))
    }

    /// The account for this cache directory: restored from certloop's credentials, adopted
    /// from a rustls-acme key file, or registered once and persisted.
    pub(crate) async fn account(&self) -> Result<Account, OrderError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let account = match &self.fleet {
            Some(fleet) => self.fleet_account(fleet).await?,
            None => self.local_account().await?,
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// The fleet's account (one per directory and contacts, registered once under a lease),
    /// kept in the cache directory too; this instance's own if Redis is unavailable.
    async fn fleet_account(&self, fleet: &FleetMember<R>) -> Result<Account, OrderError> {
        let id = Keys::account_id(&self.directory_url, &self.contacts);
        let lease = match fleet.shared_account(&id).await {
            Ok(Some(shared)) => {
                self.keep_shared_account(shared).await;
                return self.local_account().await;
            }
            Ok(None) => fleet.account_lease(&id).await,
            Err(e) => Err(e),
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(
                    "fleet storage unavailable ({e}): using this instance's own ACME account"
                );
                return self.local_account().await;
            }
        };
        // Another instance may have registered it while this one waited for the lease.
        if let Ok(Some(shared)) = fleet.shared_account(&id).await {
            fleet.client.release(&lease).await;
            self.keep_shared_account(shared).await;
            return self.local_account().await;
        }
        let account = self.local_account().await;
        let contacts = self.contacts.clone();
        let cached = self
            .with_store(move |store, url| store.load_account(&contacts, url))
            .await;
        match (&account, cached) {
            (Ok(_), Ok(cached))
                if cached.credentials_json.is_some() && cached.pkcs8_der.is_some() =>
            {
                let (json, der) = (
                    cached.credentials_json.unwrap_or_default(),
                    cached.pkcs8_der.unwrap_or_default(),
                );
                fleet.store_account(lease, &id, json, der).await;
            }
            _ => fleet.client.release(&lease).await,
        }
        account
    }

    /// Writes the fleet's account credentials to the cache directory, where
    /// [`AcmeContext::local_account`] reads them.
    async fn keep_shared_account(&self, (json, der): (Vec<u8>, Vec<u8>)) {
        let contacts = self.contacts.clone();
        let kept = self
            .with_store(move |store, url| store.store_account(&contacts, url, &json, &der))
            .await;
        if let Err(e) = kept {
            tracing::warn!("cannot keep the fleet's ACME account in the cache directory: {e}");
        }
    }

    /// The account in the cache directory, restored, adopted or registered.
    async fn local_account(&self) -> Result<Account, OrderError> {
        let contacts = self.contacts.clone();
        let cached = self
            .with_store(move |store, url| store.load_account(&contacts, url))
            .await
            // A local fault, not the CA's: retried like an unreachable CA, nothing persisted.
            .map_err(|detail| OrderError {
                kind: FailureKind::Unreachable,
                detail: format!("ACME account: {detail}"),
            })?;
        let restored = match cached
            .credentials_json
            .and_then(|j| serde_json::from_slice::<AccountCredentials>(&j).ok())
        {
            Some(credentials) => Some(
                self.timed(
                    AcmeOperation::Account,
                    self.builder().from_credentials(credentials),
                )
                .await
                .map_err(|e| self.classify(&e))?,
            ),
            None => None,
        };
        let account = match (restored, cached.pkcs8_der) {
            (Some(account), _) => account,
            (None, Some(der)) => {
                let key = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(der.as_slice()))
                    .map_err(|e| self.classify(&e))?;
                let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.clone()));
                let (account, credentials) = self
                    .timed(
                        AcmeOperation::Account,
                        self.builder()
                            .create_from_key((key, key_der), self.directory_url.clone()),
                    )
                    .await
                    .map_err(|e| self.classify(&e))?;
                let _ = self.persist_account(&credentials).await;
                account
            }
            (None, None) => {
                let contacts: Vec<&str> = self.contacts.iter().map(String::as_str).collect();
                let eab = self
                    .eab
                    .as_ref()
                    .map(|e| ExternalAccountKey::new(e.kid.clone(), &e.hmac_key));
                let new = NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = self
                    .timed(
                        AcmeOperation::Account,
                        self.builder()
                            .create(&new, self.directory_url.clone(), eab.as_ref()),
                    )
                    .await
                    .map_err(|e| self.classify(&e))?;
                tracing::info!(directory = %self.directory_url, account = account.id(), "registered ACME account");
                let _ = self.persist_account(&credentials).await;
                account
            }
        };
        Ok(account)
    }

    /// Stores the account's credentials; an error (logged) leaves the files as they were.
    pub(crate) async fn persist_account(
        &self,
        credentials: &AccountCredentials,
    ) -> Result<(), String> {
        let json = serde_json::to_vec(credentials)
            .map_err(|e| format!("cannot serialise ACME account credentials: {e}"))?;
        let der = credentials.private_key().secret_pkcs8_der().to_vec();
        let contacts = self.contacts.clone();
        let result = self
            .with_store(move |store, url| store.store_account(&contacts, url, &json, &der))
            .await;
        if let Err(e) = &result {
            tracing::error!("cannot store ACME account; a restart will register again: {e}");
        }
        result
    }

    /// Classifies an instant-acme error for the core, with the CA's problem type and detail.
    pub(crate) fn classify(&self, error: &instant_acme::Error) -> OrderError {
        match error {
            instant_acme::Error::Other(inner) => match inner.downcast_ref::<CaAnswered>() {
                Some(answer) => classify_answer(answer),
                None => OrderError {
                    kind: FailureKind::Unreachable,
                    detail: error.to_string(),
                },
            },
            instant_acme::Error::Api(problem) => classify_problem(problem, None),
            // The CA answered, with something that is not what RFC 8555 says it should be.
            instant_acme::Error::Json(e) => OrderError {
                kind: FailureKind::ServerError,
                detail: format!("the CA's answer could not be read: {e}"),
            },
            other => OrderError {
                kind: FailureKind::Unreachable,
                detail: other.to_string(),
            },
        }
    }

    /// Runs one order to a certificate for `domains`, publishing its challenge answers as
    /// `owner` (they are removed when the order ends, however it ends: DNS-01 records too, in
    /// the background when the order task is cancelled). `replacing` (sent as ARI `replaces`)
    /// must only be given when the directory supports ARI. `served_until` is the end of
    /// validity of the certificate served now, if any.
    pub(crate) async fn order(
        &self,
        domains: &[String],
        replacing: Option<&CertBundle>,
        served_until: Option<UnixTime>,
        owner: ChallengeOwner,
    ) -> Result<Certificate, OrderError> {
        let mut published = PublishedRecords {
            rt: self.rt.clone(),
            dns: self.dns.clone(),
            records: Vec::new(),
        };
        let mut shared = SharedAnswers {
            rt: self.rt.clone(),
            fleet: self.fleet.clone(),
            ids: Vec::new(),
        };
        let result = self
            .order_publishing(
                domains,
                replacing,
                served_until,
                owner,
                &mut published.records,
                &mut shared.ids,
            )
            .await;
        published.remove().await;
        shared.withdraw().await;
        result
    }

    /// [`AcmeContext::order`], noting each DNS-01 record it publishes in `published` and each
    /// answer it shares with the fleet in `shared`.
    async fn order_publishing(
        &self,
        domains: &[String],
        replacing: Option<&CertBundle>,
        served_until: Option<UnixTime>,
        owner: ChallengeOwner,
        published: &mut Vec<(String, String)>,
        shared: &mut Vec<String>,
    ) -> Result<Certificate, OrderError> {
        let account = self.account().await?;
        if let Some(profile) = &self.profile {
            let offered: Vec<String> = account.profiles().map(|p| p.name.to_owned()).collect();
            if let Some(detail) = missing_profile(profile, &self.directory_url, &offered) {
                return Err(OrderError {
                    kind: FailureKind::Rejected,
                    detail,
                });
            }
        }
        if let Some(cert) = self.resume_pending(&account, domains, served_until).await? {
            return Ok(cert);
        }
        let identifiers: Vec<Identifier> = domains.iter().map(|d| identifier_of(d)).collect();
        let replaced_leaf = replacing
            .and_then(|b| decode_cert_file(b.bytes()).ok())
            .and_then(|f| f.chain.into_iter().next());
        let profile = self.profile.as_deref();
        let plain_order = with_profile(NewOrder::new(&identifiers), profile);
        let replaces = replaced_leaf
            .as_ref()
            .and_then(|leaf| CertificateIdentifier::try_from(leaf).ok());
        let result = match replaces {
            Some(id) => match self
                .timed(
                    AcmeOperation::NewOrder,
                    account.new_order(
                        &with_profile(NewOrder::new(&identifiers), profile).replaces(id),
                    ),
                )
                .await
            {
                // A directory that offers ARI but does not echo `replaces` (instant-acme then
                // refuses the order): order once more without it.
                Err(e)
                    if !matches!(e, instant_acme::Error::Api(_))
                        && !is_ca_answer(&e)
                        && e.to_string().contains("replaces") =>
                {
                    tracing::warn!("the CA ignored ARI `replaces`; ordering without it ({e})");
                    (self.timed(AcmeOperation::NewOrder, account.new_order(&plain_order))).await
                }
                other => other,
            },
            None => (self.timed(AcmeOperation::NewOrder, account.new_order(&plain_order))).await,
        };
        let mut order = result.map_err(|e| self.classify(&e))?;
        let guard = ChallengeGuard {
            resolver: &self.resolver,
            tokens: &self.tokens,
            owner,
        };
        let mut authorizations = order.authorizations();
        loop {
            let asked = std::time::Instant::now();
            // The last `next` makes no request: only fetched authorizations are timed.
            let Some(authz) = authorizations.next().await else {
                break;
            };
            (self.durations).observe(AcmeOperation::Authorization, asked.elapsed());
            let mut authz = authz.map_err(|e| self.classify(&e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let kind = match self.challenge {
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::Dns01 => ChallengeType::Dns01,
            };
            let wanted = format!("{kind:?}");
            let mut challenge = authz.challenge(kind).ok_or_else(|| OrderError {
                kind: FailureKind::Rejected,
                detail: format!("the CA offers no {wanted} challenge"),
            })?;
            let key_authorization = challenge.key_authorization();
            // The name the certificate carries, and the SNI the validation arrives with.
            let (name, sni) = match &challenge.identifier().identifier {
                Identifier::Dns(domain) => (domain.clone(), domain.clone()),
                Identifier::Ip(ip) => (ip.to_string(), reverse_dns_name(*ip)),
                other => {
                    return Err(OrderError {
                        kind: FailureKind::Rejected,
                        detail: format!(
                            "the CA asked to validate {other:?}, not a name or address"
                        ),
                    });
                }
            };
            match self.challenge {
                ChallengeKind::TlsAlpn01 => {
                    let digest = key_authorization.digest().as_ref().to_vec();
                    let cert =
                        alpn_challenge_cert(&name, &digest).map_err(|detail| OrderError {
                            kind: FailureKind::Rejected,
                            detail,
                        })?;
                    self.resolver.add_challenge(guard.owner, &sni, cert);
                    let answer = SharedChallenge::TlsAlpn01 { name, sni, digest };
                    self.share(&answer, shared).await;
                }
                ChallengeKind::Http01 => {
                    self.tokens.insert_owned(
                        guard.owner,
                        &challenge.token,
                        key_authorization.as_str(),
                    );
                    let answer = SharedChallenge::Http01 {
                        token: challenge.token.clone(),
                        key_authorization: key_authorization.as_str().to_owned(),
                    };
                    self.share(&answer, shared).await;
                }
                ChallengeKind::Dns01 => {
                    // Published, then seen on every authoritative server, before the CA looks.
                    // A DNS failure is not the CA's: no other issuer would do better.
                    let dns_failed = |detail: String| OrderError {
                        kind: FailureKind::Rejected,
                        detail: format!("DNS-01: {detail}"),
                    };
                    let dns = self.dns.as_ref().ok_or_else(|| {
                        dns_failed("no DNS server is configured to publish the record".into())
                    })?;
                    let (record, value) = (record_name(&name), key_authorization.dns_value());
                    dns.publish(record.clone(), value.clone())
                        .await
                        .map_err(dns_failed)?;
                    published.push((record.clone(), value.clone()));
                    let within = self.dns_propagation;
                    wait_until_visible(&self.rt, dns.as_ref(), &record, &value, within)
                        .await
                        .map_err(dns_failed)?;
                }
            }
            // Each name is set ready as soon as its answer is in place: the CA validates them
            // concurrently.
            (self.timed(AcmeOperation::Challenge, challenge.set_ready()))
                .await
                .map_err(|e| self.classify(&e))?;
        }
        let mut delay = FIRST_POLL;
        loop {
            let state = (self.timed(AcmeOperation::PollOrder, order.refresh()))
                .await
                .map_err(|e| self.classify(&e))?;
            match state.status {
                OrderStatus::Ready => break,
                OrderStatus::Invalid => return Err(self.invalid_order(&mut order).await),
                OrderStatus::Valid => break,
                OrderStatus::Pending | OrderStatus::Processing => {
                    let url = order.url().to_owned();
                    self.poll_pause(&url, &mut delay).await;
                }
            }
        }
        drop(guard);
        // Off the async threads: an RSA 4096 key takes a second or more.
        let key_type = self.key_type;
        let key = (self.rt)
            .unblock(Box::new(move || key_type.generate()))
            .await
            .map_err(|e| OrderError {
                kind: FailureKind::Rejected,
                detail: format!("{key_type} key generation: {e}"),
            })?;
        if order.state().status != OrderStatus::Ready {
            // Already finalized, by a run whose key is not ours to use.
            return Err(OrderError {
                kind: FailureKind::ServerError,
                detail: format!(
                    "the CA returned order {} already finalized; ordering again",
                    order.url()
                ),
            });
        }
        let params = rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| OrderError {
            kind: FailureKind::Rejected,
            detail: format!("CSR: {e}"),
        })?;
        let csr = params.serialize_request(&key).map_err(|e| OrderError {
            kind: FailureKind::Rejected,
            detail: format!("CSR: {e}"),
        })?;
        // Recorded before finalizing: once the finalize request reaches the CA it may issue,
        // even if its answer is lost; the next attempt then collects this order instead of
        // placing another (Let's Encrypt allows 5 duplicates a week).
        let key_pem = key.serialize_pem();
        self.remember_pending(domains, order.url(), &key_pem).await;
        let finalize_url = order.state().finalize.clone();
        (self.timed(AcmeOperation::Finalize, order.finalize_csr(csr.der())))
            .await
            .map_err(|e| self.classify(&e))?;
        // The CA may ask, in the finalize answer, how long to wait before polling.
        if let Some(asked) = self.retry_after.take(&finalize_url) {
            self.rt.sleep(polling_pause(asked)).await;
        }
        let cert = self.collect(&mut order, &key_pem).await?;
        self.forget_pending(domains).await;
        Ok(cert)
    }

    /// Polls a finalized order until its certificate can be downloaded, and checks it.
    async fn collect(
        &self,
        order: &mut instant_acme::Order,
        key_pem: &str,
    ) -> Result<Certificate, OrderError> {
        let mut delay = FIRST_POLL;
        let chain_pem = loop {
            let answer = self.timed(AcmeOperation::Certificate, order.certificate());
            match answer.await.map_err(|e| self.classify(&e))? {
                Some(chain) => break chain,
                None => {
                    let url = order.url().to_owned();
                    self.poll_pause(&url, &mut delay).await;
                }
            }
        };
        let bundle = encode_cert_file(key_pem, &chain_pem);
        let invalid = |detail: String| OrderError {
            kind: FailureKind::InvalidCertificate,
            detail,
        };
        let info = decode_cert_file(&bundle)
            .map_err(|e| invalid(e.to_string()))?
            .info;
        certified_key_from_bundle(&bundle).map_err(invalid)?;
        Ok(Certificate {
            info,
            bundle: CertBundle::new(bundle),
        })
    }

    /// Collects the certificate of an order finalized by an earlier attempt, if one is
    /// recorded. `Ok(None)`: nothing to collect (or the order is gone, or its certificate
    /// would not outlast the one served until `served_until`), order anew.
    async fn resume_pending(
        &self,
        account: &Account,
        domains: &[String],
        served_until: Option<UnixTime>,
    ) -> Result<Option<Certificate>, OrderError> {
        let names = domains.to_vec();
        let pending = self
            .with_store(move |store, url| store.load_pending_order(&names, url))
            .await
            .map_err(|detail| OrderError {
                kind: FailureKind::Unreachable,
                detail: format!("pending order: {detail}"),
            })?;
        let Some((order_url, key_pem)) = pending else {
            return Ok(None);
        };
        let resumed = self.timed(AcmeOperation::ResumeOrder, account.order(order_url.clone()));
        let mut order = match resumed.await {
            Ok(order) => order,
            Err(e) => {
                let error = self.classify(&e);
                let gone = matches!(&e, instant_acme::Error::Other(inner)
                    if inner.downcast_ref::<CaAnswered>().is_some_and(|a| matches!(a.status, 403 | 404 | 410)));
                if !gone {
                    return Err(error); // try again later; the record stays
                }
                tracing::info!(order = %order_url, "the order recorded earlier is gone ({}); ordering anew", error.detail);
                self.forget_pending(domains).await;
                return Ok(None);
            }
        };
        if order.state().status == OrderStatus::Ready {
            // The finalize request of the earlier attempt never reached the CA: finalize now,
            // with the key recorded for it.
            let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| OrderError {
                kind: FailureKind::Rejected,
                detail: format!("the recorded key of order {order_url} cannot be read: {e}"),
            })?;
            let csr = rcgen::CertificateParams::new(domains.to_vec())
                .and_then(|params| params.serialize_request(&key))
                .map_err(|e| OrderError {
                    kind: FailureKind::Rejected,
                    detail: format!("CSR: {e}"),
                })?;
            (self.timed(AcmeOperation::Finalize, order.finalize_csr(csr.der())))
                .await
                .map_err(|e| self.classify(&e))?;
        }
        match order.state().status {
            OrderStatus::Valid | OrderStatus::Processing => {
                tracing::info!(order = %order_url, "collecting the certificate of an order finalized earlier");
                match self.collect(&mut order, &key_pem).await {
                    // Collected too late to be of use (the CA issued it at finalize time):
                    // not the CA's failure, order anew.
                    Ok(cert) if cert.info.not_after <= self.rt.wall_clock() => {
                        tracing::info!(order = %order_url, "the certificate of the order recorded earlier has expired since; ordering anew");
                        self.forget_pending(domains).await;
                        Ok(None)
                    }
                    // Already served: the earlier attempt stored this certificate but was
                    // stopped before it removed the record. Not the CA's failure either.
                    Ok(cert) if served_until.is_some_and(|until| cert.info.not_after <= until) => {
                        tracing::info!(order = %order_url, "the certificate of the order recorded earlier is already served; ordering anew");
                        self.forget_pending(domains).await;
                        Ok(None)
                    }
                    Ok(cert) => {
                        self.forget_pending(domains).await;
                        Ok(Some(cert))
                    }
                    Err(error) if error.kind == FailureKind::InvalidCertificate => {
                        self.forget_pending(domains).await;
                        Err(error)
                    }
                    Err(error) => Err(error),
                }
            }
            status => {
                tracing::info!(order = %order_url, "the order recorded earlier is {status:?}; ordering anew");
                self.forget_pending(domains).await;
                Ok(None)
            }
        }
    }

    async fn remember_pending(&self, domains: &[String], order_url: &str, key_pem: &str) {
        let (names, order_url, key_pem) =
            (domains.to_vec(), order_url.to_owned(), key_pem.to_owned());
        let result = self
            .with_store(move |store, url| {
                store.store_pending_order(&names, url, &order_url, &key_pem)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(
                "cannot record the finalized order; a failed download will order again: {e}"
            );
        }
    }

    async fn forget_pending(&self, domains: &[String]) {
        let names = domains.to_vec();
        self.with_store(move |store, url| store.clear_pending_order(&names, url))
            .await;
    }

    /// Runs `work` on the cache directory (with this context's directory URL) off the async
    /// threads.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DirStore, &str) -> T + Send + 'static,
    ) -> T {
        let (store, url) = (self.store.clone(), self.directory_url.clone());
        self.rt.unblock(Box::new(move || work(&store, &url))).await
    }

    /// Waits before polling the order at `url` again: the Retry-After of the CA's last answer
    /// from that URL if it sent one (at most 10 s), otherwise `delay`, which doubles up to 2 s.
    async fn poll_pause(&self, url: &str, delay: &mut Duration) {
        let pause = self.retry_after.take(url).map_or(*delay, polling_pause);
        self.rt.sleep(pause).await;
        *delay = (*delay * 2).min(MAX_POLL);
    }

    /// Describes why the CA declared the order invalid, from the failed challenges.
    async fn invalid_order(&self, order: &mut instant_acme::Order) -> OrderError {
        let mut problems = Vec::new();
        if let Some(problem) = order.state().error.clone() {
            problems.push(problem);
        }
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    problems.push(problem.clone());
                }
            }
        }
        match problems.into_iter().next() {
            Some(problem) => {
                let mut error = classify_problem(&problem, None);
                error.kind = match error.kind {
                    FailureKind::RateLimited { .. } | FailureKind::ServerError => error.kind,
                    _ => FailureKind::Rejected,
                };
                error
            }
            None => OrderError {
                kind: FailureKind::Rejected,
                detail: "the CA declared the order invalid".into(),
            },
        }
    }
}

/// `order`, asking for `profile` if one is configured.
fn with_profile<'a>(order: NewOrder<'a>, profile: Option<&'a str>) -> NewOrder<'a> {
    match profile {
        Some(profile) => order.profile(profile),
        None => order,
    }
}

/// The DNS-01 records an order published. Removed (and awaited) when the order ends; if the
/// order task is cancelled first, dropping this removes them in the background.
struct PublishedRecords<R: Runtime> {
    rt: R,
    dns: Option<Arc<dyn DnsProvider>>,
    records: Vec<(String, String)>,
}

impl<R: Runtime> PublishedRecords<R> {
    async fn remove(&mut self) {
        if let Some(dns) = &self.dns {
            remove_records(dns.as_ref(), std::mem::take(&mut self.records)).await;
        }
    }
}

impl<R: Runtime> Drop for PublishedRecords<R> {
    fn drop(&mut self) {
        let (Some(dns), records) = (self.dns.clone(), std::mem::take(&mut self.records)) else {
            return;
        };
        if !records.is_empty() {
            self.rt.spawn(Box::pin(async move {
                remove_records(dns.as_ref(), records).await;
            }));
        }
    }
}

async fn remove_records(dns: &dyn DnsProvider, records: Vec<(String, String)>) {
    for (name, value) in records {
        if let Err(e) = dns.remove(name.clone(), value).await {
            tracing::warn!("DNS-01: cannot remove the TXT record {name}: {e}");
        }
    }
}

impl<R: Runtime> AcmeContext<R> {
    /// Publishes an answer to every instance of the fleet (if there is one), before the CA is
    /// told to validate: its validation may reach any of them.
    async fn share(&self, answer: &SharedChallenge, shared: &mut Vec<String>) {
        if let Some(fleet) = &self.fleet
            && let Some(id) = fleet.share_challenge(answer).await
        {
            shared.push(id);
        }
    }
}

/// The answers an order shared with the fleet: withdrawn when it ends (in the background if
/// its task is cancelled; they expire by themselves if even that fails).
struct SharedAnswers<R: Runtime> {
    rt: R,
    fleet: Option<Arc<FleetMember<R>>>,
    ids: Vec<String>,
}

impl<R: Runtime> SharedAnswers<R> {
    async fn withdraw(&mut self) {
        if let Some(fleet) = &self.fleet {
            fleet.withdraw(std::mem::take(&mut self.ids)).await;
        }
    }
}

impl<R: Runtime> Drop for SharedAnswers<R> {
    fn drop(&mut self) {
        let (Some(fleet), ids) = (self.fleet.clone(), std::mem::take(&mut self.ids)) else {
            return;
        };
        if !ids.is_empty() {
            self.rt
                .spawn(Box::pin(async move { fleet.withdraw(ids).await }));
        }
    }
}

/// Removes challenge answers when an order ends, however it ends.
struct ChallengeGuard<'a> {
    resolver: &'a CertResolver,
    tokens: &'a Http01Tokens,
    owner: ChallengeOwner,
}

impl Drop for ChallengeGuard<'_> {
    fn drop(&mut self) {
        self.resolver.remove_challenges(self.owner);
        self.tokens.remove_owned_by(self.owner);
    }
}

/// The first pause between polls when the CA gives no Retry-After; it doubles up to
/// [`MAX_POLL`]. A CA that validates at once (Pebble, most of the time Let's Encrypt) is seen
/// within milliseconds instead of a quarter of a second per step.
const FIRST_POLL: Duration = Duration::from_millis(10);
/// The longest pause between polls when the CA gives no Retry-After.
const MAX_POLL: Duration = Duration::from_secs(2);

/// How long to wait before polling when the CA's answer asked for `asked`: never sooner than it
/// asked (at least 100 ms). A long wait is bounded by the order timeout, after which the core
/// starts a new order and this one is cancelled.
fn polling_pause(asked: Duration) -> Duration {
    asked.max(Duration::from_millis(100))
}

/// Whether `error` is an error status the CA answered with (not instant-acme's own check).
fn is_ca_answer(error: &instant_acme::Error) -> bool {
    matches!(error, instant_acme::Error::Other(inner) if inner.downcast_ref::<CaAnswered>().is_some())
}

/// Classifies an error response by its problem type, or by its status when it carried no
/// problem document (a 502 or 504 without one comes from a gateway that could not reach the
/// CA: unreachable). 429, and 503 with a Retry-After, ask to come back later: both are rate
/// limits whose wait the core honours.
pub(crate) fn classify_answer(answer: &CaAnswered) -> OrderError {
    let mut error = match &answer.problem {
        Some(problem) => classify_problem(problem, answer.retry_after),
        None => OrderError {
            kind: match answer.status {
                // A gateway in front of the CA saying the CA did not answer it.
                502 | 504 => FailureKind::Unreachable,
                500.. => FailureKind::ServerError,
                _ => FailureKind::Rejected,
            },
            detail: String::new(),
        },
    };
    if answer.status == 429 || (answer.status == 503 && answer.retry_after.is_some()) {
        error.kind = FailureKind::RateLimited {
            retry_after: answer.retry_after,
        };
    }
    error.detail = answer.to_string();
    error
}

/// Maps an ACME problem document to the core's failure classes.
pub(crate) fn classify_problem(problem: &Problem, retry_after: Option<Duration>) -> OrderError {
    let kind_name = problem.r#type.as_deref().unwrap_or("about:blank");
    let short = kind_name
        .strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or(kind_name);
    let kind = match short {
        "rateLimited" => FailureKind::RateLimited { retry_after },
        "serverInternal" => FailureKind::ServerError,
        "badNonce" => FailureKind::ServerError,
        _ if problem.status.is_some_and(|s| s >= 500) => FailureKind::ServerError,
        _ => FailureKind::Rejected,
    };
    let mut detail = format!(
        "{kind_name}: {}",
        problem.detail.as_deref().unwrap_or("(no detail)")
    );
    for sub in &problem.subproblems {
        if let Some(d) = &sub.detail {
            detail.push_str(&format!("; {d}"));
        }
    }
    OrderError { kind, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime of plain threads, for what needs only `spawn`.
    #[derive(Clone)]
    struct Threads;

    impl Runtime for Threads {
        type Tcp = futures_lite::io::Cursor<Vec<u8>>;

        fn connect(
            &self,
            _: String,
            _: u16,
        ) -> crate::runtime::BoxFuture<std::io::Result<Self::Tcp>> {
            Box::pin(async { Err(std::io::Error::other("no network here")) })
        }

        fn sleep(&self, duration: Duration) -> crate::runtime::BoxFuture<()> {
            Box::pin(async move { std::thread::sleep(duration) })
        }

        fn spawn(&self, future: crate::runtime::BoxFuture<()>) {
            std::thread::spawn(move || futures_lite::future::block_on(future));
        }

        fn unblock<T: Send + 'static>(
            &self,
            work: Box<dyn FnOnce() -> T + Send>,
        ) -> crate::runtime::BoxFuture<T> {
            Box::pin(async move { work() })
        }
    }

    /// Remembers what was removed.
    #[derive(Default)]
    struct Removals(std::sync::Mutex<Vec<String>>);

    impl DnsProvider for Arc<Removals> {
        fn publish(&self, _: String, _: String) -> crate::runtime::BoxFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }

        fn remove(
            &self,
            name: String,
            value: String,
        ) -> crate::runtime::BoxFuture<Result<(), String>> {
            let this = self.clone();
            Box::pin(async move {
                this.0.lock().unwrap().push(format!("{name}={value}"));
                Ok(())
            })
        }

        fn check_visible(
            &self,
            _: String,
            _: String,
        ) -> crate::runtime::BoxFuture<Result<Option<String>, String>> {
            Box::pin(async { Ok(None) })
        }
    }

    #[test]
    fn dns_records_are_removed_when_the_order_ends_or_its_task_is_cancelled() {
        let removals = Arc::new(Removals::default());
        let published = |records: &[&str]| PublishedRecords {
            rt: Threads,
            dns: Some(Arc::new(removals.clone()) as Arc<dyn DnsProvider>),
            records: records
                .iter()
                .map(|r| ((*r).to_owned(), "v".to_owned()))
                .collect(),
        };
        // Ended: removed before the order returns, once.
        let mut ended = published(&["_acme-challenge.a.test"]);
        futures_lite::future::block_on(ended.remove());
        drop(ended);
        assert_eq!(*removals.0.lock().unwrap(), ["_acme-challenge.a.test=v"]);
        // Cancelled (the order future dropped mid-way): removed in the background.
        drop(published(&["_acme-challenge.b.test"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while removals.0.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "not removed");
            std::thread::yield_now();
        }
        assert_eq!(removals.0.lock().unwrap()[1], "_acme-challenge.b.test=v");
    }

    #[test]
    fn polling_never_comes_sooner_than_the_ca_asked() {
        let minute = Duration::from_secs(60);
        assert_eq!(polling_pause(minute), minute);
        assert_eq!(
            polling_pause(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(polling_pause(Duration::ZERO), Duration::from_millis(100));
    }

    fn answer(status: u16, problem: Option<(&str, &str)>, retry_after: Option<u64>) -> CaAnswered {
        CaAnswered {
            request: "GET https://ca.test/directory".into(),
            status,
            problem: problem.map(|(kind, detail)| Problem {
                r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
                detail: Some(detail.into()),
                status: Some(status),
                subproblems: Vec::new(),
            }),
            body_excerpt: if problem.is_none() {
                "<html>bad gateway</html>".into()
            } else {
                String::new()
            },
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn error_answers_are_classed_by_type_then_status_with_their_own_retry_after() {
        let limited = classify_answer(&answer(429, Some(("rateLimited", "too many")), Some(120)));
        assert_eq!(
            limited.kind,
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(120))
            }
        );
        assert!(limited.detail.contains("HTTP 429") && limited.detail.contains("too many"));
        let unavailable = classify_answer(&answer(503, None, Some(300)));
        assert_eq!(
            unavailable.kind,
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(300))
            }
        );
        let html = classify_answer(&answer(502, None, None));
        assert_eq!(
            html.kind,
            FailureKind::Unreachable,
            "a gateway without the CA behind it"
        );
        assert_eq!(
            classify_answer(&answer(500, None, None)).kind,
            FailureKind::ServerError
        );
        assert!(
            html.detail
                .contains("GET https://ca.test/directory: HTTP 502: <html>bad gateway"),
            "{}",
            html.detail
        );
        let internal = classify_answer(&answer(500, Some(("serverInternal", "oops")), None));
        assert_eq!(internal.kind, FailureKind::ServerError);
        let refused = classify_answer(&answer(403, Some(("unauthorized", "no")), None));
        assert_eq!(refused.kind, FailureKind::Rejected);
        assert!(
            refused
                .detail
                .contains("urn:ietf:params:acme:error:unauthorized: no")
        );
    }
}
