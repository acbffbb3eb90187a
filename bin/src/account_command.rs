//! `certloop account ... show|rollover` and `certloop revoke`: an operator's hand on one ACME
//! listener's account and certificate. `show` reads the cache directory (it works while
//! certloop runs); `rollover` and `revoke` launch the listener's certificate management in this
//! process, which needs its cache directory and, to answer the replacement's validation, the
//! listener's address (TLS-ALPN-01) or the `[http]` one (HTTP-01): certloop must be stopped
//! for them.

use std::process::ExitCode;
use std::time::Duration;

use std::future::Future;

use std::net::SocketAddr;

use certloop_tokio::{
    AcmeConfig, AcmeListener, ChallengeKind, LifecycleEvent, RevocationReason, StartError,
};

use crate::config::{Config, TlsMode};

/// What to do with the account or certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Show,
    Rollover,
    Revoke(RevocationReason),
}

/// How long a revocation waits for the replacement certificate.
const REPLACEMENT_WITHIN: Duration = Duration::from_secs(300);

/// Runs `operation` on the listener named `listener`; exit 0 when done, 2 for a listener that
/// is not there or not ACME, 1 when the CA or the cache directory said no.
pub(crate) fn run(config: &Config, listener: &str, operation: Operation) -> ExitCode {
    let spec = config.listeners.iter().find(|l| l.name == listener);
    let acme = match spec {
        Some(spec) => match &spec.tls {
            TlsMode::Acme(acme) => acme.as_ref().clone(),
            TlsMode::Manual { .. } => {
                eprintln!(
                    "certloop: listener {listener} has tls_mode = \"manual\": no ACME account"
                );
                return ExitCode::from(2);
            }
        },
        None => {
            let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
            eprintln!(
                "certloop: no listener named {listener:?} (there are: {})",
                names.join(", ")
            );
            return ExitCode::from(2);
        }
    };
    let result = match operation {
        Operation::Show => acme.cached_account().map(|info| info.to_string()),
        Operation::Rollover | Operation::Revoke(_) => {
            // Where the CA validates the replacement.
            let challenge_at = match acme.challenge_kind() {
                ChallengeKind::Http01 => config.http.as_ref().map(|h| Answering::Http01(h.bind)),
                ChallengeKind::Dns01 => None,
                _ => spec.map(|s| Answering::TlsAlpn01(s.bind)),
            };
            let revoke = match operation {
                Operation::Revoke(reason) => Some(reason),
                _ => None,
            };
            in_runtime(launched(acme, challenge_at, revoke))
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certloop: listener {listener}: {e}");
            ExitCode::from(1)
        }
    }
}

fn in_runtime(work: impl Future<Output = Result<String, String>>) -> Result<String, String> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(work)
}

/// Where this process answers the CA's validation while it orders.
#[derive(Clone, Copy, Debug)]
enum Answering {
    TlsAlpn01(SocketAddr),
    Http01(SocketAddr),
}

/// Launches the listener's certificate management here (answering validation at
/// `challenge_at`), then revokes its certificates for `revoke` and waits until the
/// replacement is stored, or (`None`) rolls the account key over; then stops.
async fn launched(
    acme: AcmeConfig,
    challenge_at: Option<Answering>,
    revoke: Option<RevocationReason>,
) -> Result<String, String> {
    let dir = acme.cache_dir().display().to_string();
    let on_disk = acme.clone();
    let in_use = |what: String| {
        format!(
            "{what}: certloop is running with this cache directory or address; stop it, run \
             this command, then start it again"
        )
    };
    let handle = certloop_tokio::launch(acme).await.map_err(|e| match e {
        StartError::Store(e) if e.to_string().contains("already in use") => in_use(e.to_string()),
        other => other.to_string(),
    })?;
    let answering = match challenge_at {
        Some(Answering::TlsAlpn01(addr)) => {
            let listener = AcmeListener::bind(addr, &handle)
                .await
                .map_err(|e| in_use(format!("cannot listen on {addr}: {e}")))?;
            // Validation handshakes are answered inside; anything else is closed.
            Some(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            }))
        }
        Some(Answering::Http01(addr)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| in_use(format!("cannot listen on {addr}: {e}")))?;
            Some(tokio::spawn(certloop_tokio::serve_http01(
                listener,
                handle.http01_tokens(),
            )))
        }
        None => None,
    };
    let outcome = async {
        handle.ready().await.map_err(|e| e.to_string())?;
        match revoke {
            None => (handle.rollover_account_key().await)
                .map(|info| format!("{info}\n(new key stored in {dir})")),
            Some(reason) => {
                let serials = |statuses: &[certloop_tokio::CertStatus]| -> Vec<Option<String>> {
                    (statuses.iter())
                        .map(|s| s.served.as_ref().map(|c| c.serial.clone()))
                        .collect()
                };
                let revoked_serials = serials(&handle.status());
                let events = handle.subscribe();
                let revoked = handle.revoke(reason).await?;
                // Each replacement is installed, then written to the cache directory.
                let replaced = tokio::time::timeout(REPLACEMENT_WITHIN, async {
                    let mut renewed = 0;
                    while renewed < revoked {
                        match events.next().await {
                            Some(LifecycleEvent::Renewed { .. }) => renewed += 1,
                            Some(LifecycleEvent::RenewalFailed { error, .. }) => {
                                return Err(format!(
                                    "ordering the replacement failed: {error}; the revoked \
                                     certificate was moved aside, so the next start of certloop \
                                     orders one (and does not start without it)"
                                ));
                            }
                            Some(_) => {}
                            None => return Err("certificate management stopped".to_owned()),
                        }
                    }
                    loop {
                        let now = certloop_acme::adapter::system_clock();
                        let on_disk = on_disk.cached_status(now).map_err(|e| e.to_string())?;
                        let stored = serials(&on_disk);
                        if stored
                            .iter()
                            .zip(&revoked_serials)
                            .all(|(s, r)| s.is_some() && s != r)
                        {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                match replaced.await {
                    Ok(Ok(())) => Ok(format!(
                        "revoked {revoked} certificate(s) ({reason:?}); the replacement is \
                         stored in {dir}"
                    )),
                    Ok(Err(e)) => Err(format!("revoked {revoked} certificate(s), then: {e}")),
                    Err(_) => Err(format!(
                        "revoked {revoked} certificate(s), but no replacement was stored within \
                         {}s; the revoked certificate was moved aside, so starting certloop \
                         orders one",
                        REPLACEMENT_WITHIN.as_secs()
                    )),
                }
            }
        }
    }
    .await;
    handle.stop();
    if let Some(task) = answering {
        task.abort();
    }
    outcome
}
