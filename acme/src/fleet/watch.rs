//! What an instance hears from the fleet: the notification channel (new certificates,
//! challenge answers to install), a periodic comparison of every certificate's record in case
//! a notification was lost, and the heartbeat that tells publishers who must acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::StreamExt as _;

use crate::fleet::challenge::SharedChallenge;
use crate::fleet::client::{NODE_TTL, SharedCert};
use crate::fleet::keys::Message;
use crate::fleet::member::{CHALLENGE_TTL, FleetMember};
use crate::http01::Http01Tokens;
use crate::runtime::Runtime;
use crate::tls::{CertResolver, ChallengeOwner, alpn_challenge_cert};

/// Challenge answers installed for other instances are owned from here up, so they never
/// collide with this instance's own order tasks.
const REMOTE_OWNERS: u64 = 1 << 63;
/// The first wait before reaching Redis again.
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reach Redis again.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// Where the watch delivers what it hears.
pub(crate) struct Listeners {
    /// Each configured certificate's fleet id, by its index.
    pub cert_ids: Vec<String>,
    /// A newer record for the certificate at this index.
    pub certs: async_channel::Sender<(usize, SharedCert)>,
    pub resolver: Arc<CertResolver>,
    pub tokens: Arc<Http01Tokens>,
}

/// Whether Redis answers, so an outage is logged once when it begins and once when it ends.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    fn failed(&mut self, problem: &str) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                "fleet storage unavailable: {problem}; serving what this instance has, \
                 renewals wait for Redis"
            );
        }
    }

    fn answered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!("fleet storage reachable again after {:?}", since.elapsed());
        }
    }
}

/// Runs until `stop` closes: the subscription (reopened after any failure) and the checks.
pub(crate) async fn watch<R: Runtime>(
    fleet: Arc<FleetMember<R>>,
    listeners: Listeners,
    stop: async_channel::Receiver<()>,
) {
    let heartbeat = heartbeat(fleet.clone());
    let listen = listen(fleet, listeners);
    let stopped = async {
        let _ = stop.recv().await;
    };
    futures_lite::future::or(stopped, futures_lite::future::or(heartbeat, listen)).await;
}

/// Records this instance as alive every third of [`NODE_TTL`] and keeps the list of live ones.
async fn heartbeat<R: Runtime>(fleet: Arc<FleetMember<R>>) {
    loop {
        if fleet.subscribed.load(Ordering::Relaxed)
            && let Ok(live) = fleet.client.heartbeat().await
        {
            *fleet.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
        }
        fleet.rt.sleep(NODE_TTL / 3).await;
    }
}

async fn listen<R: Runtime>(fleet: Arc<FleetMember<R>>, listeners: Listeners) {
    let mut state = WatchState {
        known: vec![None; listeners.cert_ids.len()],
        index: (listeners.cert_ids.iter().enumerate())
            .map(|(i, id)| (id.clone(), i))
            .collect(),
        remote: HashMap::new(),
        next_owner: REMOTE_OWNERS,
        compared_at: None,
        skipped: 0,
    };
    let mut outage = Outage::default();
    let mut wait = FIRST_RECONNECT_WAIT;
    let interval = fleet.client.settings().check_interval;
    loop {
        let pubsub = match fleet.client.subscribe().await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                outage.failed(&e);
                fleet.rt.sleep(wait).await;
                wait = (wait * 2).min(MAX_RECONNECT_WAIT);
                continue;
            }
        };
        let subscribed_at = Instant::now();
        fleet.subscribed.store(true, Ordering::Relaxed);
        state.compared_at = None;
        let mut messages = pubsub.into_on_message();
        // Whatever changed while not subscribed.
        match state.check(&fleet, &listeners).await {
            Ok(()) => outage.answered(),
            Err(e) => outage.failed(&e),
        }
        let mut next_check = Instant::now() + interval;
        loop {
            // A deadline, not a fresh timer per message: steady traffic cannot starve the check.
            let tick = fleet
                .rt
                .sleep(next_check.saturating_duration_since(Instant::now()));
            let next = futures_lite::future::or(async { Some(messages.next().await) }, async {
                tick.await;
                None
            })
            .await;
            match next {
                Some(Some(message)) => {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(message) = Message::decode(&text) {
                        state.heard(&fleet, &listeners, message).await;
                    }
                }
                Some(None) => {
                    fleet.subscribed.store(false, Ordering::Relaxed);
                    (fleet.client.health).record(false, fleet.rt.wall_clock());
                    outage.failed("the subscription to the fleet's channel ended");
                    break;
                }
                None => {
                    next_check = Instant::now() + interval;
                    match state.check(&fleet, &listeners).await {
                        Ok(()) => outage.answered(),
                        Err(e) => outage.failed(&e),
                    }
                }
            }
        }
        // A subscription that ends at once (a proxy that drops it) is not retried in a loop.
        if subscribed_at.elapsed() > MAX_RECONNECT_WAIT {
            wait = FIRST_RECONNECT_WAIT;
        }
        fleet.rt.sleep(wait).await;
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}

