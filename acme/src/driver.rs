//! The lifecycle driver: one loop per cache directory that feeds a `CertFleet` with IO results
//! and the time, and carries out its actions. It translates and never decides. Generic over the
//! runtime seam, so the tokio and smol crates share it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certloop_core::{
    Action, CachedCert, CertFleet, CertId, Event, FailureKind, Level, Notice, RenewalInfo,
    RetryState, Serving, UnixTime,
};
use instant_acme::CertificateIdentifier;

use crate::cache::decode_cert_file;
use crate::cache_fs::{CacheFs, StdFs};
use crate::config::{AcmeConfig, StartError};
use crate::dns01::{DnsProvider, Rfc2136};
use crate::fleet::{
    FleetMember, Listeners, Obtained, SharedCert, SharedWindow, cert_id, certificate_of,
    client_for, watch,
};
use crate::handle::{AcmeHandle, Command, LifecycleEvent, Shared};
use crate::http_client::{HttpsTransport, RetryAfterSlot, Transport, request_timeout};
use crate::http01::Http01Tokens;
use crate::order::AcmeContext;
use crate::prepared::{PreparedCert, prepare};
use crate::profiles::check_profile;
use crate::runtime::{Runtime, timeout};
use crate::status::{AcmeOperation, CertStatus, RequestDurations};
use crate::store::DirStore;
use crate::tls::{CertResolver, ChallengeOwner};

/// Watches the driver from outside: the simulator checks its invariants with it after every
/// step. Calls are made on the driver's own task and must return at once.
pub trait Observer: Send + Sync + 'static {
    /// The driver is about to carry out `action` for the certificate at `cert` (configuration
    /// order). Actions without IO (installing, logging) are done before the next step.
    fn action(&self, cert: usize, action: &Action);

    /// An order task for `cert`, publishing challenge answers as `owner`, began (`running`)
    /// or ended, however it ended: answered, failed or cancelled (a task cancelled while it
    /// waited for its predecessor reports only its end).
    fn order_task(&self, cert: usize, owner: ChallengeOwner, running: bool);
}

/// What a simulation replaces under [`launch_with`]: how requests reach the CA, the disk, and
/// an observer.
pub struct Seams {
    /// The CA; `None` for HTTPS over the runtime's TCP.
    pub transport: Option<Arc<dyn Transport>>,
    /// The disk under the cache directory.
    pub fs: Arc<dyn CacheFs>,
    /// Told about every action and order task.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            transport: None,
            fs: Arc::new(StdFs),
            observer: None,
        }
    }
}

/// Per-certificate facts the driver needs to translate actions.
struct Managed {
    id: CertId,
    domains: Vec<String>,
    ready: bool,
    ari_supported: bool,
    /// Dropping it cancels the certificate's order task: there is at most one.
    order_task: Option<async_channel::Sender<()>>,
    /// Closed when the latest order task has ended (its challenge answers removed): the next
    /// one waits for it, so two never overlap.
    order_ended: Option<async_channel::Receiver<()>>,
    /// The cached certificate as loading prepared it (and the issuer whose file held it), for
    /// the install that follows.
    prepared: Option<(PreparedCert, usize)>,
    /// The issuer the latest order went to.
    ordered_from: usize,
    /// The issuer of the served certificate (0 until one is served).
    issued_by: usize,
}

/// Ends an order task's life: tells the observer, then lets the next task for the certificate
/// begin. Dropped after the order's own future, so its challenge answers are gone by then.
struct OrderTaskLife {
    observer: Option<Arc<dyn Observer>>,
    cert: usize,
    owner: ChallengeOwner,
    _ended: async_channel::Sender<()>,
}

impl Drop for OrderTaskLife {
    fn drop(&mut self) {
        if let Some(observer) = &self.observer {
            observer.order_task(self.cert, self.owner, false);
        }
    }
}

enum Wake {
    Event(CertId, Event),
    /// Loading prepared the cached certificate (from this issuer's file) to serve; its
    /// `CacheLoaded` follows.
    Prepared(CertId, PreparedCert, usize),
    /// This issuer answered with a renewal window for the certificate it issued.
    AriSupported(CertId, usize),
    /// An operator's request through the handle.
    Command(Command),
    Timer,
    /// [`AcmeHandle::stop`], or the runtime winding down: on purpose.
    Stop,
    /// Every handle was dropped without `stop`: renewals end, which is likely a mistake.
    HandlesDropped,
}

/// Validates the configuration, opens (and locks) the cache directory and starts the driver.
/// The handle is usable at once: its resolver answers TLS-ALPN-01 challenges while the first
/// certificates are ordered. Await [`AcmeHandle::ready`] before accepting traffic.
pub async fn launch<R: Runtime>(rt: R, config: AcmeConfig) -> Result<AcmeHandle, StartError> {
    launch_with(rt, config, Seams::default()).await
}

