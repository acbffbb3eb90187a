//! The order budget: whatever the policy and the CA do (short-lived certificates, successes that
//! are at once due for renewal), at most [`ORDER_BUDGET`] orders start in any rolling hour.

use std::time::Duration;

use crate::time::UnixTime;

/// Orders per certificate in any rolling hour, at most.
pub const ORDER_BUDGET: usize = 8;

const WINDOW: Duration = Duration::from_secs(3600);

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

    /// The earliest time, not before `wanted`, at which another order fits the budget.
    pub(super) fn earliest(&self, wanted: UnixTime) -> UnixTime {
        wanted.max(self.starts[self.next].saturating_add(WINDOW))
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
        assert_eq!(budget.earliest(T0), T0);
        for i in 0..ORDER_BUDGET as u64 {
            budget.spend(T0.saturating_add(Duration::from_secs(i * 60)));
        }
        assert_eq!(budget.earliest(T0), T0.saturating_add(WINDOW));
        budget.spend(T0.saturating_add(WINDOW));
        let second = T0.saturating_add(Duration::from_secs(60));
        assert_eq!(budget.earliest(T0), second.saturating_add(WINDOW));
        let later = T0.saturating_add(Duration::from_secs(86_400));
        assert_eq!(budget.earliest(later), later);
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
        assert_eq!(budget.earliest(now), now.saturating_add(WINDOW));
    }
}
