//! Whether this instance reaches the fleet's Redis, as its latest command found it: what
//! [`crate::AcmeHandle::fleet_storage`] reports, and the proxy's metrics show.

use std::sync::Mutex;

use certloop_core::UnixTime;

/// Whether this instance reaches its fleet's Redis. While it does not, no certificate is
/// ordered (there is no lease to take): the served certificate's end of validity is when an
/// operator must have brought Redis back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStorageStatus {
    /// Whether the latest command to Redis succeeded.
    pub reachable: bool,
    /// When the current state began: the first command that found it.
    pub since: UnixTime,
}

/// The latest state, updated by every command (`None` before the first one).
#[derive(Debug, Default)]
pub(crate) struct StorageHealth(Mutex<Latest>);

#[derive(Debug, Default)]
struct Latest {
    status: Option<FleetStorageStatus>,
    /// When the command whose outcome set it started.
    started: Option<UnixTime>,
}

impl StorageHealth {
    /// Records the outcome of a command that started at `started`. An outcome older than the
    /// one recorded is ignored (a command that timed out after Redis came back does not
    /// report it down again); `since` moves only when the state changes.
    pub(crate) fn record(&self, reachable: bool, started: UnixTime) {
        let mut latest = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if latest.started.is_some_and(|newest| started < newest) {
            return;
        }
        latest.started = Some(started);
        if latest.status.is_none_or(|s| s.reachable != reachable) {
            latest.status = Some(FleetStorageStatus {
                reachable,
                since: started,
            });
        }
    }

    pub(crate) fn get(&self) -> Option<FleetStorageStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dates_from_the_first_command_that_found_it() {
        let health = StorageHealth::default();
        assert_eq!(health.get(), None);
        let at = UnixTime::from_millis;
        health.record(true, at(1_000));
        health.record(true, at(2_000));
        assert_eq!(
            health.get(),
            Some(FleetStorageStatus {
                reachable: true,
                since: at(1_000)
            })
        );
        health.record(false, at(3_000));
        health.record(false, at(4_000));
        assert_eq!(
            health.get(),
            Some(FleetStorageStatus {
                reachable: false,
                since: at(3_000)
            })
        );
        health.record(true, at(5_000));
        assert_eq!(
            health.get().map(|s| (s.reachable, s.since)),
            Some((true, at(5_000)))
        );
        // A command that started during the outage and failed late changes nothing.
        health.record(false, at(3_500));
        assert_eq!(
            health.get().map(|s| (s.reachable, s.since)),
            Some((true, at(5_000)))
        );
    }
}