/// [`launch`] with some of its surroundings replaced (the simulator's CA, disk and observer).
pub async fn launch_with<R: Runtime>(
    rt: R,
    config: AcmeConfig,
    seams: Seams,
) -> Result<AcmeHandle, StartError> {
    let resolved = config.resolve()?;
    let policy = Arc::new(config.policy.clone());
    let invalid_policy = |e: certloop_core::ConfigError| StartError::Config {
        field: "policy",
        problem: e.to_string(),
    };
    let mut fleet = CertFleet::new(policy.clone()).map_err(invalid_policy)?;
    let cert_configs = resolved.certs;
    let transport = match seams.transport {
        Some(transport) => transport,
        None => Arc::new(
            HttpsTransport::new(rt.clone(), &resolved.extra_roots).map_err(|problem| {
                StartError::Config {
                    field: "extra_roots_pem",
                    problem,
                }
            })?,
        ),
    };
    let (dir, fs) = (config.cache_dir.clone(), seams.fs);
    let issuers = config.issuers();
    let urls: Vec<String> = (issuers.iter())
        .map(|i| i.directory_url().to_owned())
        .collect();
    // The names exactly as the orders will use them (their records are keyed by them).
    let certs: Vec<Vec<String>> = (cert_configs.iter())
        .map(|c| c.domains().to_vec())
        .collect();
    let kept_urls = urls.clone();
    let store = rt
        .unblock(Box::new(move || {
            let store = DirStore::open_with(dir, fs)?;
            store.remove_orphaned_pending_orders(&certs, &kept_urls);
            Ok(store)
        }))
        .await
        .map_err(StartError::Store)?;
    let store = Arc::new(store);
    let redis_fleet = match &config.fleet {
        Some(settings) => {
            let client = client_for(rt.clone(), settings.clone(), &resolved.extra_roots).map_err(
                |problem| StartError::Config {
                    field: "fleet_redis",
                    problem,
                },
            )?;
            Some(Arc::new(FleetMember::new(rt.clone(), client)))
        }
        None => None,
    };
    let (outcome_tx, outcome_set) = async_channel::bounded::<()>(1);
    let shared = Arc::new(Shared {
        resolver: Arc::new(CertResolver::for_certificates(&config.certs)),
        tokens: Arc::new(Http01Tokens::default()),
        subscribers: Mutex::new(Vec::new()),
        history: Mutex::new(std::collections::VecDeque::new()),
        status: Mutex::new(
            (config.certs.iter())
                .map(|d| CertStatus::new(d.clone()))
                .collect(),
        ),
        durations: Arc::new(RequestDurations::default()),
        directory_url: urls[0].clone(),
        outcome: Mutex::new(None),
        outcome_set,
        ended: std::sync::atomic::AtomicBool::new(false),
        fleet_storage: (redis_fleet.as_ref()).map(|fleet| fleet.client.health.clone()),
    });
    let retry_after = RetryAfterSlot::default();
    let dns: Option<Arc<dyn DnsProvider>> = match (config.dns01.clone(), resolved.dns_key) {
        (Some(settings), Some(key)) => {
            Some(Arc::new(Arc::new(Rfc2136::new(rt.clone(), settings, key))))
        }
        _ => None,
    };
    let dns_propagation = (config.dns01.as_ref()).map_or(Duration::ZERO, |s| s.propagation_timeout);
    // One context per issuer: its own directory, account, EAB and profile; the rest shared.
    let contexts: Vec<Arc<AcmeContext<R>>> = (issuers.iter().zip(resolved.eabs))
        .map(|(issuer, eab)| {
            Arc::new(AcmeContext {
                rt: rt.clone(),
                directory_url: issuer.directory_url().to_owned(),
                contacts: issuer.contacts.clone(),
                transport: transport.clone(),
                eab,
                profile: issuer.profile.clone(),
                dns: dns.clone(),
                dns_propagation,
                key_type: config.key_type,
                store: store.clone(),
                resolver: shared.resolver.clone(),
                tokens: shared.tokens.clone(),
                challenge: config.challenge,
                retry_after: retry_after.clone(),
                request_timeout: request_timeout(policy.startup_timeout),
                account: async_lock::Mutex::new(None),
                durations: shared.durations.clone(),
                fleet: redis_fleet.clone(),
            })
        })
        .collect();
    for (i, context) in contexts.iter().enumerate() {
        let Some(profile) = &context.profile else {
            continue;
        };
        match check_profile(&context.http_client(), &context.directory_url, profile).await {
            Ok(None) => {}
            Ok(Some(problem)) => {
                return Err(StartError::Config {
                    field: if i == 0 { "profile" } else { "fallback_issuer" },
                    problem,
                });
            }
            // Orders check again once the CA answers.
            Err(e) => tracing::warn!(
                profile = %profile,
                "cannot check that the CA offers the ACME profile now: {e}"
            ),
        }
    }
    let now = rt.wall_clock();
    let managed: Vec<Managed> = cert_configs
        .iter()
        .zip(&config.certs)
        .map(|(cert, domains)| Managed {
            id: fleet.insert(now, cert),
            domains: domains.clone(),
            ready: false,
            ari_supported: false,
            order_task: None,
            order_ended: None,
            prepared: None,
            ordered_from: 0,
            issued_by: 0,
        })
        .collect();
    let (events_tx, events_rx) = async_channel::unbounded();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    // Closed when the driver ends, which ends the fleet's watch.
    let (driver_alive, driver_ended) = async_channel::bounded::<()>(1);
    if let Some(redis) = &redis_fleet {
        let ids: Vec<CertId> = managed.iter().map(|m| m.id).collect();
        listen_to_fleet(
            &rt,
            redis,
            &config,
            &shared,
            ids,
            &urls,
            events_tx.clone(),
            driver_ended,
        );
    }
    let (commands_tx, commands_rx) = async_channel::unbounded::<Command>();

    let handle = AcmeHandle {
        shared: shared.clone(),
        stop: Arc::new(stop_tx),
        commands: Arc::new(commands_tx),
    };
    let driver = Driver {
        rt: rt.clone(),
        shared,
        contexts,
        urls,
        managed,
        events_tx,
        started: Some(outcome_tx),
        retry_writes: Vec::new(),
        observer: seams.observer,
        next_owner: 0,
        retry_now: config.retry_now,
        ready: 0,
        loads: Vec::new(),
        fleet: redis_fleet,
        order_slots: Arc::new(async_lock::Semaphore::new(config.max_concurrent_orders)),
        _alive: driver_alive,
    };
    let ending = driver.shared.clone();
    rt.spawn(Box::pin(async move {
        driver.run(fleet, events_rx, stop_rx, commands_rx).await;
        ending.end_subscriptions();
    }));
    Ok(handle)
}

