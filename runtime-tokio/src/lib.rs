//! `certloop-tokio`: automatic ACME certificates for a tokio server.
//!
//! The smallest server: bind, launch, serve through an [`AcmeListener`], and start only once
//! [`AcmeHandle::ready`] says a valid certificate is served.
//! ```no_run
//! use certloop_tokio::{AcmeConfig, AcmeListener, Directory};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = tokio::net::TcpListener::bind("0.0.0.0:443").await?; // before launch
//! let config = AcmeConfig::new(["example.com"], "/var/lib/myapp/acme")
//!     .directory(Directory::Staging)
//!     .contact("mailto:ops@example.com");
//! let acme = certloop_tokio::launch(config).await?; // bad configuration or cache: error here
//! let listener = AcmeListener::from_tcp(tcp, &acme)?; // answers the CA's validation itself
//! acme.ready().await?; // no valid certificate, per the failure table: do not start
//! loop {
//!     let (tls, _peer) = listener.accept().await?; // a tokio_rustls TlsStream, handshake done
//!     tokio::spawn(async move { drop(tls) /* serve HTTP over `tls` */ });
//! }
//! # }
//! ```
//! With the `axum` feature, `axum::serve(listener, app)` is the whole loop. Logs go through
//! `tracing`: install a subscriber (e.g. `tracing_subscriber::fmt().init()`) to see them.
//!
//! Everything but the runtime seam ([`TokioRuntime`]) lives in `certloop-acme`, shared with
//! `certloop-smol`.
//!
//! Keep the handle for as long as you serve: dropping every clone stops renewals. The compiler
//! says so (`AcmeHandle` is `#[must_use]`; denied here, so this does not compile), and the log
//! warns when it happens; [`AcmeHandle::stop`] stops on purpose.
//! ```compile_fail
//! #![deny(unused_must_use)]
//! async fn serve(config: certloop_tokio::AcmeConfig) {
//!     certloop_tokio::launch(config).await.expect("launch"); // the handle is dropped here
//! }
//! ```
//! ```
//! #![deny(unused_must_use)]
//! async fn serve(config: certloop_tokio::AcmeConfig) -> certloop_tokio::AcmeHandle {
//!     certloop_tokio::launch(config).await.expect("launch") // kept by the caller
//! }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod listener;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use certloop_acme::adapter::{BoxFuture, Runtime};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub use certloop_acme::embedding::*;

pub use listener::AcmeListener;

/// The runtime seam on tokio: tokio sockets, `tokio::time`, the blocking pool.
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// The runtime this is called on. Panics outside a tokio runtime, like `tokio::spawn`.
    pub fn current() -> Self {
        Self {
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Runtime for TokioRuntime {
    type Tcp = Compat<tokio::net::TcpStream>;

    fn connect(&self, host: String, port: u16) -> BoxFuture<io::Result<Self::Tcp>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream.compat())
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.handle.spawn(future);
    }

    fn unblock<T: Send + 'static>(&self, work: Box<dyn FnOnce() -> T + Send>) -> BoxFuture<T> {
        let task = self.handle.spawn_blocking(work);
        Box::pin(async move {
            match task.await {
                Ok(value) => value,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down (e.g. `main` returned), and the task
                // awaiting this is about to be dropped with it. Nothing to report.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

/// Starts certificate management on the current tokio runtime and returns at once; serve TLS
/// with [`AcmeHandle::server_config`], then await [`AcmeHandle::ready`].
pub async fn launch(config: AcmeConfig) -> Result<AcmeHandle, StartError> {
    certloop_acme::adapter::launch(TokioRuntime::current(), config).await
}

/// The ready-made port-80 responder: answers HTTP-01 validation for pending tokens and 404s
/// everything else. Runs forever: accept errors (such as running out of file descriptors) are
/// retried with a backoff, each connection gets
/// [`RESPONDER_DEADLINE`], and at most
/// [`RESPONDER_MAX_CONNECTIONS`] are served
/// at once ([`RESPONDER_MAX_PER_CLIENT`] from
/// one client).
pub async fn serve_http01(listener: tokio::net::TcpListener, tokens: Arc<Http01Tokens>) {
    let accept = || async {
        listener
            .accept()
            .await
            .map(|(stream, peer)| (stream.compat(), peer.ip()))
    };
    certloop_acme::adapter::serve_responder(TokioRuntime::current(), accept, tokens).await;
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn blocking_work_cancelled_by_a_shut_down_runtime_is_not_a_panic() {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let seam = runtime.block_on(async { TokioRuntime::current() });
        drop(runtime); // as when `main` returns: blocking work spawned now is cancelled
        let mut pending = seam.unblock(Box::new(|| 42));
        let poll = pending
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(poll.is_pending(), "{poll:?}");
    }

    /// Every log line written while `body` runs on a current-thread runtime (where the
    /// driver's tasks run on this thread, under the subscriber set here).
    fn logs_of(body: impl Future<Output = ()>) -> String {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || LogSink(writer.clone()))
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body);
        let bytes = buffer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for LogSink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Launches against a CA nobody answers (it keeps retrying), lets `end` end it, and
    /// returns once the driver is gone (its cache directory lock is free again).
    async fn launch_and_end(tag: &str, end: impl FnOnce(AcmeHandle)) {
        let dir = std::env::temp_dir().join(format!("certloop-end-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config =
            AcmeConfig::new(["end.example"], &dir).directory_url("https://127.0.0.1:1/dir");
        end(launch(config).await.expect("launch"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while certloop_acme::testing::DirStore::open(&dir).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the driver did not end"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dropping_every_handle_warns_and_stopping_on_purpose_does_not() {
        let dropped = logs_of(launch_and_end("dropped", drop));
        assert!(
            dropped.contains("WARN") && dropped.contains("every AcmeHandle was dropped"),
            "{dropped}"
        );
        let stopped = logs_of(launch_and_end("stopped", AcmeHandle::stop));
        assert!(
            !stopped.contains("every AcmeHandle was dropped"),
            "{stopped}"
        );
    }

    #[test]
    fn subscriptions_end_when_the_driver_ends() {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        runtime.block_on(async {
            let dir = std::env::temp_dir().join(format!("certloop-subs-{}", std::process::id()));
            let config =
                AcmeConfig::new(["subs.example"], &dir).directory_url("https://127.0.0.1:1/dir");
            let acme = launch(config).await.expect("launch");
            let (before, kept) = (acme.subscribe(), acme.clone());
            acme.stop();
            let ends = |events: LifecycleEvents| async move {
                let drained = async { while events.next().await.is_some() {} };
                tokio::time::timeout(Duration::from_secs(10), drained)
                    .await
                    .is_ok()
            };
            assert!(
                ends(before).await,
                "a subscription made before the stop did not end"
            );
            assert!(
                ends(kept.subscribe()).await,
                "one made after the end did not end"
            );
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn a_panic_in_blocking_work_reaches_the_caller() {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let caught = runtime.block_on(async {
            let work = TokioRuntime::current().unblock(Box::new(|| panic!("in the blocking pool")));
            futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work)).await
        });
        assert!(caught.is_err());
    }
}
