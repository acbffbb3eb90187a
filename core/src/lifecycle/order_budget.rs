//! The order budget: whatever the policy and the CA do (successes that are at once due for
//! renewal, a CA that issues certificates already expiring), at most [`ORDER_BUDGET`] orders
//! start in any rolling hour, or within one lifetime of the served certificate when that is
//! shorter (a 60-second certificate needs an order every 40 seconds).

use std::time::Duration;

use crate::time::UnixTime;

/// Orders per certificate in any rolling hour (or lifetime of the served certificate, if
/// shorter), at most.
pub const ORDER_BUDGET: usize = 8;

/// The budget's window, unless the served certificate lives shorter.
const WINDOW: Duration = Duration::from_secs(3600);
/// The shortest window, whatever the certificate: at most 8 orders a minute.
const MIN_WINDOW: Duration = Duration::from_secs(60);

/// The window for a served certificate living `lifetime` (`None`: nothing served yet).
pub(super) fn window(lifetime: Option<Duration>) -> Duration {
    lifetime.map_or(WINDOW, |l| l.clamp(MIN_WINDOW, WINDOW))
}

/// The start times of the last [`ORDER_BUDGET`] orders.
#[derive(Clone, Debug)]
pub(super) struct OrderBudget {
    /// A ring; `EPOCH` where unused.
    starts: [UnixTime; ORDER_BUDGET],
    /// The oldest start, overwritten by the next one.
    next: usize,
}

impl OrderBudget {
    pub(super) fn new() -> Self {
        Self {
            starts: [UnixTime::EPOCH; ORDER_BUDGET],
            next: 0,
        }
    }

    /// Counts an order started at `now`.
    pub(super) fn spend(&mut self, now: UnixTime) {
        self.starts[self.next] = now;
        self.next = (self.next + 1) % ORDER_BUDGET;
    }

    /// The earliest time, not before `wanted`, at which another order fits the budget of
    /// [`ORDER_BUDGET`] orders per `window`.
    pub(super) fn earliest(&self, wanted: UnixTime, window: Duration) -> UnixTime {
        wanted.max(self.starts[self.next].saturating_add(window))
    }

    /// The wall clock was set back by `by`: the recorded starts move with it, so the budget
    /// keeps measuring an hour of elapsed time.
    pub(super) fn shift_back(&mut self, by: Duration) {
        for start in &mut self.starts {
            *start = start.saturating_sub(by);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = UnixTime::from_secs(1_800_000_000);

    #[test]
    fn a_full_budget_waits_an_hour_after_its_oldest_order() {
        let mut budget = OrderBudget::new();
        assert_eq!(budget.earliest(T0, WINDOW), T0);
        for i in 0..ORDER_BUDGET as u64 {
            budget.spend(T0.saturating_add(Duration::from_secs(i * 60)));
        }
        assert_eq!(budget.earliest(T0, WINDOW), T0.saturating_add(WINDOW));
        budget.spend(T0.saturating_add(WINDOW));
        let second = T0.saturating_add(Duration::from_secs(60));
        assert_eq!(budget.earliest(T0, WINDOW), second.saturating_add(WINDOW));
        let later = T0.saturating_add(Duration::from_secs(86_400));
        assert_eq!(budget.earliest(later, WINDOW), later);
        // For 60-second certificates the window is a minute: the same budget, sixty times an hour.
        let minute = window(Some(Duration::from_secs(60)));
        assert_eq!(budget.earliest(T0, minute), second.saturating_add(minute));
        assert_eq!(window(Some(Duration::from_secs(1))), minute);
        assert_eq!(window(Some(Duration::from_secs(6 * 86_400))), WINDOW);
        assert_eq!(window(None), WINDOW);
    }

    #[test]
    fn shifting_back_keeps_the_elapsed_time() {
        let mut budget = OrderBudget::new();
        for _ in 0..ORDER_BUDGET {
            budget.spend(T0);
        }
        let by = Duration::from_secs(7200);
        budget.shift_back(by);
        let now = T0.saturating_sub(by);
        assert_eq!(budget.earliest(now, WINDOW), now.saturating_add(WINDOW));
    }
}