/// [`AcmeConfig::retry_now`]: the persisted failure streak is kept (it is still reported), but
/// its wait no longer gates the first order, unless the CA imposed it (a rate limit): ordering
/// before then would only be refused again and lengthen the streak.
fn lift_backoff(retry: &mut Option<RetryState>) {
    let Some(state) = retry else { return };
    let rate_limited = (state.last_error.as_ref())
        .is_some_and(|e| matches!(e.kind, FailureKind::RateLimited { .. }));
    if rate_limited {
        if let Some(until) = state.next_attempt_at {
            tracing::warn!(
                "retry now: the CA rate-limited the last order; its wait, until {until}, is kept"
            );
        }
        return;
    }
    if let Some(until) = state.next_attempt_at.take() {
        tracing::info!(
            "ordering at once as asked (retry now): the backoff after {} failed order(s), \
             until {until}, is lifted for this start",
            state.failures
        );
    }
}

/// The longest the driver sleeps without reading the wall clock again. Runtime timers follow
/// the monotonic clock, which stands still while the machine is suspended and does not follow
/// an NTP step: sleeping in slices bounds how late a renewal can be after either.
const MAX_SLEEP_SLICE: Duration = Duration::from_secs(60);

/// How long to sleep before looking at the fleet again: until its next wake, at most
/// [`MAX_SLEEP_SLICE`].
fn sleep_slice(next_wake: Option<UnixTime>, now: UnixTime) -> Duration {
    next_wake.map_or(MAX_SLEEP_SLICE, |at| {
        at.saturating_since(now).min(MAX_SLEEP_SLICE)
    })
}

struct Driver<R: Runtime> {
    rt: R,
    shared: Arc<Shared>,
    /// One per issuer, in order of preference.
    contexts: Vec<Arc<AcmeContext<R>>>,
    /// Each issuer's directory URL, in the same order.
    urls: Vec<String>,
    managed: Vec<Managed>,
    events_tx: async_channel::Sender<Wake>,
    /// Dropped (closing the channel) once the startup outcome is recorded.
    started: Option<async_channel::Sender<()>>,
    /// One per retry-state write still running; closed when it is done.
    retry_writes: Vec<async_channel::Receiver<()>>,
    observer: Option<Arc<dyn Observer>>,
    /// The next order task's [`ChallengeOwner`].
    next_owner: u64,
    /// [`AcmeConfig::retry_now`]: persisted backoffs do not gate this start.
    retry_now: bool,
    /// How many certificates are ready (`Action::Ready` seen).
    ready: usize,
    /// Cache loads asked for and not yet dispatched.
    loads: Vec<(CertId, Vec<String>)>,
    /// The fleet, in fleet mode.
    fleet: Option<Arc<FleetMember<R>>>,
    /// One permit per order allowed to talk to the CA at once.
    order_slots: Arc<async_lock::Semaphore>,
    /// Dropped with the driver: the fleet's watch ends.
    _alive: async_channel::Sender<()>,
}

/// How many cache files one blocking task reads.
const LOAD_BATCH: usize = 64;

