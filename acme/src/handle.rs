//! The handle an embedder keeps: the TLS settings and resolver to serve with, HTTP-01 answers,
//! lifecycle events, each certificate's status, and the startup verdict.

use std::fmt;
use std::sync::{Arc, Mutex};

use certloop_core::UnixTime;
use rustls::ServerConfig;

use crate::account::{AccountInfo, RevocationReason};
use crate::config::StartError;
use crate::fleet::{FleetStorageStatus, StorageHealth};
use crate::http01::Http01Tokens;
use crate::status::{AcmeOperation, CertStatus, DurationHistogram, RequestDurations};
use crate::tls::{CertResolver, TlsAlpn01, server_config};

/// How many past lifecycle events a new subscriber receives.
const HISTORY: usize = 32;

/// What happened to a managed certificate, for embedders.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleEvent {
    /// A cached certificate is served.
    Loaded {
        /// Its names.
        domains: Vec<String>,
        /// End of validity.
        not_after: UnixTime,
    },
    /// The served certificate is due for renewal (per policy or the CA's ARI window): a
    /// renewal has started.
    Expiring {
        /// Its names.
        domains: Vec<String>,
        /// End of validity of the served certificate.
        not_after: UnixTime,
    },
    /// A first certificate was issued and is served.
    Issued {
        /// Its names.
        domains: Vec<String>,
        /// End of validity.
        not_after: UnixTime,
    },
    /// A renewed certificate replaced the previous one.
    Renewed {
        /// Its names.
        domains: Vec<String>,
        /// End of validity.
        not_after: UnixTime,
    },
    /// An order failed; the current certificate (if any) is still served.
    RenewalFailed {
        /// Its names.
        domains: Vec<String>,
        /// Why, with the CA's problem type.
        error: String,
        /// When the next attempt happens.
        retry_at: UnixTime,
        /// `true` if the served certificate has expired.
        expired: bool,
    },
    /// The served certificate expired (it is still served while renewal is retried).
    Expired {
        /// Its names.
        domains: Vec<String>,
        /// End of validity.
        not_after: UnixTime,
    },
}

/// The events of one [`AcmeHandle::subscribe`], in order. Dropping it unsubscribes.
#[derive(Debug)]
pub struct LifecycleEvents(async_channel::Receiver<LifecycleEvent>);

impl LifecycleEvents {
    /// The next event; `None` once certificate management has ended (stopped, failed to start,
    /// or every handle dropped) and the events before that were read.
    pub async fn next(&self) -> Option<LifecycleEvent> {
        self.0.recv().await.ok()
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&self) -> Option<LifecycleEvent> {
        self.0.try_recv().ok()
    }
}

pub(crate) struct Shared {
    pub(crate) resolver: Arc<CertResolver>,
    pub(crate) tokens: Arc<Http01Tokens>,
    pub(crate) subscribers: Mutex<Vec<async_channel::Sender<LifecycleEvent>>>,
    /// The latest events, replayed to new subscribers (so none is missed between `launch`
    /// and `subscribe`).
    pub(crate) history: Mutex<std::collections::VecDeque<LifecycleEvent>>,
    pub(crate) status: Mutex<Vec<CertStatus>>,
    pub(crate) durations: Arc<RequestDurations>,
    pub(crate) directory_url: String,
    /// Set by the driver once every certificate is served or one cannot be had; the channel
    /// closes right after, waking every waiter.
    pub(crate) outcome: Mutex<Option<Result<(), StartError>>>,
    pub(crate) outcome_set: async_channel::Receiver<()>,
    /// Set when the driver has ended: no event follows, and subscriptions end.
    pub(crate) ended: std::sync::atomic::AtomicBool,
    /// In fleet mode, whether Redis answers.
    pub(crate) fleet_storage: Option<Arc<StorageHealth>>,
}

impl Shared {
    /// The driver has ended: every subscription ends after the events it already has.
    pub(crate) fn end_subscriptions(&self) {
        let _history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Records `event` and sends it to every subscriber. The history lock is held throughout
    /// (and taken first by `subscribe` too), so a subscriber gets each event exactly once.
    pub(crate) fn publish(&self, event: LifecycleEvent) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.try_send(event.clone()).is_ok() || !s.is_closed());
    }
}

/// A running certificate manager. Cloning is cheap. Keep one for as long as you serve: when
/// every clone is dropped, the driver stops and with it renewals (served certificates stay in
/// any `ServerConfig` already built), and it logs a warning saying so. To stop on purpose,
/// call [`AcmeHandle::stop`].
#[derive(Clone)]
#[must_use = "dropping every AcmeHandle stops certificate renewal"]
pub struct AcmeHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: Arc<async_channel::Sender<()>>,
    pub(crate) commands: Arc<async_channel::Sender<Command>>,
}

