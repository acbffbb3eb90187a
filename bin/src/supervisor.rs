//! The running TLS listeners: started at boot, changed by a reload (`reload_plan.rs` decides
//! what each change needs), stopped at shutdown. A listener is its socket, its accept loop,
//! its certificate source (an ACME handle or certificate files) and its proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certloop_tokio::{AcmeConfig, AcmeHandle, Http01Tokens, StartError};
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::cert_status::{CertSource, CertSources};
use crate::config::{Config, Listener, TlsMode};
use crate::listen::ListenSocket;
use crate::manual::ManualResolver;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxySlot};
use crate::reload_plan::{Change, change};
use crate::server::{ListenerContext, TokenLists, serve_tls};
use crate::shards::Shards;

/// How long a relaunch waits for the previous driver of the same cache directory to let go
/// of its lock.
const RELAUNCH_WAIT: Duration = Duration::from_secs(10);

/// What every listener shares with the rest of the process.
pub(crate) struct Shared {
    pub(crate) tracker: TaskTracker,
    /// Where the connections run.
    pub(crate) shards: Arc<Shards>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access_log: Option<AccessLog>,
    /// Read by the admin endpoints and the metrics.
    pub(crate) sources: CertSources,
    /// Read by the `[http]` listener.
    pub(crate) tokens: TokenLists,
}

/// A listener's certificate, as its TLS settings use it.
struct Certificate {
    source: CertSource,
    server_config: Arc<ServerConfig>,
    /// Manual files: the task that watches them.
    watcher: Option<JoinHandle<()>>,
}

impl Certificate {
    /// Stops what keeps this certificate current. For ACME, waits until its driver has ended,
    /// so that its cache directory's lock is free for a new launch.
    async fn stop(self) {
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
        if let CertSource::Acme(handle) = self.source {
            let events = handle.subscribe();
            handle.stop();
            while events.next().await.is_some() {}
        }
    }
}

struct Running {
    spec: Listener,
    stop: watch::Sender<bool>,
    accept: JoinHandle<ListenSocket>,
    proxy: Arc<ProxySlot>,
    certificate: Certificate,
}

impl Running {
    /// Stops accepting (open connections finish their requests and close) and returns the
    /// socket, still open.
    async fn stop_accepting(&mut self) -> Option<ListenSocket> {
        let _ = self.stop.send(true);
        (&mut self.accept).await.ok()
    }
}

/// What a reload did, for the log.
#[derive(Debug, Default)]
pub(crate) struct Reloaded {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) restarted: Vec<String>,
    pub(crate) proxy_changed: Vec<String>,
    pub(crate) unchanged: Vec<String>,
    /// Listeners that could not start (the log says why).
    pub(crate) failed: Vec<String>,
}

/// The running listeners.
pub(crate) struct Supervisor {
    shared: Shared,
    running: Vec<Running>,
}

impl Supervisor {
    pub(crate) fn new(shared: Shared) -> Self {
        Self {
            shared,
            running: Vec::new(),
        }
    }

    /// Boot: binds and launches every listener, in order; the first failure stops the start.
    /// `retry_now` lifts persisted ACME backoffs for this start only.
    pub(crate) async fn start(
        &mut self,
        listeners: Vec<Listener>,
        retry_now: bool,
    ) -> Result<(), StartFailure> {
        for spec in listeners {
            let socket = bind(&spec)?;
            let certificate = self.certificate(&spec, retry_now).await?;
            self.run(spec, socket, certificate);
        }
        self.publish();
        Ok(())
    }

    /// The ACME listeners' handles, in configuration order.
    pub(crate) fn acme_handles(&self) -> Vec<(String, AcmeHandle)> {
        (self.running.iter())
            .filter_map(|r| match &r.certificate.source {
                CertSource::Acme(handle) => Some((r.spec.name.clone(), handle.clone())),
                CertSource::Manual(_) => None,
            })
            .collect()
    }

    /// SIGHUP for certificate files: each manual listener reads its files again.
    pub(crate) fn reload_certificate_files(&self) {
        for running in &self.running {
            if let CertSource::Manual(resolver) = &running.certificate.source {
                resolver.reload();
            }
        }
    }