impl<R: Runtime> Driver<R> {
    async fn run(
        mut self,
        mut fleet: CertFleet,
        events: async_channel::Receiver<Wake>,
        stop: async_channel::Receiver<()>,
        commands: async_channel::Receiver<Command>,
    ) {
        // The certificates whose status may have changed since it was last published.
        let mut touched: Vec<CertId> = self.managed.iter().map(|m| m.id).collect();
        loop {
            while let Some((id, action)) = fleet.poll_action() {
                touched.push(id);
                if let Err(failure) = self.execute(id, action) {
                    self.publish_status(&fleet, &mut touched);
                    self.finish_retry_writes().await;
                    return self.record_outcome(Err(failure));
                }
            }
            self.publish_status(&fleet, &mut touched);
            self.dispatch_loads();
            if self.started.is_some() && self.ready == self.managed.len() {
                self.record_outcome(Ok(()));
            }
            let timer = self
                .rt
                .sleep(sleep_slice(fleet.poll_timeout(), self.rt.wall_clock()));
            let wake = futures_lite::future::or(
                futures_lite::future::or(
                    async { events.recv().await.unwrap_or(Wake::Stop) },
                    async {
                        match stop.recv().await {
                            Ok(()) => Wake::Stop,
                            Err(_) => Wake::HandlesDropped,
                        }
                    },
                ),
                futures_lite::future::or(
                    async {
                        match commands.recv().await {
                            Ok(command) => Wake::Command(command),
                            // Every handle is gone: the stop channel says so.
                            Err(_) => std::future::pending().await,
                        }
                    },
                    async {
                        timer.await;
                        Wake::Timer
                    },
                ),
            )
            .await;
            match wake {
                Wake::Event(id, event) => {
                    touched.push(id);
                    fleet.handle(self.rt.wall_clock(), id, event);
                }
                Wake::Prepared(id, prepared, issuer) => {
                    if let Some(at) = self.index_of(id) {
                        self.managed[at].prepared = Some((prepared, issuer));
                    }
                }
                Wake::AriSupported(id, issuer) => {
                    // Only if the served certificate is still that CA's.
                    if let Some(m) = self.index_of(id).map(|at| &mut self.managed[at])
                        && m.issued_by == issuer
                    {
                        m.ari_supported = true;
                    }
                }
                // The timer may fire early or late: the fleet compares the clock itself.
                Wake::Timer => fleet.handle_timeout(self.rt.wall_clock()),
                Wake::Command(command) => self.carry_out(command),
                Wake::Stop => return self.finish_retry_writes().await,
                Wake::HandlesDropped => {
                    let names: Vec<String> =
                        self.managed.iter().map(|m| m.domains.join(",")).collect();
                    tracing::warn!(
                        certificates = %names.join(" "),
                        "every AcmeHandle was dropped: these certificates are no longer renewed \
                         (keep a handle for as long as you serve, or call AcmeHandle::stop to \
                         stop on purpose)"
                    );
                    return self.finish_retry_writes().await;
                }
            }
        }
    }

    /// Reads the cache files the fleet asked for, [`LOAD_BATCH`] per blocking task (one
    /// thread wake-up per batch rather than per certificate), and feeds each back: the prepared
    /// certificate first, then `CacheLoaded`.
    fn dispatch_loads(&mut self) {
        let loads = std::mem::take(&mut self.loads);
        for batch in loads.chunks(LOAD_BATCH) {
            let (store, urls) = (self.contexts[0].store.clone(), self.urls.clone());
            let batch = batch.to_vec();
            let names = batch.clone();
            let work = self.rt.unblock(Box::new(move || {
                (names.into_iter())
                    .map(|(id, domains)| (id, store.load_prepared_cert_from(&domains, &urls)))
                    .collect::<Vec<_>>()
            }));
            let (events, retry_now) = (self.events_tx.clone(), self.retry_now);
            let (fleet, store, urls) = (
                self.fleet.clone(),
                self.contexts[0].store.clone(),
                self.urls.clone(),
            );
            let rt = self.rt.clone();
            self.rt.spawn(Box::pin(async move {
                let mut loaded = work.await;
                if let Some(fleet) = fleet {
                    prefer_shared(&rt, &fleet, &store, &urls, &batch, &mut loaded).await;
                }
                for (id, (cert, mut retry, prepared, issuer)) in loaded {
                    if let Some(prepared) = prepared {
                        let _ = events.send(Wake::Prepared(id, prepared, issuer)).await;
                    }
                    if retry_now {
                        lift_backoff(&mut retry);
                    }
                    let loaded = Event::CacheLoaded { cert, retry };
                    let _ = events.send(Wake::Event(id, loaded)).await;
                }
            }));
        }
    }

    /// Runs an operator's request in the background; a revocation then asks the fleet for a
    /// replacement of each revoked certificate.
    fn carry_out(&self, command: Command) {
        let preferred = self.contexts[0].clone();
        match command {
            Command::Account(reply) => self.rt.spawn(Box::pin(async move {
                let _ = reply.send(preferred.account_info().await).await;
            })),
            Command::RolloverAccountKey(reply) => self.rt.spawn(Box::pin(async move {
                let _ = reply.send(preferred.rollover_account_key().await).await;
            })),
            Command::Revoke(reason, reply) => {
                // Each served certificate, with the CA that issued it.
                let served: Vec<_> = (self.managed.iter())
                    .filter_map(|m| {
                        let key = self.shared.resolver.served(&m.domains)?;
                        let leaf = key.cert.first()?.clone();
                        Some((
                            m.id,
                            leaf,
                            self.contexts[m.issued_by].clone(),
                            m.domains.clone(),
                        ))
                    })
                    .collect();
                let events = self.events_tx.clone();
                self.rt.spawn(Box::pin(async move {
                    let mut revoked = 0;
                    for (id, leaf, context, domains) in served {
                        let names = domains.join(",");
                        if let Err(e) = context.revoke(&leaf, reason).await {
                            let _ = reply.send(Err(format!("{names}: {e}"))).await;
                            return;
                        }
                        // No later start may serve it, whatever happens to the replacement.
                        let moved = context
                            .with_store(move |store, url| store.set_aside_revoked(&domains, url))
                            .await;
                        tracing::warn!(domains = %names, ?reason, "certificate revoked ({moved}); ordering its replacement");
                        let _ = events.send(Wake::Event(id, Event::RenewNow)).await;
                        revoked += 1;
                    }
                    let _ = reply.send(Ok(revoked)).await;
                }));
            }
        }
    }

