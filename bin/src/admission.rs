//! Connection caps of one listener: a total cap (at the cap its accept loop waits, so new
//! connections queue in the kernel's backlog and nothing spins) and a per-client cap
//! (a connection over it is closed at once, so one client cannot take every slot).

use std::net::IpAddr;
use std::sync::Arc;

use certloop_acme::adapter::{ClientSlot, PerClientSlots};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shards::ShardLoad;

/// The caps of one listener.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_client: Arc<PerClientSlots>,
}

/// One admitted connection; dropping it (after the connection and any tunnel it became have
/// ended) frees its slots and its place on its shard.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
    _shard: Option<ShardLoad>,
}

impl Admission {
    /// Caps of `max_connections` in total and `max_per_client` per client (0: unlimited).
    pub(crate) fn new(max_connections: usize, max_per_client: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_client: PerClientSlots::new(max_per_client),
        }
    }

    /// Waits for a free slot under the total cap.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"))
    }

    /// Admits a connection from `ip` holding `slot`, or `None` if its client is at its cap.
    pub(crate) fn admit(&self, slot: OwnedSemaphorePermit, ip: IpAddr) -> Option<Admitted> {
        let client = self.per_client.take(ip).ok()?;
        Some(Admitted {
            _slot: slot,
            _client: client,
            _shard: None,
        })
    }
}

impl Admitted {
    /// Counts the connection as open on its shard for as long as it is admitted.
    pub(crate) fn on_shard(mut self, load: ShardLoad) -> Self {
        self._shard = Some(load);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_total_cap_makes_the_next_slot_wait_and_the_client_cap_refuses() {
        let admission = Admission::new(2, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held = admission.admit(admission.slot().await, ip).unwrap();
        assert!(admission.admit(admission.slot().await, ip).is_none());
        let other = admission
            .admit(admission.slot().await, "192.0.2.2".parse().unwrap())
            .unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), admission.slot());
        assert!(
            waiting.await.is_err(),
            "a third slot was granted at the cap"
        );
        drop((held, other));
        let _ = admission.slot().await;
    }
}
