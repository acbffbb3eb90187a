//! `certloop-acme`: everything both runtime adapters need, written once and generic over a
//! four-operation [`runtime::Runtime`] seam (connect, sleep, spawn, unblock; plus the wall
//! clock, the system's by default).
//!
//! - [`accept`]: accept loops that back off on errors instead of spinning.
//! - [`cache`]: the rustls-acme compatible `DirCache` format as pure functions.
//! - [`store`]: the cache directory on disk (atomic writes, 0600/0700, lock, set-aside).
//! - [`cache_fs`]: the file operations the store is made of (the real disk, or a simulated one).
//! - [`tls`]: the one crypto provider, shared server settings, the SNI and TLS-ALPN-01 resolver.
//! - [`http01`]: HTTP-01 tokens and a minimal port-80 responder.
//! - [`incoming`]: the TLS accept loop behind both runtimes' `AcmeListener`.
//! - [`http_client`]: instant-acme's HTTP client over the seam, with timeouts and Retry-After.
//! - [`order`]: the ACME step runner (account, order, challenges, polling, finalization).
//! - [`config`]: what an embedder configures, and the errors of `launch`.
//! - [`handle`]: the handle an embedder keeps.
//! - [`driver`]: the loop that drives a `CertFleet` and carries out its actions.
//! - [`example`]: flags and the page both runtimes' `https_server` examples use.

#![forbid(unsafe_code)]

pub mod accept;
pub mod cache;
pub mod cache_fs;
pub mod config;
pub mod driver;
pub mod example;
pub mod handle;
pub mod http01;
pub mod http_client;
pub mod incoming;
pub mod order;
pub mod runtime;
pub mod store;
pub mod tls;

pub use config::{AcmeConfig, Directory, StartError};
pub use driver::launch;
pub use handle::{AcmeHandle, CertStatus, LifecycleEvent, LifecycleEvents};
pub use order::{ChallengeKind, ExternalAccount};
pub use runtime::Runtime;