    /// Where `id` is in `managed`: at its fleet index, as `launch` inserted them in order
    /// (without a scan, which would cost ten thousand certificates dearly).
    fn index_of(&self, id: CertId) -> Option<usize> {
        let at = usize::try_from(id.index()).ok()?;
        if self.managed.get(at).is_some_and(|m| m.id == id) {
            return Some(at);
        }
        self.managed.iter().position(|m| m.id == id)
    }

    /// Copies the lifecycle's view of each touched certificate into the handle's status.
    fn publish_status(&self, fleet: &CertFleet, touched: &mut Vec<CertId>) {
        if touched.is_empty() {
            return;
        }
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        for id in touched.drain(..) {
            let index = self.index_of(id);
            if let (Some(slot), Some(lifecycle)) =
                (index.and_then(|i| status.get_mut(i)), fleet.status(id))
            {
                slot.update(&lifecycle);
            }
        }
    }

    /// Waits (a few seconds at most) for the retry-state writes still running, so that the
    /// backoff they carry survives the exit that may follow.
    async fn finish_retry_writes(&mut self) {
        for finished in std::mem::take(&mut self.retry_writes) {
            let _ = timeout(&self.rt, Duration::from_secs(5), finished.recv()).await;
        }
    }

    fn record_outcome(&mut self, outcome: Result<(), StartError>) {
        if let Some(started) = self.started.take() {
            *self
                .shared
                .outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(outcome);
            drop(started);
        }
    }