/// What an operator asks of the running driver, each with where the answer goes.
pub(crate) enum Command {
    Account(async_channel::Sender<Result<AccountInfo, String>>),
    RolloverAccountKey(async_channel::Sender<Result<AccountInfo, String>>),
    Revoke(
        RevocationReason,
        async_channel::Sender<Result<usize, String>>,
    ),
}

impl fmt::Debug for AcmeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeHandle")
            .field("directory", &self.shared.directory_url)
            .finish_non_exhaustive()
    }
}

impl AcmeHandle {
    /// The resolver to put in a rustls `ServerConfig`: current certificates by SNI, and the
    /// TLS-ALPN-01 answers.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.shared.resolver.clone()
    }

    /// A ready `ServerConfig`: TLS 1.2/1.3, AEAD suites, ALPN `h2`, `http/1.1`, `acme-tls/1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::new(server_config(
            self.shared.resolver.clone(),
            TlsAlpn01::Answer,
        ))
    }

    /// The pending HTTP-01 tokens (for a port-80 responder of your own).
    pub fn http01_tokens(&self) -> Arc<Http01Tokens> {
        self.shared.tokens.clone()
    }

    /// The HTTP-01 answer for `token`, if one is pending.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        self.shared.tokens.answer(token)
    }

    /// Lifecycle events: the latest few that already happened, then every new one.
    pub fn subscribe(&self) -> LifecycleEvents {
        let (tx, rx) = async_channel::unbounded();
        let history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for event in history.iter() {
            let _ = tx.try_send(event.clone());
        }
        if self.shared.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return LifecycleEvents(rx); // the sender drops here: the history, then the end
        }
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        LifecycleEvents(rx)
    }

    /// Each certificate, in configuration order: what is served (validity, issuer, serial, key
    /// type), when it renews, the CA's window, the failure streak, the next order and the
    /// orders so far. Cheap: a copy of what the driver keeps up to date as it goes.
    pub fn status(&self) -> Vec<CertStatus> {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// In fleet mode, whether this instance reaches the fleet's Redis and since when (`None`
    /// without a fleet, and before the first command). While it does not, no certificate is
    /// ordered, and each served certificate's `not_after` is when Redis must be back.
    pub fn fleet_storage(&self) -> Option<FleetStorageStatus> {
        (self.shared.fleet_storage.as_ref()).and_then(|health| health.get())
    }

    /// How long this directory's requests to the CA took since launch, by operation.
    pub fn acme_request_durations(&self) -> Vec<(AcmeOperation, DurationHistogram)> {
        self.shared.durations.snapshot()
    }

    /// Stops certificate management on purpose (for example at shutdown): no more renewals,
    /// and no warning about dropped handles. Served certificates stay in any `ServerConfig`
    /// already built. Other clones of this handle stop too. It returns at once; the driver
    /// then finishes its pending retry-state writes (5 s at most) and releases the cache
    /// directory's lock.
    pub fn stop(self) {
        let _ = self.stop.try_send(());
    }

    /// The ACME account of the preferred CA, as stored in the cache directory (an error until
    /// the first order registered one).
    pub async fn account(&self) -> Result<AccountInfo, String> {
        self.ask(Command::Account).await
    }

    /// Replaces the account's key with a new one (RFC 8555 key change), keeping the old
    /// credentials beside the new ones until a request signed with the new key succeeded.
    pub async fn rollover_account_key(&self) -> Result<AccountInfo, String> {
        self.ask(Command::RolloverAccountKey).await
    }

    /// Revokes every served certificate of this handle with the CA that issued it, then
    /// orders a replacement at once (the revoked one is served until it is installed). The
    /// answer is how many were revoked; the first refusal ends it with an error.
    pub async fn revoke(&self, reason: RevocationReason) -> Result<usize, String> {
        self.ask(|reply| Command::Revoke(reason, reply)).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(async_channel::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let (reply, answer) = async_channel::bounded(1);
        let stopped = || "certificate management has stopped".to_owned();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| stopped())?;
        answer.recv().await.map_err(|_| stopped())?
    }

    /// The directory URL in use.
    pub fn directory_url(&self) -> &str {
        &self.shared.directory_url
    }

    /// Waits until every certificate is served (cached or issued), or one cannot be had: then
    /// the error names the domains, the directory and what went wrong, and the server must not
    /// start. Serve TLS with [`AcmeHandle::server_config`] meanwhile, so TLS-ALPN-01 validation
    /// can reach it.
    pub async fn ready(&self) -> Result<(), StartError> {
        let _ = self.shared.outcome_set.recv().await;
        let outcome = self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        outcome.unwrap_or(Err(StartError::Stopped))
    }
}
