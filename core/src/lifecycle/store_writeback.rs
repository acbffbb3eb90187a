//! Writing the served certificate back to the cache: one write at a time, a certificate
//! installed meanwhile written once that write ends, a failed write retried later.

use std::time::Duration;

use super::timer::Timer;
use crate::event::RequestId;
use crate::time::UnixTime;

/// The state of the cache write-back.
#[derive(Clone, Debug, Default)]
pub(super) struct StoreWriteBack {
    in_flight: Option<RequestId>,
    /// A newer certificate was installed while a write was in flight.
    dirty: bool,
    retry: Timer,
    failures: u32,
}

/// How a write the adapter reported on ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriteEnded {
    /// Not the write in flight: a late or duplicate report.
    Stale,
    /// Written; `rewrite` when a newer certificate is waiting to be written.
    Written { rewrite: bool },
    /// Failed for the `failures`-th time in a row; the caller schedules a retry.
    Failed { failures: u32 },
}

impl StoreWriteBack {
    /// `true` while a write is in flight; the newest certificate is then written after it.
    pub(super) fn defer_if_busy(&mut self) -> bool {
        self.dirty |= self.in_flight.is_some();
        self.in_flight.is_some()
    }

    /// A write starts as `request`.
    pub(super) fn begin(&mut self, request: RequestId) {
        self.in_flight = Some(request);
        self.dirty = false;
        self.retry.clear();
    }

    /// The adapter reported on `request`.
    pub(super) fn finish(&mut self, request: RequestId, written: bool) -> WriteEnded {
        if self.in_flight != Some(request) {
            return WriteEnded::Stale;
        }
        self.in_flight = None;
        if written {
            self.failures = 0;
            WriteEnded::Written {
                rewrite: self.dirty,
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            WriteEnded::Failed {
                failures: self.failures,
            }
        }
    }

    /// Writes again at `at`.
    pub(super) fn schedule_retry(&mut self, at: UnixTime) {
        self.retry.set(at);
    }

    /// When the next retry is due, if one is scheduled.
    pub(super) fn wake(&self) -> Option<UnixTime> {
        self.retry.at()
    }

    /// `true` once, when the scheduled retry is due at `now`.
    pub(super) fn take_due(&mut self, now: UnixTime) -> bool {
        self.retry.take_due(now)
    }

    /// The wall clock was set back by `by`: a retry keeps its remaining wait.
    pub(super) fn shift_back(&mut self, by: Duration) {
        self.retry.shift_back(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_installed_during_a_write_is_written_after_it() {
        let mut store = StoreWriteBack::default();
        assert!(!store.defer_if_busy());
        store.begin(RequestId(1));
        assert!(store.defer_if_busy());
        assert_eq!(store.finish(RequestId(7), true), WriteEnded::Stale);
        assert_eq!(
            store.finish(RequestId(1), true),
            WriteEnded::Written { rewrite: true }
        );
        assert_eq!(store.finish(RequestId(1), true), WriteEnded::Stale);
    }

    #[test]
    fn failures_count_up_until_a_write_succeeds() {
        let mut store = StoreWriteBack::default();
        let t = UnixTime::from_secs(1_000);
        for n in 1..=3 {
            store.begin(RequestId(n.into()));
            assert_eq!(
                store.finish(RequestId(n.into()), false),
                WriteEnded::Failed { failures: n }
            );
            store.schedule_retry(t);
        }
        store.shift_back(Duration::from_secs(400));
        assert_eq!(store.wake(), Some(UnixTime::from_secs(600)));
        assert!(!store.take_due(UnixTime::from_secs(599)));
        assert!(store.take_due(UnixTime::from_secs(600)));
        assert!(!store.take_due(UnixTime::from_secs(600)));
        store.begin(RequestId(9));
        assert_eq!(
            store.finish(RequestId(9), true),
            WriteEnded::Written { rewrite: false }
        );
    }
}
