//! Connection caps of one listener: a total cap (at the cap the accept loop waits, so new
//! connections queue in the kernel's backlog and nothing spins) and a per-client-address cap
//! (a connection over it is closed at once, so one address cannot take every slot).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps of one listener.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its slots.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _ip: Option<IpSlot>,
}

struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Caps of `max_connections` in total and `max_per_ip` per address (0: unlimited).
    pub(crate) fn new(max_connections: usize, max_per_ip: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_ip: Arc::new(PerIp {
                max: max_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Waits for a free slot under the total cap.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"))
    }

    /// Admits a connection from `ip` holding `slot`, or `None` if `ip` is at its cap.
    pub(crate) fn admit(&self, slot: OwnedSemaphorePermit, ip: IpAddr) -> Option<Admitted> {
        if self.per_ip.max == 0 {
            return Some(Admitted {
                _slot: slot,
                _ip: None,
            });
        }
        let ip = canonical(ip);
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.per_ip.max {
            return None;
        }
        *count += 1;
        Some(Admitted {
            _slot: slot,
            _ip: Some(IpSlot {
                per_ip: self.per_ip.clone(),
                ip,
            }),
        })
    }
}

/// An IPv4-mapped IPv6 address counts as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_ip_cap_refuses_and_frees_on_drop() {
        let admission = Admission::new(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(admission.slot().await, a).unwrap();
        let second = admission.admit(admission.slot().await, mapped).unwrap();
        assert!(admission.admit(admission.slot().await, a).is_none());
        let other = admission.admit(admission.slot().await, b).unwrap();
        drop(first);
        assert!(admission.admit(admission.slot().await, a).is_some());
        drop((second, other));
        assert!(
            admission.per_ip.open.lock().unwrap().is_empty(),
            "freed entries are removed"
        );
    }

    #[tokio::test]
    async fn the_total_cap_makes_the_next_slot_wait() {
        let admission = Admission::new(1, 0);
        let held = admission
            .admit(admission.slot().await, "192.0.2.1".parse().unwrap())
            .unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), admission.slot());
        assert!(
            waiting.await.is_err(),
            "a second slot was granted at the cap"
        );
        drop(held);
        let _ = admission.slot().await;
    }
}