struct WatchState {
    /// The (epoch, token) of each certificate's record last seen.
    known: Vec<Option<(String, i64)>>,
    index: HashMap<String, usize>,
    /// Challenge answers installed for other instances, by id.
    remote: HashMap<String, ChallengeOwner>,
    next_owner: u64,
    /// The dataset's epoch and write count at the last complete comparison (reset on each
    /// new subscription, so the first check after one always compares).
    compared_at: Option<(Option<String>, Option<i64>)>,
    /// Checks skipped since the last comparison: every [`COMPARE_AT_LEAST_EVERY`]th compares
    /// anyway, in case a writer did not count its write (an instance of an older version).
    skipped: u32,
}

/// A check compares every record at least this often (5 minutes at the default interval).
const COMPARE_AT_LEAST_EVERY: u32 = 30;

impl WatchState {
    /// Compares every certificate's record version with the one last seen, and reads the
    /// records (with their bundles) of those that changed; skipped while the fleet's write
    /// count has not moved since the last comparison (one command instead of one per
    /// certificate). This instance's own writes are installed already.
    async fn check<R: Runtime>(
        &mut self,
        fleet: &FleetMember<R>,
        listeners: &Listeners,
    ) -> Result<(), String> {
        let generation = fleet.client.generation().await?;
        if self.compared_at.as_ref() == Some(&generation) && self.skipped < COMPARE_AT_LEAST_EVERY {
            self.skipped += 1;
            return Ok(());
        }
        self.compare(fleet, listeners).await?;
        (self.compared_at, self.skipped) = (Some(generation), 0);
        Ok(())
    }

    async fn compare<R: Runtime>(
        &mut self,
        fleet: &FleetMember<R>,
        listeners: &Listeners,
    ) -> Result<(), String> {
        let versions = fleet.client.versions(&listeners.cert_ids).await?;
        let mut changed = Vec::new();
        for (at, version) in versions.into_iter().enumerate() {
            let Some(version) = version else { continue };
            let seen = Some((version.epoch.clone(), version.token));
            if self.known[at] != seen {
                if version.writer == fleet.client.node {
                    self.known[at] = seen;
                } else {
                    changed.push(at);
                }
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = changed
            .iter()
            .map(|&at| listeners.cert_ids[at].clone())
            .collect();
        for id in &ids {
            fleet.record_changed(id);
        }
        for (at, record) in changed.into_iter().zip(fleet.client.certs(&ids).await?) {
            if let Some(record) = record {
                self.deliver(listeners, at, record).await;
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, listeners: &Listeners, at: usize, record: SharedCert) {
        let version = Some((record.epoch.clone(), record.token));
        if self.known[at] != version {
            self.known[at] = version;
            let _ = listeners.certs.send((at, record)).await;
        }
    }

    async fn heard<R: Runtime>(
        &mut self,
        fleet: &FleetMember<R>,
        listeners: &Listeners,
        message: Message,
    ) {
        match message {
            Message::Cert { node, id } => {
                let Some(&at) = self.index.get(&id) else {
                    return;
                };
                if node == fleet.client.node {
                    return; // this instance's own write: installed already
                }
                fleet.record_changed(&id);
                match fleet.client.cert(&id).await {
                    Ok(Some(record)) => self.deliver(listeners, at, record).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!("cannot read the certificate another instance stored: {e}")
                    }
                }
            }
            Message::Challenge { node, id } => {
                if node == fleet.client.node {
                    return;
                }
                if let Err(e) = self.install_challenge(fleet, listeners, &id).await {
                    tracing::warn!("cannot answer another instance's challenge {id}: {e}");
                }
            }
            Message::ChallengeGone { id, .. } => {
                if let Some(owner) = self.remote.remove(&id) {
                    listeners.resolver.remove_challenges(owner);
                    listeners.tokens.remove_owned_by(owner);
                }
            }
        }
    }

    /// Installs another instance's challenge answer here, then acknowledges it. It is removed
    /// when withdrawn, or after [`CHALLENGE_TTL`] if the withdrawal is lost.
    async fn install_challenge<R: Runtime>(
        &mut self,
        fleet: &FleetMember<R>,
        listeners: &Listeners,
        id: &str,
    ) -> Result<(), String> {
        let keys = &fleet.client.keys;
        let Some(bytes) = fleet.client.get(keys.challenge(id)).await? else {
            return Ok(()); // withdrawn already
        };
        let owner = ChallengeOwner(self.next_owner);
        self.next_owner += 1;
        match SharedChallenge::decode(&bytes)? {
            SharedChallenge::Http01 {
                token,
                key_authorization,
            } => listeners
                .tokens
                .insert_owned(owner, &token, &key_authorization),
            SharedChallenge::TlsAlpn01 { name, sni, digest } => {
                let cert = alpn_challenge_cert(&name, &digest)?;
                listeners.resolver.add_challenge(owner, &sni, cert);
            }
        }
        self.remote.insert(id.to_owned(), owner);
        let (resolver, tokens, rt) = (
            listeners.resolver.clone(),
            listeners.tokens.clone(),
            fleet.rt.clone(),
        );
        fleet.rt.spawn(Box::pin(async move {
            rt.sleep(CHALLENGE_TTL).await;
            resolver.remove_challenges(owner);
            tokens.remove_owned_by(owner);
        }));
        fleet.client.acknowledge(keys.acks(id), CHALLENGE_TTL).await
    }
}