    /// Carries out one action. `Err` only for `FailStartup`.
    fn execute(&mut self, id: CertId, action: Action) -> Result<(), StartError> {
        let Some(index) = self.index_of(id) else {
            return Ok(());
        };
        let domains = self.managed[index].domains.clone();
        // The preferred CA's file keeps the retry state; each certificate is cached under the
        // CA that issued it.
        let preferred_url = self.urls[0].clone();
        if let Some(observer) = &self.observer {
            observer.action(index, &action);
        }
        match action {
            // Gathered, and read in batches once the fleet's actions are drained.
            Action::LoadCache { .. } => self.loads.push((id, domains)),
            Action::StartOrder {
                order,
                domains: names,
                replacing,
                attempt,
                issuer,
            } => {
                let issuer = issuer.min(self.contexts.len() - 1);
                let context = self.contexts[issuer].clone();
                tracing::debug!(domains = %names.join(","), attempt, directory = %context.directory_url, "starting ACME order");
                // ARI `replaces` names a certificate of the CA asked, which supports ARI.
                let served = replacing.clone();
                let same_ca = self.managed[index].issued_by == issuer;
                let replacing = replacing.filter(|_| same_ca && self.managed[index].ari_supported);
                self.managed[index].ordered_from = issuer;
                // One order task per certificate: replacing the sender cancels the previous
                // task (its challenge answers go with it), and the new one begins once the
                // previous one has ended. The core's watchdog, on the wall clock, decides when
                // an order has taken too long; no second clock here.
                let (cancel, cancelled) = async_channel::bounded::<()>(1);
                let (ended, order_ended) = async_channel::bounded::<()>(1);
                let managed = &mut self.managed[index];
                managed.order_task = Some(cancel);
                let previous = managed.order_ended.replace(order_ended);
                let owner = ChallengeOwner(self.next_owner);
                self.next_owner += 1;
                let life = OrderTaskLife {
                    observer: self.observer.clone(),
                    cert: index,
                    owner,
                    _ended: ended,
                };
                let events = self.events_tx.clone();
                let fleet = self.fleet.clone();
                let served_until = served
                    .and_then(|bundle| decode_cert_file(bundle.bytes()).ok())
                    .map(|file| file.info.not_after);
                let urls = self.urls.clone();
                let order_slots = self.order_slots.clone();
                self.rt.spawn(Box::pin(async move {
                    let life = life;
                    let work = async {
                        if let Some(previous) = previous {
                            let _ = previous.recv().await;
                        }
                        if let Some(observer) = &life.observer {
                            observer.order_task(life.cert, owner, true);
                        }
                        let ordered = async {
                            let _slot = order_slots.acquire().await;
                            let cert = context
                                .order(&names, replacing.as_ref(), served_until, owner)
                                .await?;
                            Ok((cert, context.directory_url.clone()))
                        };
                        let result = match &fleet {
                            None => ordered.await.map(|(cert, _)| cert),
                            Some(fleet) => {
                                let obtained = fleet
                                    .obtain(&cert_id(&names), served_until, || ordered)
                                    .await;
                                match obtained {
                                    Ok(Obtained::Ordered(cert)) => Ok(cert),
                                    Ok(Obtained::Shared(cert, issuer)) => {
                                        let issuer = issuer_index(&urls, &issuer);
                                        let bundle = cert.bundle.bytes().to_vec();
                                        send_prepared(&events, id, bundle, issuer).await;
                                        Ok(cert)
                                    }
                                    Err(error) => Err(error),
                                }
                            }
                        };
                        Some(match result {
                            Ok(cert) => Event::OrderSucceeded { order, cert },
                            Err(error) => Event::OrderFailed { order, error },
                        })
                    };
                    let cancelled = async {
                        let _ = cancelled.recv().await;
                        None
                    };
                    // The cancel signal is polled first: a cancelled task takes no further step.
                    if let Some(event) = futures_lite::future::or(cancelled, work).await {
                        let _ = events.send(Wake::Event(id, event)).await;
                    }
                }));
            }
            Action::InstallCert(cert) => {
                // Prepared when loaded from the cache; an ordered certificate is parsed here.
                let managed = &mut self.managed[index];
                let (prepared, issuer) = match (managed.prepared.take())
                    .filter(|(prepared, _)| prepared.bundle.is_same(&cert.bundle))
                {
                    Some((prepared, issuer)) => (Ok(prepared), issuer),
                    None => (
                        prepare(cert.bundle.bytes().to_vec()).map(|(_, prepared)| prepared),
                        managed.ordered_from,
                    ),
                };
                if managed.issued_by != issuer {
                    // Whether this CA offers ARI is learnt anew.
                    managed.ari_supported = false;
                }
                managed.issued_by = issuer;
                match prepared {
                    Ok(prepared) => {
                        self.shared.resolver.install(&domains, prepared.key);
                        match prepared.served {
                            Some(served) => {
                                let mut status =
                                    self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(slot) = status.get_mut(index) {
                                    slot.served = Some(served);
                                    slot.issued_by = Some(self.urls[issuer].clone());
                                }
                            }
                            None => tracing::warn!(
                                domains = %domains.join(","),
                                "served, but its details cannot be read for the status"
                            ),
                        }
                    }
                    Err(e) => {
                        tracing::error!(domains = %domains.join(","), "cannot serve the certificate: {e}")
                    }
                }
            }
            Action::StoreCert { request, cert } => {
                let store = self.contexts[0].store.clone();
                // Only the served certificate is ever stored: its issuer's file.
                let url = self.urls[self.managed[index].issued_by].clone();
                let order = store.next_write();
                let work = self.rt.unblock(Box::new(move || {
                    store.store_cert(&domains, &url, cert.bundle.bytes(), order)
                }));
                self.reply(id, async move {
                    Event::StoreFinished {
                        request,
                        result: work.await,
                    }
                });
            }
            Action::PersistRetryState(state) => {
                let shared_state = state.clone();
                let store = self.contexts[0].store.clone();
                // Taken now: the write runs on a blocking thread, maybe after a newer one.
                let order = store.next_write();
                let work = self.rt.unblock(Box::new(move || {
                    store.store_retry(&domains, &preferred_url, &state, order)
                }));
                // Awaited before the driver ends (a failed startup exits right after).
                let (done, finished) = async_channel::bounded::<()>(1);
                self.retry_writes.retain(|w| !w.is_closed());
                self.retry_writes.push(finished);
                let fleet = (self.fleet.clone())
                    .map(|fleet| (fleet, cert_id(&self.managed[index].domains)));
                self.rt.spawn(Box::pin(async move {
                    if let Err(e) = work.await {
                        tracing::error!(
                            "cannot persist retry state; a restart will not honour the backoff: {e}"
                        );
                    }
                    if let Some((fleet, id)) = fleet {
                        fleet.share_retry(&id, &shared_state).await;
                    }
                    drop(done);
                }));
            }
            Action::FetchRenewalInfo { request, cert } => {
                // The CA that issued the served certificate knows its renewal window.
                let issuer = self.managed[index].issued_by;
                let context = self.contexts[issuer].clone();
                let events = self.events_tx.clone();
                let fleet = (self.fleet.clone())
                    .map(|fleet| (fleet, cert_id(&self.managed[index].domains)));
                self.reply(id, async move {
                    let info = renewal_info(&context, fleet, cert.bytes()).await;
                    if matches!(info, RenewalInfo::Window { .. }) {
                        let _ = events.send(Wake::AriSupported(id, issuer)).await;
                    }
                    Event::RenewalInfo { request, info }
                });
            }
            // Dropping the sender cancels the task (a wait for another instance's lease, most
            // likely), so it cannot order later.
            Action::AbandonOrder { .. } => self.managed[index].order_task = None,
            Action::Log(notice) => {
                let served_until = {
                    let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
                    let slot = &mut status[index];
                    match &notice {
                        Notice::CertIssued { .. } => slot.orders.issued += 1,
                        Notice::OrderFailed { error, .. }
                        | Notice::IssuerFallback { error, .. } => {
                            slot.orders.count_failure(error.kind)
                        }
                        _ => {}
                    }
                    slot.served.as_ref().map(|s| s.not_after)
                };
                self.log(&domains, &notice, served_until);
            }
            Action::Ready { .. } => {
                if !self.managed[index].ready {
                    self.managed[index].ready = true;
                    self.ready += 1;
                }
            }
            Action::FailStartup(failure) => {
                let directory = self.urls.join(", then ");
                tracing::error!(domains = %domains.join(","), %directory, "{failure}");
                return Err(StartError::NoCertificate {
                    domains,
                    directory,
                    reason: failure.to_string(),
                    blocked_until: failure.blocked_until,
                });
            }
            Action::ScheduleWake(_) => {}
        }
        Ok(())
    }

