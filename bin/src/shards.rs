//! The connections' runtimes: one single-threaded tokio runtime per core, each on its own
//! thread with its own event loop. One shard runs each listener's accept loop (the listeners
//! take turns). A connection stays on the shard that accepted it, unless another serves fewer
//! connections by more than one: then it moves there once, before its first byte. It lives
//! there with its upstream connections (each shard has its own pool: see `h1/pool.rs`) and
//! the tunnel it may turn into, and counts as open there until both have ended.
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
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// How long a stopping shard waits for its blocking tasks (name lookups of an upstream).
const STOP_WAIT: Duration = Duration::from_millis(500);

thread_local! {
    /// The index of the shard whose thread this is.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the shard running the caller; `None` on any other thread (the main
/// runtime's, a unit test's).
pub(crate) fn current() -> Option<usize> {
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
    /// The shard the next listener accepts on.
    next_acceptor: AtomicUsize,
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
        let mut stop_shards = StopShards {
            stop: Some(stop),
            threads: Vec::new(),
        };
        let mut shards = Vec::new();
        for index in 0..count.max(1) {
            let (started, handle) = std::sync::mpsc::sync_channel(1);
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("certloop-shard-{index}"))
                .spawn(move || {
                    // Built and dropped on its own thread, never inside another runtime.
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    INDEX.with(|i| i.set(Some(index)));
                    // Runs every task spawned on the shard until the stop.
                    runtime.block_on(async move {
                        let _ = stopped.changed().await;
                    });
                    runtime.shutdown_timeout(STOP_WAIT);
                })?;
            stop_shards.threads.push(thread);
            let handle = handle
                .recv()
                .map_err(|_| io::Error::other("a shard's thread ended at its start"))??;
            shards.push(Shard {
                handle,
                open: Arc::default(),
            });
        }
        let shards = Arc::new(Self {
            shards,
            next: AtomicUsize::new(0),
            next_acceptor: AtomicUsize::new(0),
        });
        Ok((shards, stop_shards))
    }

    /// How many shards there are.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }

    /// The runtime to run a listener's accept loop on: one shard, each listener the next.
    /// (Several shards accepting on one socket would each be woken for every new connection,
    /// all but one to find nothing: 3.5 to 10.5 % more CPU per resumed handshake on two
    /// cores.)
    pub(crate) fn acceptor(&self) -> &Handle {
        let next = self.next_acceptor.fetch_add(1, Ordering::Relaxed);
        &self.shards[next % self.shards.len()].handle
    }

    /// The shard to serve a connection the caller's shard just accepted: that one, unless
    /// another serves fewer connections by more than one. Off the shards, the least loaded.
    pub(crate) fn place(&self) -> usize {
        let open: Vec<usize> = (self.shards.iter())
            .map(|s| s.open.load(Ordering::Relaxed))
            .collect();
        let least = least_loaded(&open, self.next.fetch_add(1, Ordering::Relaxed));
        match current() {
            Some(here) if here < open.len() && open[here] <= open[least] + 1 => here,
            _ => least,
        }
    }

    /// Counts one connection as open on shard `shard` until the returned guard is dropped.
    pub(crate) fn open(&self, shard: usize) -> ShardLoad {
        ShardLoad::new(self.shards[shard % self.shards.len()].open.clone())
    }

    /// Runs `task` in `tracker` on shard `shard`.
    pub(crate) fn spawn<F>(&self, shard: usize, tracker: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracker.spawn_on(task, &self.shards[shard % self.shards.len()].handle);
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

/// One connection counted as open on a shard, until dropped (with the connection's
/// admission, which a tunnel keeps).
pub(crate) struct ShardLoad(Arc<AtomicUsize>);

impl ShardLoad {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for ShardLoad {
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

    /// Where `place` puts a connection accepted on shard `on`.
    async fn place_on(shards: &Arc<Shards>, on: usize) -> usize {
        let (placed, place) = tokio::sync::oneshot::channel();
        let of = shards.clone();
        shards.spawn(on, &TaskTracker::new(), async move {
            let _ = placed.send(of.place());
        });
        place.await.unwrap()
    }

    /// Each task runs on its shard's own thread, which knows its index; a connection stays
    /// on the shard that accepted it unless that one serves more than one above the least
    /// loaded; loads end with their guards; stopping ends the threads.
    #[tokio::test]
    async fn connections_stay_where_accepted_unless_that_shard_is_busier() {
        let (shards, stop) = Shards::start(2).unwrap();
        assert_eq!(current(), None, "not a shard's thread");
        let tracker = TaskTracker::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Connections that stay open until released.
        let (release, released) = watch::channel(false);
        let open = |shard: usize| {
            let (seen, mut released) = (seen.clone(), released.clone());
            let load = shards.open(shard);
            shards.spawn(shard, &tracker, async move {
                let thread = std::thread::current().name().map(str::to_owned);
                seen.lock().unwrap().push((current(), thread));
                let _ = released.wait_for(|r| *r).await;
                drop(load);
            });
        };
        open(0);
        assert_eq!(
            place_on(&shards, 0).await,
            0,
            "one above the other is within the slack"
        );
        assert_eq!(place_on(&shards, 1).await, 1);
        assert_eq!(shards.place(), 1, "off the shards: the least loaded");
        open(0);
        assert_eq!(
            place_on(&shards, 0).await,
            1,
            "two above the other: it moves"
        );
        open(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the tasks did not all run"
            );
            tokio::task::yield_now().await;
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        let expected = [0, 0, 1].map(|i| (Some(i), Some(format!("certloop-shard-{i}"))));
        assert_eq!(seen, expected);
        release.send_replace(true);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
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
