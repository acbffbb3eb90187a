//! Fleet mode: several instances serving the same names share certificates, the account and
//! challenge answers through Redis, and order each renewal once, under a fenced lease.
//! `docs/fleet.md` states the protocol and why a stale writer cannot win.

mod challenge;
mod client;
mod health;
mod keys;
mod member;
mod probe;
mod settings;
mod watch;
mod window;

pub(crate) use challenge::SharedChallenge;
pub(crate) use client::{SharedCert, client_for};
pub use health::FleetStorageStatus;
pub(crate) use health::StorageHealth;
pub(crate) use keys::Keys;
pub(crate) use member::{FleetMember, Obtained, cert_id, certificate_of};
pub use probe::{FleetProbe, ProbeLease};
pub use settings::RedisSettings;
pub(crate) use watch::{Listeners, watch};
pub(crate) use window::SharedWindow;