    /// Applies a new, already checked configuration's listeners. New addresses are bound, and
    /// new certificate sources started, before anything stops: if one fails, nothing changes.
    /// (A new source that takes over the cache directory of a listener it replaces can only
    /// start after that one stops; if it fails then, the reload names it under `failed`.)
    /// Listeners whose settings did not change keep running untouched.
    pub(crate) async fn reload(&mut self, new: Config) -> Result<Reloaded, String> {
        let mut reloaded = Reloaded::default();
        // Phase 1, nothing changes yet: bind every address no running listener holds, and
        // start the certificate sources that need nothing a running listener holds.
        let held: Vec<SocketAddr> = self.running.iter().map(|r| r.spec.bind).collect();
        let mut fresh: Vec<(SocketAddr, ListenSocket)> = Vec::new();
        for spec in &new.listeners {
            if !held.contains(&spec.bind) {
                fresh.push((spec.bind, bind(spec)?));
            }
        }
        let held_dirs: Vec<&std::path::Path> = (self.running.iter())
            .filter_map(|r| cache_dir(&r.spec))
            .collect();
        let mut prepared: Vec<(String, Certificate)> = Vec::new();
        for spec in &new.listeners {
            let needs_source = match self.running.iter().find(|r| r.spec.name == spec.name) {
                None => true,
                Some(running) => matches!(
                    change(&running.spec, spec),
                    Change::Restart {
                        new_certificate: true
                    }
                ),
            };
            if !needs_source || cache_dir(spec).is_some_and(|dir| held_dirs.contains(&dir)) {
                continue;
            }
            match self.certificate(spec, false).await {
                Ok(certificate) => prepared.push((spec.name.clone(), certificate)),
                Err(e) => {
                    for (_, certificate) in prepared {
                        certificate.stop().await;
                    }
                    return Err(e.message);
                }
            }
        }
        for (name, certificate) in &prepared {
            if let CertSource::Acme(handle) = &certificate.source {
                report_readiness(name.clone(), handle.clone());
            }
        }
        // Phase 2: stop what is removed or restarts, keeping sockets and certificates that
        // carry over.
        let mut sockets: Vec<(SocketAddr, ListenSocket)> = Vec::new();
        let mut kept_certificates: Vec<(String, Certificate)> = Vec::new();
        let mut carried = Vec::new();
        for mut running in std::mem::take(&mut self.running) {
            let name = running.spec.name.clone();
            let Some(spec) = new.listeners.iter().find(|l| l.name == name) else {
                if let Some(socket) = running.stop_accepting().await {
                    sockets.push((running.spec.bind, socket));
                }
                running.certificate.stop().await;
                reloaded.removed.push(name);
                continue;
            };
            match change(&running.spec, spec) {
                Change::Unchanged => {
                    reloaded.unchanged.push(name);
                    carried.push(running);
                }
                Change::Proxy => {
                    running.proxy.replace(self.proxy(spec));
                    running.spec = spec.clone();
                    reloaded.proxy_changed.push(name);
                    carried.push(running);
                }
                Change::Restart { new_certificate } => {
                    if let Some(socket) = running.stop_accepting().await {
                        sockets.push((running.spec.bind, socket));
                    }
                    if new_certificate {
                        running.certificate.stop().await;
                    } else {
                        kept_certificates.push((name.clone(), running.certificate));
                    }
                    reloaded.restarted.push(name);
                }
            }
        }
        self.running = carried;
        // Phase 3: start what is new or restarts, in the new configuration's order.
        sockets.extend(fresh);
        for spec in new.listeners {
            if self.running.iter().any(|r| r.spec.name == spec.name) {
                continue;
            }
            let Some(at) = sockets.iter().position(|(addr, _)| *addr == spec.bind) else {
                tracing::error!(listener = %spec.name, "no socket for {}; not started", spec.bind);
                continue;
            };
            let (_, socket) = sockets.swap_remove(at);
            let kept = (kept_certificates.iter().chain(&prepared))
                .position(|(name, _)| *name == spec.name);
            let kept = kept.map(|at| match at.checked_sub(kept_certificates.len()) {
                None => kept_certificates.swap_remove(at).1,
                Some(at) => prepared.swap_remove(at).1,
            });
            let certificate = match kept {
                Some(certificate) => certificate,
                None => match self.certificate(&spec, false).await {
                    Ok(certificate) => {
                        if let CertSource::Acme(handle) = &certificate.source {
                            report_readiness(spec.name.clone(), handle.clone());
                        }
                        certificate
                    }
                    Err(e) => {
                        tracing::error!("{}; the listener is not started", e.message);
                        reloaded.failed.push(spec.name.clone());
                        continue;
                    }
                },
            };
            if !reloaded.restarted.contains(&spec.name) {
                reloaded.added.push(spec.name.clone());
            }
            self.run(spec, socket, certificate);
        }
        self.publish();
        Ok(reloaded)
    }

    /// Shutdown: every accept loop stops, and open connections close gracefully through
    /// their listeners' stop signals. Certificate management stops when the supervisor is
    /// dropped.
    pub(crate) async fn stop_accepting(&mut self) {
        for running in &mut self.running {
            running.stop_accepting().await;
        }
    }

    /// Starts serving `spec` on `socket` with `certificate`.
    fn run(&mut self, spec: Listener, socket: ListenSocket, certificate: Certificate) {
        let name = spec.name.clone();
        let (stop, stop_rx) = watch::channel(false);
        let metrics = self.shared.metrics.listener(&name);
        let proxy = ProxySlot::new(self.proxy(&spec));
        let ctx = ListenerContext::new(
            &name,
            spec.limits.clone(),
            self.shared.tracker.clone(),
            self.shared.shards.clone(),
            stop_rx,
            metrics,
        );
        let tls = certificate.server_config.clone();
        tracing::info!(listener = %name, bind = %spec.bind, upstream = %spec.upstream, "listening");
        let accept = tokio::spawn(serve_tls(ctx, socket, tls, proxy.clone()));
        self.running.push(Running {
            spec,
            stop,
            accept,
            proxy,
            certificate,
        });
    }