    /// Runs `work` in the background and feeds its event back to the fleet.
    fn reply(&self, id: CertId, work: impl Future<Output = Event> + Send + 'static) {
        let events = self.events_tx.clone();
        self.rt.spawn(Box::pin(async move {
            let event = work.await;
            let _ = events.send(Wake::Event(id, event)).await;
        }));
    }

    /// Renders a notice to `tracing` and publishes the lifecycle events embedders see.
    fn log(&self, domains: &[String], notice: &Notice, served_until: Option<UnixTime>) {
        let names = domains.join(",");
        match notice.level() {
            Level::Error => tracing::error!(domains = %names, "{notice}"),
            Level::Warn => tracing::warn!(domains = %names, "{notice}"),
            Level::Info => tracing::info!(domains = %names, "{notice}"),
            Level::Debug => tracing::debug!(domains = %names, "{notice}"),
        }
        let domains = domains.to_vec();
        let event = match notice {
            Notice::OrderStarted { attempt: 1, .. } => match served_until {
                Some(not_after) => LifecycleEvent::Expiring { domains, not_after },
                None => return,
            },
            Notice::CachedCertAdopted { not_after } => LifecycleEvent::Loaded {
                domains,
                not_after: *not_after,
            },
            Notice::CertIssued {
                not_after,
                renewal: false,
            } => LifecycleEvent::Issued {
                domains,
                not_after: *not_after,
            },
            Notice::CertIssued {
                not_after,
                renewal: true,
            } => LifecycleEvent::Renewed {
                domains,
                not_after: *not_after,
            },
            Notice::OrderFailed {
                error,
                retry_at,
                serving,
                ..
            } => LifecycleEvent::RenewalFailed {
                domains,
                error: error.to_string(),
                retry_at: *retry_at,
                expired: matches!(serving, Serving::ExpiredSince(_)),
            },
            // Another instance of the fleet issued or renewed it.
            Notice::SharedCertAdopted {
                not_after,
                renewal: false,
            } => LifecycleEvent::Issued {
                domains,
                not_after: *not_after,
            },
            Notice::SharedCertAdopted {
                not_after,
                renewal: true,
            } => LifecycleEvent::Renewed {
                domains,
                not_after: *not_after,
            },
            Notice::CertExpired { not_after } => LifecycleEvent::Expired {
                domains,
                not_after: *not_after,
            },
            _ => return,
        };
        self.shared.publish(event);
    }
}

/// Starts the fleet's watch, and feeds each newer certificate it hears of to the fleet as
/// [`Event::SharedCertArrived`] (prepared first, as the CA that issued it).
#[allow(clippy::too_many_arguments)]
fn listen_to_fleet<R: Runtime>(
    rt: &R,
    fleet: &Arc<FleetMember<R>>,
    config: &AcmeConfig,
    shared: &Shared,
    ids: Vec<CertId>,
    urls: &[String],
    events: async_channel::Sender<Wake>,
    driver_ended: async_channel::Receiver<()>,
) {
    let (certs, heard) = async_channel::unbounded::<(usize, SharedCert)>();
    let listeners = Listeners {
        cert_ids: config.certs.iter().map(|d| cert_id(d)).collect(),
        certs,
        resolver: shared.resolver.clone(),
        tokens: shared.tokens.clone(),
    };
    rt.spawn(Box::pin(watch(fleet.clone(), listeners, driver_ended)));
    let urls = urls.to_vec();
    rt.spawn(Box::pin(async move {
        while let Ok((at, record)) = heard.recv().await {
            let (Some(&id), Some(cert)) = (ids.get(at), certificate_of(&record)) else {
                continue;
            };
            let issuer = issuer_index(&urls, &record.issuer);
            if !send_prepared(&events, id, record.bundle, issuer).await {
                continue;
            }
            let _ = events
                .send(Wake::Event(id, Event::SharedCertArrived { cert }))
                .await;
        }
    }));
}

/// Prepares a certificate another instance stored and hands it to the driver ahead of the
/// event that installs it, to be served as issued by `issuer`. `false` if it cannot be served.
async fn send_prepared(
    events: &async_channel::Sender<Wake>,
    id: CertId,
    bundle: Vec<u8>,
    issuer: usize,
) -> bool {
    let Ok((_, prepared)) = prepare(bundle) else {
        return false;
    };
    let _ = events.send(Wake::Prepared(id, prepared, issuer)).await;
    true
}

/// Which configured issuer a shared certificate's directory URL is (the preferred one if the
/// fleet's instances are configured differently).
fn issuer_index(urls: &[String], url: &str) -> usize {
    urls.iter().position(|u| u == url).unwrap_or(0)
}

/// What loading found for one certificate: the cached certificate, the retry state, the
/// certificate prepared to serve, and the issuer whose file held it.
type Loaded = (CachedCert, Option<RetryState>, Option<PreparedCert>, usize);

