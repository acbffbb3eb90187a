//! One instance's part in the fleet: ordering under a lease (or taking the certificate another
//! instance stored), publishing challenge answers to every instance, and the shared account.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certloop_core::{Certificate, FailureKind, OrderError, RetryState, UnixTime};

use crate::cache::{decode_cert_file, decode_retry_state, encode_retry_state};
use crate::fleet::challenge::SharedChallenge;
use crate::fleet::client::{
    Acquired, LEASE_POLL, Lease, RedisClient, RedisError, SharedCert, Written, millis, random_u64,
};
use crate::fleet::keys::{Keys, Message};
use crate::fleet::window::SharedWindow;
use crate::runtime::Runtime;

/// How long a published challenge answer lives in Redis (and on the instances that installed
/// it) if its order never withdraws it.
pub(crate) const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// How the error of an order the fleet's backoff held back begins.
const HELD_BACK: &str = "the fleet's latest order failed";
/// How long an order waits for every live instance to install its challenge answer before
/// telling the CA to validate anyway.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// What ordering in a fleet produced.
pub(crate) enum Obtained {
    /// Ordered here, under the lease, and stored for the fleet (or kept here if Redis refused
    /// or failed the write).
    Ordered(Certificate),
    /// Another instance stored a newer certificate than the one served: no order was needed.
    Shared(Certificate, String),
}

/// This instance's membership of the fleet.
pub(crate) struct FleetMember<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) client: Arc<RedisClient<R>>,
    /// The live instances, as the latest heartbeat listed them.
    pub(crate) live: Mutex<Vec<String>>,
    /// Whether this instance is subscribed to the channel: only then does it count itself
    /// live, since a publisher waits for the live instances to install its answers.
    pub(crate) subscribed: AtomicBool,
    next_challenge: AtomicU64,
    /// Orders waiting for another instance's lease, by certificate: closing a sender wakes
    /// its order when the watch hears that the certificate's record changed.
    waiting: Mutex<HashMap<String, Vec<async_channel::Sender<()>>>>,
}

