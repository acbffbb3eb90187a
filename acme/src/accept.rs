//! Accepting connections without spinning: when `accept` fails (`EMFILE`, `ENFILE`,
//! `ENOBUFS`, `ECONNABORTED`, ...), wait a few milliseconds, growing to about a second while
//! the errors go on, and log at most one line a second with a count of what was suppressed.
//! Every accept loop (the proxy's TLS and plain-HTTP listeners and the library's HTTP-01
//! responder, on either runtime) goes through [`accept_with_backoff`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runtime::Runtime;

/// The first wait after an accept error.
const FIRST_DELAY: Duration = Duration::from_millis(5);
/// The longest wait between two attempts while accepting keeps failing.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per listener per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What to do after one accept error: how long to wait, and whether to log it.
#[derive(Debug, PartialEq, Eq)]
pub struct AcceptErrorStep {
    /// Wait this long before the next `accept`.
    pub delay: Duration,
    /// `Some(n)`: log this error now, noting `n` earlier errors that were not logged.
    pub log_with_suppressed: Option<u64>,
}

/// The backoff and log rate limit of one listener's accept loop (pure: time is passed in).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    consecutive_errors: u32,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    /// An accept error happened at `now`.
    pub fn on_error(&mut self, now: Instant) -> AcceptErrorStep {
        let doublings = self.consecutive_errors.min(16);
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
        let log_now = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
        let log_with_suppressed = if log_now {
            self.last_logged = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        };
        AcceptErrorStep {
            delay,
            log_with_suppressed,
        }
    }

    /// A connection was accepted: the next error starts from the shortest wait again. Returns
    /// how many errors went unlogged since the last line, so that they can be reported now.
    pub fn on_success(&mut self) -> Option<u64> {
        self.consecutive_errors = 0;
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
    }
}

/// Calls `accept` until it succeeds, backing off and rate-limiting the log on errors; never
/// gives up (a listener that stopped accepting would silently stop HTTP-01 renewals).
pub async fn accept_with_backoff<R, T, F, Fut>(
    rt: &R,
    listener: &str,
    backoff: &mut AcceptBackoff,
    mut accept: F,
) -> T
where
    R: Runtime,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(accepted) => {
                if let Some(suppressed) = backoff.on_success() {
                    tracing::warn!(
                        listener,
                        suppressed,
                        "accepting again; {suppressed} more accept errors since the last line"
                    );
                }
                return accepted;
            }
            Err(error) => {
                let step = backoff.on_error(Instant::now());
                if let Some(suppressed) = step.log_with_suppressed {
                    tracing::warn!(
                        listener,
                        suppressed,
                        "accept failed: {error}; retrying in {:?} ({suppressed} similar errors not logged since the last line)",
                        step.delay
                    );
                }
                rt.sleep(step.delay).await;
            }
        }
    }
}

/// A peer's address as the client it is: an IPv4-mapped IPv6 address (from a dual-stack
/// listener) is the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whom a per-client cap counts a connection against: an IPv4 address, or an IPv6 /64 (one
/// subscriber's usual allocation, so a client cannot escape the cap by rotating addresses).
fn client_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Open connections per client (see [`canonical_ip`] and the /64 rule), capped.
#[derive(Debug)]
pub struct PerClientSlots {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<PerClientSlots>,
    key: IpAddr,
}

impl PerClientSlots {
    /// At most `max` connections per client; 0 is unlimited.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or `None` if its client is at the cap (or the cap
    /// is 0, meaning nothing is counted).
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Option<ClientSlot>, AtClientCap> {
        if self.max == 0 {
            return Ok(None);
        }
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(AtClientCap);
        }
        *count += 1;
        Ok(Some(ClientSlot {
            slots: self.clone(),
            key,
        }))
    }

    /// How many clients hold at least one slot.
    pub fn clients(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A client already holds as many connections as the cap allows.
#[derive(Debug, PartialEq, Eq)]
pub struct AtClientCap;

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_slots_cap_count_mapped_and_slash_64_together_and_free_on_drop() {
        let slots = PerClientSlots::new(2);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = slots.take(v4).unwrap();
        let second = slots.take(mapped).unwrap();
        assert_eq!(slots.take(v4).unwrap_err(), AtClientCap);
        let other = slots.take("192.0.2.2".parse().unwrap()).unwrap();
        drop(first);
        assert!(slots.take(v4).unwrap().is_some());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let held = (slots.take(a).unwrap(), slots.take(same_64).unwrap());
        assert_eq!(slots.take(a).unwrap_err(), AtClientCap);
        assert!(slots.take(next_64).unwrap().is_some());
        drop((second, other, held));
        assert_eq!(slots.clients(), 0, "freed clients are forgotten");
        assert!(
            PerClientSlots::new(0).take(v4).unwrap().is_none(),
            "0 is unlimited"
        );
    }

    #[test]
    fn delay_grows_from_milliseconds_to_a_second_and_resets_on_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let delays: Vec<_> = (0..12).map(|_| backoff.on_error(now).delay).collect();
        assert_eq!(delays[0], Duration::from_millis(5));
        assert_eq!(delays[1], Duration::from_millis(10));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[11], MAX_DELAY);
        assert_eq!(
            backoff.on_success(),
            Some(11),
            "unlogged errors are reported"
        );
        assert_eq!(backoff.on_error(now).delay, FIRST_DELAY);
    }

    #[test]
    fn logs_at_most_once_a_second_with_the_suppressed_count() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.on_error(start).log_with_suppressed, Some(0));
        for ms in [1, 100, 500, 999] {
            let step = backoff.on_error(start + Duration::from_millis(ms));
            assert_eq!(step.log_with_suppressed, None, "at {ms} ms");
        }
        let step = backoff.on_error(start + Duration::from_millis(1000));
        assert_eq!(step.log_with_suppressed, Some(4));
        // The count starts again after each logged line, and success does not reset the rate.
        assert_eq!(backoff.on_success(), None, "nothing unlogged");
        let step = backoff.on_error(start + Duration::from_millis(1500));
        assert_eq!(step.log_with_suppressed, None);
    }
}
