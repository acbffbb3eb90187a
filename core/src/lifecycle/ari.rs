//! Polling the CA's renewal information (ARI, RFC 9773) for the served certificate: one request
//! at a time, asked again when the CA says (within the policy's bounds), never again once the
//! CA turns out not to offer it.

use std::time::Duration;

use super::timer::Timer;
use crate::config::Policy;
use crate::event::{RenewalInfo, RequestId};
use crate::time::UnixTime;

/// The state of ARI polling for the served certificate.
#[derive(Clone, Debug, Default)]
pub(super) struct AriPoll {
    next_check: Timer,
    in_flight: Option<RequestId>,
    unsupported: bool,
    /// The last window applied; the same window is not re-drawn (that would drift to its start).
    window: Option<(UnixTime, UnixTime)>,
}

/// What an answer from the CA means for the served certificate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AriAnswer {
    /// Not the request in flight: a late or duplicate answer.
    Stale,
    /// A window not applied before; the caller applies it.
    NewWindow { start: UnixTime, end: UnixTime },
    /// Nothing to apply (the same window again, a failure, or no ARI at this CA).
    Nothing,
}

impl AriPoll {
    /// A new certificate is served: forget the old one's window and ask at `now`.
    pub(super) fn restart(&mut self, now: UnixTime) {
        self.in_flight = None;
        self.window = None;
        self.next_check.clear();
        if !self.unsupported {
            self.next_check.set(now);
        }
    }

    /// `true` when no request is in flight and the CA may offer ARI.
    pub(super) fn can_ask(&self) -> bool {
        !self.unsupported && self.in_flight.is_none()
    }

    /// A request starts as `request`.
    pub(super) fn begin(&mut self, request: RequestId) {
        self.in_flight = Some(request);
    }

    /// The CA's answer to `request`, at `now`.
    pub(super) fn answered(
        &mut self,
        now: UnixTime,
        request: RequestId,
        info: RenewalInfo,
        policy: &Policy,
    ) -> AriAnswer {
        if self.in_flight != Some(request) {
            return AriAnswer::Stale;
        }
        self.in_flight = None;
        let ask_again = |retry_after: Option<Duration>| {
            let wait = retry_after.unwrap_or(policy.renewal_info_interval);
            now.saturating_add(wait.clamp(policy.retry_min, policy.retry_after_max))
        };
        match info {
            RenewalInfo::Window {
                start,
                end,
                retry_after,
            } if start <= end => {
                self.next_check.set(ask_again(retry_after));
                if self.window == Some((start, end)) {
                    return AriAnswer::Nothing;
                }
                self.window = Some((start, end));
                AriAnswer::NewWindow { start, end }
            }
            RenewalInfo::Unsupported => {
                self.unsupported = true;
                AriAnswer::Nothing
            }
            RenewalInfo::Window { retry_after, .. } | RenewalInfo::Failed { retry_after } => {
                self.next_check.set(ask_again(retry_after));
                AriAnswer::Nothing
            }
        }
    }

    /// The CA's window for the served certificate, once it gave one.
    pub(super) fn window(&self) -> Option<(UnixTime, UnixTime)> {
        self.window
    }

    /// When the next check is due, if one is scheduled.
    pub(super) fn wake(&self) -> Option<UnixTime> {
        self.next_check.at()
    }

    /// `true` once, when the scheduled check is due at `now`.
    pub(super) fn take_due(&mut self, now: UnixTime) -> bool {
        self.next_check.take_due(now)
    }

    /// The wall clock was set back by `by`: the next check keeps its remaining wait.
    pub(super) fn shift_back(&mut self, by: Duration) {
        self.next_check.shift_back(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = UnixTime::from_secs(1_800_000_000);

    fn window(start: u64, end: u64, retry_after: Option<u64>) -> RenewalInfo {
        RenewalInfo::Window {
            start: UnixTime::from_secs(start),
            end: UnixTime::from_secs(end),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_window_is_applied_once_and_asked_again_within_the_policy_bounds() {
        let policy = Policy::default();
        let mut ari = AriPoll::default();
        ari.restart(T0);
        assert!(ari.take_due(T0) && ari.can_ask());
        ari.begin(RequestId(1));
        assert!(!ari.can_ask());
        let first = ari.answered(T0, RequestId(1), window(10, 20, Some(1)), &policy);
        let (start, end) = (UnixTime::from_secs(10), UnixTime::from_secs(20));
        assert_eq!(first, AriAnswer::NewWindow { start, end });
        assert_eq!(ari.wake(), Some(T0.saturating_add(policy.retry_min)));
        ari.begin(RequestId(2));
        let again = ari.answered(T0, RequestId(2), window(10, 20, None), &policy);
        assert_eq!(again, AriAnswer::Nothing);
        assert_eq!(
            ari.wake(),
            Some(T0.saturating_add(policy.renewal_info_interval))
        );
        let late = ari.answered(T0, RequestId(2), window(10, 20, None), &policy);
        assert_eq!(late, AriAnswer::Stale);
    }

    #[test]
    fn an_inverted_window_is_a_failure_and_unsupported_stops_asking() {
        let policy = Policy::default();
        let mut ari = AriPoll::default();
        ari.begin(RequestId(1));
        let inverted = ari.answered(T0, RequestId(1), window(20, 10, None), &policy);
        assert_eq!(inverted, AriAnswer::Nothing);
        ari.shift_back(Duration::from_secs(60));
        let expected = T0.saturating_add(policy.renewal_info_interval);
        assert_eq!(
            ari.wake(),
            Some(expected.saturating_sub(Duration::from_secs(60)))
        );
        ari.begin(RequestId(2));
        let answer = ari.answered(T0, RequestId(2), RenewalInfo::Unsupported, &policy);
        assert_eq!(answer, AriAnswer::Nothing);
        ari.restart(T0);
        assert!(!ari.can_ask() && ari.wake().is_none());
    }
}
