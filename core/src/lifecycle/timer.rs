//! A timer that a sub-state may set: due once, and moved back with a wall clock set back.

use std::time::Duration;

use crate::time::UnixTime;

/// An optional point in time at which something is due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Timer(Option<UnixTime>);

impl Timer {
    /// Due at `at`.
    pub(super) fn set(&mut self, at: UnixTime) {
        self.0 = Some(at);
    }

    /// Not due at all.
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }

    /// When it is due, if set.
    pub(super) fn at(self) -> Option<UnixTime> {
        self.0
    }

    /// `true` once, when it is due at `now` (it is cleared then).
    pub(super) fn take_due(&mut self, now: UnixTime) -> bool {
        let due = self.0.is_some_and(|at| at <= now);
        if due {
            self.0 = None;
        }
        due
    }

    /// The wall clock was set back by `by`: the timer keeps its remaining wait.
    pub(super) fn shift_back(&mut self, by: Duration) {
        if let Some(at) = &mut self.0 {
            *at = at.saturating_sub(by);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_and_shifted_back_with_the_clock() {
        let mut timer = Timer::default();
        assert!(!timer.take_due(UnixTime::from_secs(10)));
        timer.set(UnixTime::from_secs(1_000));
        timer.shift_back(Duration::from_secs(400));
        assert_eq!(timer.at(), Some(UnixTime::from_secs(600)));
        assert!(!timer.take_due(UnixTime::from_secs(599)));
        assert!(timer.take_due(UnixTime::from_secs(600)));
        assert!(!timer.take_due(UnixTime::from_secs(600)));
        timer.set(UnixTime::from_secs(5));
        timer.clear();
        assert_eq!(timer.at(), None);
    }
}