/// At launch in fleet mode, a certificate the fleet stored that expires later than the local
/// copy replaces it (and is written to the cache directory). Without Redis, the local copies
/// are served.
async fn prefer_shared<R: Runtime>(
    rt: &R,
    fleet: &FleetMember<R>,
    store: &Arc<DirStore>,
    urls: &[String],
    batch: &[(CertId, Vec<String>)],
    loaded: &mut [(CertId, Loaded)],
) {
    let ids: Vec<String> = batch.iter().map(|(_, domains)| cert_id(domains)).collect();
    let records = match fleet.client.certs(&ids).await {
        Ok(records) => records,
        Err(e) => {
            return tracing::warn!(
                "fleet storage unavailable at launch ({e}): starting from this instance's local copies"
            );
        }
    };
    for ((record, (_, domains)), (_, (cert, _, prepared, issuer))) in
        records.into_iter().zip(batch).zip(loaded.iter_mut())
    {
        let Some(record) = record else { continue };
        let Some(shared) = certificate_of(&record) else {
            continue;
        };
        let local_until = match cert {
            CachedCert::Found(local) => Some(local.info.not_after),
            _ => None,
        };
        if local_until.is_some_and(|until| until >= shared.info.not_after) {
            continue;
        }
        let Ok((_, ready)) = prepare(record.bundle.clone()) else {
            continue;
        };
        let at = issuer_index(urls, &record.issuer);
        let (store, domains, url, bytes) = (
            store.clone(),
            domains.clone(),
            urls[at].clone(),
            record.bundle,
        );
        let order = store.next_write();
        let kept = rt
            .unblock(Box::new(move || {
                store.store_cert(&domains, &url, &bytes, order)
            }))
            .await;
        if let Err(e) = kept {
            tracing::warn!("cannot keep the fleet's certificate in the cache directory: {e}");
        }
        (*cert, *prepared, *issuer) = (CachedCert::Found(shared), Some(ready), at);
    }
}

/// Asks the CA for the certificate's renewal window (ARI); in a fleet, takes the window
/// another instance fetched for the same certificate if the CA's retry time has not passed,
/// and shares the one it fetched.
async fn renewal_info<R: Runtime>(
    context: &AcmeContext<R>,
    fleet: Option<(Arc<FleetMember<R>>, String)>,
    bundle: &[u8],
) -> RenewalInfo {
    let failed = RenewalInfo::Failed { retry_after: None };
    let Ok(file) = decode_cert_file(bundle) else {
        return failed;
    };
    let Some(leaf) = file.chain.first() else {
        return failed;
    };
    let Ok(cert_id) = CertificateIdentifier::try_from(leaf) else {
        return failed;
    };
    let ari_id = cert_id.to_string();
    if let Some((fleet, id)) = &fleet
        && let Some((window, ask_again)) = fleet.shared_window(id, &ari_id).await
    {
        return RenewalInfo::Window {
            start: window.start,
            end: window.end,
            retry_after: Some(ask_again),
        };
    }
    let info = ask_renewal_info(context, &cert_id).await;
    if let (
        Some((fleet, id)),
        RenewalInfo::Window {
            start,
            end,
            retry_after: Some(ask_again),
        },
    ) = (&fleet, &info)
    {
        let window = SharedWindow {
            ari_id,
            start: *start,
            end: *end,
        };
        fleet.share_window(id, &window, *ask_again).await;
    }
    info
}

/// Asks the CA for the renewal window of the certificate `cert_id` identifies.
async fn ask_renewal_info<R: Runtime>(
    context: &AcmeContext<R>,
    cert_id: &CertificateIdentifier<'_>,
) -> RenewalInfo {
    let failed = RenewalInfo::Failed { retry_after: None };
    let Ok(account) = context.account().await else {
        return failed;
    };
    let asked = std::time::Instant::now();
    let answer = timeout(
        &context.rt,
        Duration::from_secs(60),
        account.renewal_info(cert_id),
    )
    .await;
    (context.durations).observe(AcmeOperation::RenewalInfo, asked.elapsed());
    match answer {
        Some(Ok((info, retry_after))) => {
            let to_unix = |t: time::OffsetDateTime| {
                UnixTime::from_millis(
                    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                )
            };
            RenewalInfo::Window {
                start: to_unix(info.suggested_window.start),
                end: to_unix(info.suggested_window.end),
                retry_after: Some(retry_after),
            }
        }
        Some(Err(instant_acme::Error::Unsupported(_))) => RenewalInfo::Unsupported,
        Some(Err(e)) => {
            tracing::debug!("renewal information unavailable: {e}");
            // The Retry-After of the error response that said so, if the CA sent one.
            let retry_after = match &e {
                instant_acme::Error::Other(inner) => inner
                    .downcast_ref::<crate::http_client::CaAnswered>()
                    .and_then(|answer| answer.retry_after),
                _ => None,
            };
            RenewalInfo::Failed { retry_after }
        }
        None => failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_sleeps_in_slices_of_at_most_a_minute() {
        let now = UnixTime::from_millis(1_000_000_000);
        let in_a_day = UnixTime::from_millis(1_000_000_000 + 86_400_000);
        assert_eq!(sleep_slice(Some(in_a_day), now), MAX_SLEEP_SLICE);
        assert_eq!(sleep_slice(None, now), MAX_SLEEP_SLICE);
        let soon = UnixTime::from_millis(1_000_000_000 + 1_500);
        assert_eq!(sleep_slice(Some(soon), now), Duration::from_millis(1_500));
        assert_eq!(
            sleep_slice(Some(now), soon),
            Duration::ZERO,
            "overdue: at once"
        );
    }
}
