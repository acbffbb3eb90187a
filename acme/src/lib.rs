//! `certloop-acme`: everything both runtime adapters need, written once and generic over a
//! four-operation runtime seam ([`adapter::Runtime`]: connect, sleep, spawn, unblock; plus
//! the wall clock, the system's by default).
//!
//! Embedders use `certloop-tokio` or `certloop-smol`, which re-export what is at this crate's
//! root: [`AcmeConfig`], [`AcmeHandle`] and the types around them. [`adapter`] holds the
//! building blocks a runtime adapter (and certloop's proxy) is made of. Everything else is
//! private; `testing` (hidden) opens what certloop's own simulator replaces, with no
//! stability promise.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod accept;
mod account;
mod cache;
mod cache_fs;
mod cached_status;
mod config;
mod dns01;
mod dns_wire;
mod driver;
#[doc(hidden)]
pub mod example;
mod fleet;
mod handle;
mod http01;
mod http_client;
mod incoming;
mod ip_identifier;
mod key_type;
mod order;
mod prepared;
mod profiles;
mod runtime;
mod status;
mod store;
mod tls;

pub use account::{AccountInfo, RevocationReason};
pub use config::{
    AcmeConfig, DEFAULT_MAX_CONCURRENT_ORDERS, Directory, Issuer, LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING, StartError,
};
pub use dns01::Rfc2136Settings;
pub use fleet::{FleetStorageStatus, RedisSettings};
pub use handle::{AcmeHandle, LifecycleEvent, LifecycleEvents};
pub use http01::{
    Http01Tokens, RESPONDER_DEADLINE, RESPONDER_MAX_CONNECTIONS, RESPONDER_MAX_PER_CLIENT,
};
pub use incoming::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_CLIENT, READY_QUEUE};
pub use key_type::KeyType;
pub use order::ChallengeKind;
pub use status::{
    AcmeOperation, CertStatus, DURATION_BUCKETS, DurationHistogram, OrderTally, ServedCert,
};
pub use store::StoreError;
pub use tls::{CertResolver, TlsAlpn01, server_config};

/// What a runtime crate re-exports for embedders, listed once for both
/// (`pub use certloop_acme::embedding::*`).
#[doc(hidden)]
pub mod embedding {
    pub use crate::{
        AccountInfo, AcmeConfig, AcmeHandle, AcmeOperation, CertResolver, CertStatus,
        ChallengeKind, DEFAULT_MAX_CONCURRENT_ORDERS, DURATION_BUCKETS, Directory,
        DurationHistogram, FleetStorageStatus, HANDSHAKE_TIMEOUT, Http01Tokens, Issuer, KeyType,
        LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING, LifecycleEvent, LifecycleEvents,
        MAX_HANDSHAKES, MAX_HANDSHAKES_PER_CLIENT, OrderTally, READY_QUEUE, RESPONDER_DEADLINE,
        RESPONDER_MAX_CONNECTIONS, RESPONDER_MAX_PER_CLIENT, RedisSettings, RevocationReason,
        Rfc2136Settings, ServedCert, StartError, StoreError, TlsAlpn01, server_config,
    };
    pub use certloop_core::{Policy, Ratio, UnixTime};
}

/// The building blocks of a runtime adapter (`certloop-tokio` and `certloop-smol` are made of
/// these) and of certloop's proxy: the runtime seam, the driver's entry point, the TLS accept
/// loop, the HTTP-01 responder, accept backoff and per-client caps, and the crypto provider.
pub mod adapter {
    pub use crate::accept::{
        AcceptBackoff, AcceptErrorStep, AtClientCap, ClientSlot, PerClientSlots,
        accept_with_backoff, canonical_ip,
    };
    pub use crate::driver::launch;
    pub use crate::http01::serve_responder;
    pub use crate::incoming::{Handshake, Incoming, spawn_incoming};
    pub use crate::runtime::{BoxFuture, Runtime, system_clock, timeout};
    pub use crate::tls::{ACME_TLS_ALPN, certified_key, provider};
}

/// What certloop's own simulator and tests replace or inspect. Not part of the API: it may
/// change in any release.
#[doc(hidden)]
pub mod testing {
    pub use crate::cache::{
        CacheError, CachedCertFile, account_file_name, cert_file_name, decode_cert_file,
        decode_retry_state, encode_cert_file, encode_retry_state,
    };
    pub use crate::cache_fs::{CacheFs, DirState, LockError, LockGuard, StdFs};
    pub use crate::driver::{Observer, Seams, launch_with};
    pub use crate::fleet::{FleetProbe, ProbeLease};
    pub use crate::http_client::{HyperIo, Transport, TransportResponse};
    pub use crate::http01::{RequestHead, read_request_head, write_response};
    pub use crate::store::DirStore;
    pub use crate::tls::{ChallengeOwner, certified_key_from_bundle};
}
