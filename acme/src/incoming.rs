//! The accept loop behind both runtimes' `AcmeListener`: it accepts from the moment the
//! listener exists (so no order of calls can keep a TLS-ALPN-01 validation waiting), runs each
//! TLS handshake in its own task under a deadline and a cap (a slow or silent client costs only
//! its own slot), answers validation handshakes itself, and hands over only the connections
//! meant for the application.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::accept::{AcceptBackoff, PerClientSlots, accept_with_backoff};
use crate::runtime::{Runtime, timeout};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, at most; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;
/// Handshakes in progress from one client (an IPv4 address or an IPv6 /64), at most; further
/// connections from it are closed at once, so no client can take every slot.
pub const MAX_HANDSHAKES_PER_CLIENT: usize = 64;
/// Established connections waiting for the application's `accept`, at most. A connection that
/// finds the queue full waits up to [`HANDSHAKE_TIMEOUT`] for room, outside the handshake slots
/// (so an application that does not accept yet never stops validations), and is closed then.
pub const READY_QUEUE: usize = 128;

/// How a handshake ended, when it did not fail.
pub enum Handshake<S> {
    /// A connection for the application.
    Serve(S),
    /// A TLS-ALPN-01 validation: the handshake itself was the answer, and it is closed.
    Validation,
}

/// The receiving end: what `AcmeListener::accept` reads. Dropping it stops the loop.
pub struct Incoming<S> {
    ready: async_channel::Receiver<(S, SocketAddr)>,
    _stop: async_channel::Sender<()>,
}

impl<S> Incoming<S> {
    /// The next connection for the application. Fails only if the loop has ended (its task
    /// was dropped by a runtime shutting down).
    pub async fn next(&self) -> io::Result<(S, SocketAddr)> {
        self.ready
            .recv()
            .await
            .map_err(|_| io::Error::other("the TLS accept loop has ended"))
    }
}

/// Starts the loop on `rt`: `accept` yields TCP connections, `handshake` turns one into a TLS
/// connection (or answers a validation). `name` labels its log lines.
pub fn spawn_incoming<R, Tcp, S, A, AF, H, HF>(
    rt: &R,
    name: String,
    accept: A,
    handshake: H,
) -> Incoming<S>
where
    R: Runtime,
    Tcp: Send + 'static,
    S: Send + 'static,
    A: FnMut() -> AF + Send + 'static,
    AF: Future<Output = io::Result<(Tcp, SocketAddr)>> + Send,
    H: Fn(Tcp) -> HF + Send + Sync + Clone + 'static,
    HF: Future<Output = io::Result<Handshake<S>>> + Send + 'static,
{
    let (ready_tx, ready) = async_channel::bounded(READY_QUEUE);
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let looping = rt.clone();
    rt.spawn(Box::pin(async move {
        let run = run(looping, name, accept, handshake, ready_tx);
        // The listener is gone when its `Incoming` is dropped: stop accepting.
        futures_lite::future::or(run, async {
            let _ = stopped.recv().await;
        })
        .await;
    }));
    Incoming { ready, _stop: stop }
}

async fn run<R, Tcp, S, A, AF, H, HF>(
    rt: R,
    name: String,
    mut accept: A,
    handshake: H,
    ready: async_channel::Sender<(S, SocketAddr)>,
) where
    R: Runtime,
    Tcp: Send + 'static,
    S: Send + 'static,
    A: FnMut() -> AF,
    AF: Future<Output = io::Result<(Tcp, SocketAddr)>>,
    H: Fn(Tcp) -> HF + Send + Sync + Clone + 'static,
    HF: Future<Output = io::Result<Handshake<S>>> + Send + 'static,
{
    // A slot is taken by sending into this channel and given back by receiving from it.
    let (take_slot, slots) = async_channel::bounded::<()>(MAX_HANDSHAKES);
    let per_client = PerClientSlots::new(MAX_HANDSHAKES_PER_CLIENT);
    let mut backoff = AcceptBackoff::default();
    loop {
        if take_slot.send(()).await.is_err() {
            return;
        }
        let slot = Slot(slots.clone());
        let (tcp, peer) = accept_with_backoff(&rt, &name, &mut backoff, &mut accept).await;
        let Ok(client_slot) = per_client.take(peer.ip()) else {
            continue; // this client is at its cap: the connection closes as it drops
        };
        let (handshake, ready, task_rt) = (handshake.clone(), ready.clone(), rt.clone());
        rt.spawn(Box::pin(async move {
            let outcome = timeout(&task_rt, HANDSHAKE_TIMEOUT, handshake(tcp)).await;
            drop((slot, client_slot));
            if let Some(Ok(Handshake::Serve(stream))) = outcome {
                // Dropped when the listener is gone or the application does not catch up.
                let _ = timeout(&task_rt, HANDSHAKE_TIMEOUT, ready.send((stream, peer))).await;
            }
        }));
    }
}

/// A handshake slot, given back when dropped (also when a handshake panics).
struct Slot(async_channel::Receiver<()>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}
