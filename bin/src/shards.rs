//! The connections' runtimes: one single-threaded tokio runtime per core, each on its own
//! thread with its own event loop. Up to [`MAX_ACCEPTING`] shards run an accept loop on each
//! listener, all taking from the socket's one queue (`listen.rs`). A connection stays on the
//! shard that accepted it, unless another serves fewer connections by more than one: then it
//! moves there once, before its first byte. It lives there, with its upstream connections
//! (each shard has its own pool: see `h1/pool.rs`).
//!
//! Why not the main multi-thread runtime: it has one event loop for all its workers, so a
//! worker that runs out of tasks sleeps on a condition variable while readiness waits in the
//! kernel until the worker holding the event loop looks. On two cores that left the machine
//! idle for 15 % of a keep-alive benchmark, against 6 % for nginx, whose worker processes each
//! wait in their own `epoll_wait` (`docs/performance.md`).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Shards that accept on each listener. Every one of them is woken for each new connection
/// and all but one find nothing, so on a machine with many cores the others only receive
/// connections moved to them.
pub(crate) const MAX_ACCEPTING: usize = 4;

thread_local! {
    /// The index of the shard whose thread this is; 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the shard running the caller (0 outside the shards, as in unit tests).
pub(crate) fn current() -> usize {
    INDEX.with(Cell::get)
}

/// One shard: its runtime, and how many connections it serves now.
struct Shard {
    handle: Handle,
    open: Arc<AtomicUsize>,
}

/// The shards; stopped by dropping the [`StopShards`] that [`Shards::start`] returned.
pub(crate) struct Shards {
    shards: Vec<Shard>,
    /// Where the search for the least loaded shard starts next, so that ties rotate.
    next: AtomicUsize,
}

/// Stops the shards when dropped: each runtime drops the tasks it still has and its thread
/// ends, joined here.
pub(crate) struct StopShards {
    stop: Option<watch::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Starts `count` shards (at least one).
    pub(crate) fn start(count: usize) -> io::Result<(Arc<Self>, StopShards)> {
        let (stop, stopped) = watch::channel(());
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            shards.push(Shard {
                handle: runtime.handle().clone(),
                open: Arc::default(),
            });
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("certloop-shard-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    // Runs every task spawned on the shard until the stop.
                    runtime.block_on(async move {
                        let _ = stopped.changed().await;
                    });
                })?;
            threads.push(thread);
        }
        let shards = Arc::new(Self {
            shards,
            next: AtomicUsize::new(0),
        });
        let stop = StopShards {
            stop: Some(stop),
            threads,
        };
        Ok((shards, stop))
    }

    /// How many shards there are.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }

    /// The runtimes of the shards that accept.
    pub(crate) fn accepting(&self) -> impl Iterator<Item = &Handle> {
        self.shards.iter().take(MAX_ACCEPTING).map(|s| &s.handle)
    }

    /// The shard to serve a connection the caller's shard just accepted: that one, unless
    /// another serves fewer connections by more than one.
    pub(crate) fn place(&self) -> usize {
        let here = current() % self.shards.len();
        let open: Vec<usize> = (self.shards.iter())
            .map(|s| s.open.load(Ordering::Relaxed))
            .collect();
        let least = least_loaded(&open, self.next.fetch_add(1, Ordering::Relaxed));
        if open[here] > open[least] + 1 {
            least
        } else {
            here
        }
    }

    /// Runs `task` in `tracker` on shard `shard`, where it counts as open until it ends.
    pub(crate) fn spawn<F>(&self, shard: usize, tracker: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shard = &self.shards[shard % self.shards.len()];
        let open = OpenCount::new(shard.open.clone());
        tracker.spawn_on(
            async move {
                task.await;
                drop(open);
            },
            &shard.handle,
        );
    }
}

/// The index of the smallest count, searching from `start` (modulo the length) so that
/// ties go round. `counts` is not empty.
fn least_loaded(counts: &[usize], start: usize) -> usize {
    let len = counts.len();
    (0..len)
        .map(|offset| (start + offset) % len)
        .min_by_key(|&i| counts[i])
        .unwrap_or(0)
}

/// One connection counted as open on a shard, until dropped (when its task ends, or is
/// dropped with its runtime).
struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for StopShards {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn the_least_loaded_shard_wins_and_ties_go_round() {
        assert_eq!(least_loaded(&[3, 1, 2], 0), 1);
        assert_eq!(least_loaded(&[3, 1, 2], 2), 1);
        assert_eq!(least_loaded(&[0, 0, 0], 0), 0);
        assert_eq!(least_loaded(&[0, 0, 0], 1), 1);
        assert_eq!(least_loaded(&[0, 0, 0], 5), 2);
        assert_eq!(least_loaded(&[7], 3), 0);
    }

    /// Each task runs on its shard's own thread, which knows its index; a shard serving more
    /// than one task above the least loaded hands the next one over; the tracker sees them
    /// end, and stopping ends the threads.
    #[tokio::test]
    async fn tasks_run_on_their_shards_and_move_when_one_is_busier() {
        let (shards, stop) = Shards::start(2).unwrap();
        assert_eq!(shards.accepting().count(), 2);
        let tracker = TaskTracker::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Tasks that stay open until released.
        let (release, released) = watch::channel(false);
        let spawn = |shard: usize| {
            let (seen, mut released) = (seen.clone(), released.clone());
            shards.spawn(shard, &tracker, async move {
                let thread = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push((current(), thread));
                let _ = released.wait_for(|r| *r).await;
            });
        };
        // From this (non-shard) thread `place` sees itself as shard 0.
        assert_eq!(shards.place(), 0);
        spawn(0);
        assert_eq!(
            shards.place(),
            0,
            "one more than the other is within the slack"
        );
        spawn(0);
        assert_eq!(
            shards.place(),
            1,
            "two more than the other moves the connection"
        );
        spawn(1);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the tasks did not all run"
            );
            tokio::task::yield_now().await;
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen,
            [0, 0, 1].map(|i| (i, Some(format!("certloop-shard-{i}"))))
        );
        release.send_replace(true);
        tracker.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
            .await
            .expect("the tasks end");
        assert!(
            shards
                .shards
                .iter()
                .all(|s| s.open.load(Ordering::Relaxed) == 0)
        );
        drop(stop);
    }
}
