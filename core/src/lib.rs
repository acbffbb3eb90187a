//! `certloop-core`: the lifecycle of an ACME certificate as a pure state machine.
//!
//! The core decides; adapters act. Events go in with the current wall-clock time as a value
//! ([`CertLifecycle::handle`]); actions come out ([`CertLifecycle::poll_action`]) and carry
//! everything the adapter needs (an order id, the domains, the certificate); the next wake
//! time comes from [`CertLifecycle::poll_timeout`]. The crate has no dependencies, performs no
//! IO, reads no clock, never sleeps and draws randomness only from a seed in [`CertConfig`]:
//! the same configuration, seed and event sequence always produce the same actions.
//!
//! # The promise
//! Never start without a valid certificate, and always keep serving once a valid one exists:
//!
//! | Situation | Behaviour |
//! |---|---|
//! | First start, no cached cert, ACME unreachable | [`Action::FailStartup`] within [`Policy::startup_timeout`] |
//! | First start, no cached cert, ACME succeeds | [`Action::InstallCert`], [`Action::Ready`] |
//! | Cached cert, ACME unreachable for renewal | cached cert installed and ready; warning notice |
//! | Renewal fails after start | keep serving, warning notice, retry with backoff |
//! | Cached cert expired, renewal fails at start | [`Action::FailStartup`] |
//! | Cert expires while running | keep serving, error notice, keep retrying |
//!
//! # Driving it
//! ```
//! use std::sync::Arc;
//! use certloop_core::{Action, CachedCert, CertConfig, CertLifecycle, Event, Policy, UnixTime};
//!
//! let cert = CertConfig::new(["example.com"], 42).unwrap();
//! let now = UnixTime::from_secs(1_800_000_000);
//! let mut lifecycle = CertLifecycle::new(Arc::new(Policy::default()), &cert, now).unwrap();
//! let mut order = None;
//! while let Some(action) = lifecycle.poll_action() {
//!     if let Action::LoadCache { .. } = action {
//!         lifecycle.handle(now, Event::CacheLoaded { cert: CachedCert::Missing, retry: None });
//!     }
//!     if let Action::StartOrder { order: id, .. } = action {
//!         order = Some(id); // the adapter runs the ACME order and reports back with `id`
//!     }
//! }
//! assert!(order.is_some());
//! assert!(lifecycle.poll_timeout().is_some()); // the startup deadline
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod event;
mod fleet;
mod lifecycle;
mod rng;
mod status;
mod time;

pub use config::{
    CertConfig, ConfigError, Policy, Ratio, is_ip_address, name_covers, validate_name,
};
pub use event::{
    Action, CachedCert, CertBundle, CertInfo, CertProblem, Certificate, Event, FailureKind, Level,
    Notice, OrderError, OrderId, RenewalInfo, RequestId, RetryState, Serving, StartupFailure,
};
pub use fleet::{CertFleet, CertId};
pub use lifecycle::{CertLifecycle, ORDER_BUDGET};
pub use rng::SplitMix64;
pub use status::LifecycleStatus;
pub use time::{Human, UnixTime};