    fn proxy(&self, spec: &Listener) -> Arc<Proxy> {
        Proxy::new(
            &spec.name,
            spec.upstream.clone(),
            spec.upstream_timeout,
            spec.limits.idle_timeout,
            spec.trusted_proxies.clone(),
            self.shared.tracker.clone(),
            self.shared.metrics.listener(&spec.name),
            self.shared.access_log.clone(),
            self.shared.shards.count(),
        )
    }

    /// The certificate source `spec` asks for: its files, or an ACME launch.
    async fn certificate(
        &self,
        spec: &Listener,
        retry_now: bool,
    ) -> Result<Certificate, StartFailure> {
        match &spec.tls {
            TlsMode::Manual { cert, key, loaded } => {
                let resolver =
                    ManualResolver::new(&spec.name, cert.clone(), key.clone(), loaded.clone());
                let watcher = tokio::spawn(resolver.clone().watch_files());
                let server_config = Arc::new(certloop_tokio::server_config(
                    resolver.clone(),
                    certloop_tokio::TlsAlpn01::Ignore,
                ));
                Ok(Certificate {
                    source: CertSource::Manual(resolver),
                    server_config,
                    watcher: Some(watcher),
                })
            }
            TlsMode::Acme(acme) => {
                let acme = if retry_now {
                    acme.as_ref().clone().retry_now()
                } else {
                    acme.as_ref().clone()
                };
                let handle = launch(acme).await.map_err(|e| StartFailure {
                    message: format!(
                        "listener {}: {e}; check acme_cache_dir (or state_dir) and the ACME settings",
                        spec.name
                    ),
                    // The CA said no to the configuration itself (an ACME profile it lacks).
                    misconfigured: matches!(e, StartError::Config { .. }),
                })?;
                Ok(Certificate {
                    server_config: handle.server_config(),
                    source: CertSource::Acme(handle),
                    watcher: None,
                })
            }
        }
    }

    /// Tells the admin endpoints, the metrics and the `[http]` listener what runs now.
    fn publish(&self) {
        let sources: Vec<(String, CertSource)> = (self.running.iter())
            .map(|r| (r.spec.name.clone(), r.certificate.source.clone()))
            .collect();
        let tokens: Vec<Arc<Http01Tokens>> = (self.running.iter())
            .filter_map(|r| match &r.certificate.source {
                CertSource::Acme(handle) => Some(handle.http01_tokens()),
                CertSource::Manual(_) => None,
            })
            .collect();
        *self
            .shared
            .sources
            .write()
            .unwrap_or_else(|e| e.into_inner()) = sources;
        *self
            .shared
            .tokens
            .write()
            .unwrap_or_else(|e| e.into_inner()) = tokens;
    }
}

/// Why the proxy could not start; `misconfigured` failures exit with status 2, like an invalid
/// configuration file.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub(crate) message: String,
    pub(crate) misconfigured: bool,
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        Self {
            message,
            misconfigured: false,
        }
    }
}

/// However `run` ends (a failed start, shutdown), certificate management stops on purpose, so
/// no "every handle dropped" warning is logged.
impl Drop for Supervisor {
    fn drop(&mut self) {
        for running in self.running.drain(..) {
            if let CertSource::Acme(handle) = running.certificate.source {
                handle.stop();
            }
        }
    }
}

/// The ACME cache directory a listener locks, if it has one.
fn cache_dir(spec: &Listener) -> Option<&std::path::Path> {
    match &spec.tls {
        TlsMode::Acme(acme) => Some(acme.cache_dir()),
        TlsMode::Manual { .. } => None,
    }
}

fn bind(spec: &Listener) -> Result<ListenSocket, String> {
    ListenSocket::bind(spec.bind).map_err(|e| {
        format!(
            "listener {}: cannot listen on {}: {e}; free the port or change bind",
            spec.name, spec.bind
        )
    })
}

/// Launches certificate management; while a previous driver of the same cache directory is
/// still letting go of its lock (a reload that relaunches), tries again for a few seconds.
async fn launch(config: AcmeConfig) -> Result<AcmeHandle, StartError> {
    let deadline = tokio::time::Instant::now() + RELAUNCH_WAIT;
    loop {
        match certloop_tokio::launch(config.clone()).await {
            Err(StartError::Store(e))
                if e.to_string().contains("already in use")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Logs when a listener added by a reload has its certificate, or cannot get one.
fn report_readiness(listener: String, handle: AcmeHandle) {
    tokio::spawn(async move {
        match handle.ready().await {
            Ok(()) => tracing::info!(listener = %listener, "certificate ready"),
            Err(e) => tracing::error!(
                listener = %listener,
                "no certificate: {e}; the listener serves none until the configuration changes"
            ),
        }
    });
}
