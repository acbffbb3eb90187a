//! The fleet's Redis operations opened to certloop's own tests (through `testing`): the lease
//! and fencing protocol checked against a real Redis, one operation at a time.

use std::sync::Arc;

use crate::fleet::client::{Acquired, Lease, RedisClient, Written, client_for};
use crate::fleet::settings::RedisSettings;
use crate::runtime::Runtime;

/// One simulated instance of a fleet: its own node id and connection.
pub struct FleetProbe<R: Runtime> {
    client: Arc<RedisClient<R>>,
}

/// A lease a probe holds.
#[derive(Clone, Debug)]
pub struct ProbeLease(Lease);

impl ProbeLease {
    /// Its fencing token.
    pub fn token(&self) -> i64 {
        self.0.token
    }
}

impl<R: Runtime> FleetProbe<R> {
    /// A client for `settings` (not connected until first used).
    pub fn new(rt: R, settings: RedisSettings) -> Result<Self, String> {
        Ok(Self {
            client: client_for(rt, settings, &[])?,
        })
    }

    /// Takes the lease on `id`; `None` if another probe or instance holds it.
    pub async fn acquire(&self, id: &str) -> Result<Option<ProbeLease>, String> {
        Ok(match self.client.acquire(id).await? {
            Acquired::Held(lease) => Some(ProbeLease(lease)),
            Acquired::Busy(_) => None,
        })
    }

    /// Extends the lease; `false` if it was lost.
    pub async fn extend(&self, lease: &ProbeLease) -> Result<bool, String> {
        self.client.extend(&lease.0).await
    }

    /// Gives the lease up.
    pub async fn release(&self, lease: &ProbeLease) {
        self.client.release(&lease.0).await;
    }

    /// Writes `bundle` as the certificate's record under the lease's token; `false` if refused.
    pub async fn write_cert(&self, lease: &ProbeLease, bundle: &[u8]) -> Result<bool, String> {
        let written = self
            .client
            .write_cert(&lease.0, bundle, 0, "https://ca.test/dir");
        Ok(written.await? == Written::Yes)
    }

    /// Writes `bundle` (issued by the CA at `issuer`, a directory URL) like
    /// [`Self::write_cert`] but announces nothing, as if the notification were lost:
    /// instances learn of it from their periodic check.
    pub async fn write_cert_unannounced(
        &self,
        lease: &ProbeLease,
        bundle: &[u8],
        issuer: &str,
    ) -> Result<bool, String> {
        let written = (self.client).write_cert_announced(&lease.0, bundle, 0, issuer, false);
        Ok(written.await? == Written::Yes)
    }

    /// The certificate record for `id`: its token and bundle.
    pub async fn cert(&self, id: &str) -> Result<Option<(i64, Vec<u8>)>, String> {
        Ok(self.client.cert(id).await?.map(|c| (c.token, c.bundle)))
    }
}
