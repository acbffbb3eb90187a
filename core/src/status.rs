//! What an operator wants to know about one certificate, read from its lifecycle at any time:
//! what is served, when it renews, and how the last orders went.

use crate::event::{CertInfo, OrderError};
use crate::time::UnixTime;

/// A snapshot of one certificate's lifecycle ([`crate::CertLifecycle::status`],
/// [`crate::CertFleet::status`]). Reading it changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleStatus {
    /// The certificate served, once one is installed.
    pub serving: Option<CertInfo>,
    /// When the served certificate is renewed, absent failures (the policy's point, moved into
    /// the CA's renewal window when it offers one).
    pub renew_at: Option<UnixTime>,
    /// The CA's suggested renewal window (ARI) for the served certificate, once it gave one.
    pub ari_window: Option<(UnixTime, UnixTime)>,
    /// Consecutive failed orders (0 after a success).
    pub failures: u32,
    /// The most recent failure of the current streak.
    pub last_error: Option<OrderError>,
    /// When the next order starts, if none is in flight and the lifecycle is not waiting for
    /// the cache (a failure streak's backoff, the renewal point, or the order budget).
    pub next_order_at: Option<UnixTime>,
    /// An order is in flight.
    pub ordering: bool,
    /// A certificate is installed and always served from now on.
    pub ready: bool,
    /// Startup failed: nothing was served and nothing will be.
    pub failed: bool,
}