impl<R: Runtime> FleetMember<R> {
    pub(crate) fn new(rt: R, client: Arc<RedisClient<R>>) -> Self {
        Self {
            rt,
            client,
            live: Mutex::new(Vec::new()),
            subscribed: AtomicBool::new(false),
            next_challenge: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes every order waiting for another instance's lease on `id`: its record changed.
    pub(crate) fn record_changed(&self, id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the senders closes the channels.
        waiting.remove(id);
    }

    /// Closes when the watch hears that the record of `id` changed. Taken before looking at
    /// the record, so that a change between the look and the wait is not missed.
    fn on_record_change(&self, id: &str) -> async_channel::Receiver<()> {
        let (sender, receiver) = async_channel::bounded(1);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let senders = waiting.entry(id.to_owned()).or_default();
        // Orders that stopped waiting (a wait that timed out) leave their senders behind.
        senders.retain(|s| s.receiver_count() > 0);
        senders.push(sender);
        receiver
    }

    fn unreachable(&self, e: &RedisError, served_until: Option<UnixTime>) -> OrderError {
        let act_by = served_until.map_or_else(
            || "nothing is served yet".to_owned(),
            |t| format!("the served certificate is valid until {t}: Redis must answer before then"),
        );
        OrderError {
            kind: FailureKind::Unreachable,
            detail: format!(
                "fleet storage unavailable ({e}); no certificate is ordered without a lease, \
                 and {act_by}"
            ),
        }
    }

    /// The certificate another instance stored for `id`, if it expires later than
    /// `served_until` (any valid one if nothing is served). Reads the record's version first,
    /// and its bundle only when it is newer.
    async fn newer_shared(
        &self,
        id: &str,
        served_until: Option<UnixTime>,
    ) -> Result<Option<(Certificate, String)>, RedisError> {
        let later = |not_after: UnixTime| {
            not_after > self.rt.wall_clock() && served_until.is_none_or(|until| not_after > until)
        };
        let version = self
            .client
            .versions(&[id.to_owned()])
            .await?
            .pop()
            .flatten();
        if !version.is_some_and(|v| later(UnixTime::from_millis(v.not_after_ms))) {
            return Ok(None);
        }
        let Some(shared) = self.client.cert(id).await? else {
            return Ok(None);
        };
        Ok(certificate_of(&shared)
            .filter(|cert| later(cert.info.not_after))
            .map(|cert| (cert, shared.issuer)))
    }

    /// Obtains a new certificate for `id`: the one another instance stored if it is newer than
    /// the served one, otherwise `order`'s, ordered under the lease (waiting while another
    /// instance holds it) and stored under its fencing token. `order` gives the certificate
    /// and the directory URL of the CA that issued it.
    pub(crate) async fn obtain<F>(
        &self,
        id: &str,
        served_until: Option<UnixTime>,
        order: impl FnOnce() -> F,
    ) -> Result<Obtained, OrderError>
    where
        F: Future<Output = Result<(Certificate, String), OrderError>>,
    {
        let lease = loop {
            let changed = self.on_record_change(id);
            let unreachable = |e: RedisError| self.unreachable(&e, served_until);
            if let Some((cert, issuer)) = self
                .newer_shared(id, served_until)
                .await
                .map_err(unreachable)?
            {
                return Ok(Obtained::Shared(cert, issuer));
            }
            if let Some(waiting) = self.fleet_backoff(id).await {
                return Err(waiting);
            }
            match self.client.acquire(id).await.map_err(unreachable)? {
                Acquired::Held(lease) => {
                    // Another instance may have stored its certificate, or failed and shared
                    // its backoff, between the look and the lease.
                    let after = match self.newer_shared(id, served_until).await {
                        Ok(Some((cert, issuer))) => Ok(Obtained::Shared(cert, issuer)),
                        Ok(None) => match self.fleet_backoff(id).await {
                            Some(waiting) => Err(waiting),
                            None => break lease,
                        },
                        Err(e) => Err(self.unreachable(&e, served_until)),
                    };
                    self.client.release(&lease).await;
                    return after;
                }
                Acquired::Busy(left) => {
                    tracing::debug!(
                        certificate = id,
                        "another instance holds the lease (for {left:?} at most); waiting for its certificate"
                    );
                    // Its notification, or the end of its lease if that never comes (the
                    // holder died, or the message was lost): then look again.
                    let notified = async {
                        let _ = changed.recv().await;
                    };
                    let lease_ends = self.rt.sleep(left.max(Duration::from_millis(10)));
                    futures_lite::future::or(notified, lease_ends).await;
                }
            }
        };
        tracing::info!(
            certificate = id,
            token = lease.token,
            "took the fleet's lease; ordering"
        );
        let ordered = futures_lite::future::or(order(), self.keep(&lease)).await;
        // A failed order keeps the lease until it expires: by then this instance's core has
        // shared its backoff, which the next holder honours.
        let (cert, issuer) = ordered?;
        let not_after_ms = cert.info.not_after.as_millis();
        let mut written = self
            .client
            .write_cert(&lease, cert.bundle.bytes(), not_after_ms, &issuer)
            .await;
        if written == Ok(Written::EpochLost) {
            // Redis lost its data since the lease was taken: take one in the new epoch.
            tracing::warn!(
                certificate = id,
                "Redis lost the fleet's data during the order; storing the certificate again"
            );
            written = match self.client.acquire(id).await {
                Ok(Acquired::Held(new)) => {
                    let again = self
                        .client
                        .write_cert(&new, cert.bundle.bytes(), not_after_ms, &issuer)
                        .await;
                    self.client.release(&new).await;
                    again
                }
                Ok(Acquired::Busy(_)) => Ok(Written::Refused),
                Err(e) => Err(e),
            };
        }
        match written {
            Ok(Written::Yes) => {
                self.client.release(&lease).await;
                // Whatever backoff an earlier failure shared is over.
                let _ = self.client.set(self.client.keys.retry(id), None).await;
                Ok(Obtained::Ordered(cert))
            }
            Ok(Written::Refused | Written::EpochLost) => {
                tracing::warn!(
                    certificate = id,
                    token = lease.token,
                    "the fleet refused this instance's certificate: its lease was taken over \
                     (a pause longer than the lease?) and a newer one issued"
                );
                // Serve what the fleet serves: the certificate the new holder stored.
                match self.newer_shared(id, served_until).await {
                    Ok(Some((fleets, issuer))) => Ok(Obtained::Shared(fleets, issuer)),
                    _ => Ok(Obtained::Ordered(cert)),
                }
            }
            Err(e) => {
                tracing::warn!(
                    certificate = id,
                    "the certificate is served here but could not be stored for the fleet: {e}"
                );
                Ok(Obtained::Ordered(cert))
            }
        }
    }

    /// The fleet's backoff for `id`: an order that failed on any instance holds every other
    /// back until its retry time, with the same error (a rate limit stays a rate limit).
    async fn fleet_backoff(&self, id: &str) -> Option<OrderError> {
        let bytes = self.client.get(self.client.keys.retry(id)).await.ok()??;
        let state = decode_retry_state(std::str::from_utf8(&bytes).ok()?).ok()?;
        let until = state
            .next_attempt_at
            .filter(|t| *t > self.rt.wall_clock())?;
        let error = state.last_error?;
        Some(OrderError {
            kind: error.kind,
            detail: format!(
                "{HELD_BACK} ({}); no instance orders before {until}",
                error.detail
            ),
        })
    }

    /// Shares this instance's retry state for `id` (cleared after a success). A failure that
    /// was only the fleet's backoff holding this instance back is not shared: it reached no
    /// CA, and sharing it would stretch the backoff of the instance that failed, nesting its
    /// error in every round.
    pub(crate) async fn share_retry(&self, id: &str, state: &RetryState) {
        let key = self.client.keys.retry(id);
        let held_back =
            (state.last_error.as_ref()).is_some_and(|e| e.detail.starts_with(HELD_BACK));
        let shared = match state.failures {
            0 => self.client.set(key, None).await,
            _ if held_back => return,
            _ => {
                self.client
                    .merge_retry(key, encode_retry_state(state))
                    .await
            }
        };
        if let Err(e) = shared {
            tracing::debug!(
                certificate = id,
                "retry state not shared with the fleet: {e}"
            );
        }
    }

    /// The renewal window another instance fetched for the certificate `ari_id` identifies,
    /// with how long until this instance asks again (the CA's retry time, plus up to a tenth
    /// of it at random); `None` if there is none (or Redis is unavailable), and the instance
    /// asks the CA itself.
    pub(crate) async fn shared_window(
        &self,
        id: &str,
        ari_id: &str,
    ) -> Option<(SharedWindow, Duration)> {
        let key = self.client.keys.renewal_window(id);
        let (value, ttl) = self.client.get_expiring(key).await.ok()??;
        let window = SharedWindow::decode(&value).filter(|w| w.ari_id == ari_id)?;
        let ttl = ttl?;
        // Asked again a little after the window expires, at a random point: the instance that
        // fetched it asks the CA first and shares the new one before the others look.
        Some((window, ttl + spread(ttl / 10)))
    }

    /// Shares the renewal window this instance fetched, until the CA wants to be asked again.
    pub(crate) async fn share_window(&self, id: &str, window: &SharedWindow, ask_again: Duration) {
        let key = self.client.keys.renewal_window(id);
        let shared = (self.client)
            .put_expiring(key, window.encode().into_bytes(), ask_again, None)
            .await;
        if let Err(e) = shared {
            tracing::debug!(
                certificate = id,
                "renewal window not shared with the fleet: {e}"
            );
        }
    }

    /// Extends `lease` every third of its length, for as long as it is polled (it never
    /// completes). A lost lease is logged; the order goes on, and its write will be refused
    /// if another instance took over.
    async fn keep<T>(&self, lease: &Lease) -> T {
        let every = self.client.settings().lease / 3;
        loop {
            self.rt.sleep(every).await;
            match self.client.extend(lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(certificate = %lease.id, "the fleet's lease was lost during the order")
                }
                Err(e) => {
                    tracing::warn!(certificate = %lease.id, "cannot extend the fleet's lease: {e}")
                }
            }
        }
    }

    /// Publishes a challenge answer to every instance and waits (a few seconds at most) until
    /// every live one has installed it. Returns its id, for [`FleetMember::withdraw`].
    pub(crate) async fn share_challenge(&self, challenge: &SharedChallenge) -> Option<String> {
        let n = self.next_challenge.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.client.node);
        let keys = &self.client.keys;
        let notify = Message::Challenge {
            node: self.client.node.clone(),
            id: id.clone(),
        };
        if let Err(e) = (self.client)
            .put_expiring(
                keys.challenge(&id),
                challenge.encode(),
                CHALLENGE_TTL,
                Some(notify),
            )
            .await
        {
            tracing::warn!(
                "the challenge answer is not shared with the fleet, only this instance answers it: {e}"
            );
            return None;
        }
        let waited = crate::runtime::timeout(&self.rt, ACK_WAIT, async {
            loop {
                let others: Vec<String> = self.live_others();
                match self.client.members(keys.acks(&id)).await {
                    Ok(acked) if others.iter().all(|n| acked.contains(n)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        return tracing::warn!("cannot read the fleet's acknowledgements: {e}");
                    }
                }
                self.rt.sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_none() {
            tracing::warn!(
                "not every instance of the fleet installed the challenge answer within {ACK_WAIT:?}; validating anyway"
            );
        }
        Some(id)
    }

    fn live_others(&self) -> Vec<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter(|n| **n != self.client.node)
            .cloned()
            .collect()
    }

    /// Removes published challenge answers from Redis and from every instance.
    pub(crate) async fn withdraw(&self, ids: Vec<String>) {
        for id in ids {
            let keys = &self.client.keys;
            let gone = Message::ChallengeGone {
                node: self.client.node.clone(),
                id: id.clone(),
            };
            let doomed = vec![keys.challenge(&id), keys.acks(&id)];
            if let Err(e) = self.client.delete_and_notify(doomed, gone).await {
                tracing::debug!("challenge answer {id} not withdrawn (it expires): {e}");
            }
        }
    }

    /// The account's credentials (JSON) and key (PKCS#8), as the fleet stores them.
    pub(crate) async fn shared_account(
        &self,
        id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, RedisError> {
        let fields = self.client.hash(self.client.keys.account(id)).await?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        Ok(field("credentials").zip(field("pkcs8")))
    }

    /// Waits for the lease on the account `id`: registering it is done once, fleet-wide.
    pub(crate) async fn account_lease(&self, id: &str) -> Result<Lease, RedisError> {
        loop {
            match self.client.acquire(&account_lease_id(id)).await? {
                Acquired::Held(lease) => return Ok(lease),
                Acquired::Busy(left) => {
                    self.rt
                        .sleep(LEASE_POLL.min(left.max(Duration::from_millis(10))))
                        .await;
                }
            }
        }
    }

    /// Stores the account under its lease, then releases the lease.
    pub(crate) async fn store_account(
        &self,
        lease: Lease,
        id: &str,
        credentials: Vec<u8>,
        pkcs8: Vec<u8>,
    ) {
        let key = self.client.keys.account(id);
        let fields = vec![("credentials", credentials), ("pkcs8", pkcs8)];
        match self.client.fenced_write(&lease, key, fields, None).await {
            Ok(Written::Yes) => {}
            Ok(Written::Refused | Written::EpochLost) => tracing::warn!(
                "the fleet refused this instance's ACME account (its lease was taken over)"
            ),
            Err(e) => tracing::warn!("the ACME account could not be stored for the fleet: {e}"),
        }
        self.client.release(&lease).await;
    }
}

/// A random duration up to `max` (whole milliseconds).
fn spread(max: Duration) -> Duration {
    Duration::from_millis(random_u64() % millis(max).max(1))
}

/// The lease id of an account (distinct from any certificate's names).
fn account_lease_id(id: &str) -> String {
    format!("account:{id}")
}

/// The core's view of a shared record, if its bundle reads.
pub(crate) fn certificate_of(shared: &SharedCert) -> Option<Certificate> {
    let file = decode_cert_file(&shared.bundle).ok()?;
    Some(Certificate {
        info: file.info,
        bundle: certloop_core::CertBundle::new(shared.bundle.clone()),
    })
}

/// The fleet's id of a certificate with these names.
pub(crate) fn cert_id(domains: &[String]) -> String {
    Keys::cert_id(domains)
}
