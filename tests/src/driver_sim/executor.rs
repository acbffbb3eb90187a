//! A deterministic runtime for the driver: one thread, virtual time, and a seeded choice of
//! which ready task runs next. Time only moves when no task can run; then it jumps to the
//! earliest timer. The wall clock is the monotonic clock plus an offset the simulation moves
//! (a suspend or an NTP step moves the wall clock and not the timers).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use certloop_acme::adapter::{BoxFuture, Runtime};
use certloop_core::{SplitMix64, UnixTime};

/// The virtual clock and the task queue, shared by every clone of the runtime.
pub struct SimExecutor {
    state: Mutex<State>,
}

struct State {
    tasks: BTreeMap<u64, Option<BoxFuture<()>>>,
    ready: BTreeSet<u64>,
    next_task: u64,
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    timer_wakers: BTreeMap<u64, Waker>,
    next_timer: u64,
    /// Virtual monotonic time, in milliseconds since the simulation began.
    mono_ms: u64,
    /// The wall clock at `mono_ms == 0`, plus every jump since.
    wall_offset_ms: i64,
    rng: SplitMix64,
}

impl SimExecutor {
    /// An executor whose wall clock starts at `wall_start`, scheduling with `seed`.
    pub fn new(wall_start: UnixTime, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                tasks: BTreeMap::new(),
                ready: BTreeSet::new(),
                next_task: 0,
                timers: BinaryHeap::new(),
                timer_wakers: BTreeMap::new(),
                next_timer: 0,
                mono_ms: 0,
                wall_offset_ms: i64::try_from(wall_start.as_millis()).unwrap_or(i64::MAX),
                rng: SplitMix64::new(seed),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runtime handle the driver gets.
    pub fn runtime(self: &Arc<Self>) -> SimRuntime {
        SimRuntime(self.clone())
    }

    /// The wall clock now.
    pub fn wall_clock(&self) -> UnixTime {
        let state = self.lock();
        wall(&state)
    }

    /// Virtual monotonic milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        self.lock().mono_ms
    }

    /// Moves the wall clock by `delta_ms` (forward: a suspend or a step; back: an NTP step
    /// back). Timers keep running on the monotonic clock.
    pub fn jump_wall_clock(&self, delta_ms: i64) {
        self.lock().wall_offset_ms += delta_ms;
    }

    fn spawn(self: &Arc<Self>, future: BoxFuture<()>) {
        let mut state = self.lock();
        let id = state.next_task;
        state.next_task += 1;
        state.tasks.insert(id, Some(future));
        state.ready.insert(id);
    }

    /// Runs one ready task, chosen by the seed. `false` when none is ready.
    pub fn step(self: &Arc<Self>) -> bool {
        let (id, mut future) = {
            let mut state = self.lock();
            if state.ready.is_empty() {
                return false;
            }
            let ready = state.ready.len() as u64;
            let pick = state.rng.up_to(ready - 1);
            let id = *state.ready.iter().nth(pick as usize).expect("in range");
            state.ready.remove(&id);
            match state.tasks.get_mut(&id).and_then(Option::take) {
                Some(future) => (id, future),
                None => return true, // finished or running: a stale wake
            }
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            executor: Arc::downgrade(self),
            task: id,
        }));
        let done = future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        if done {
            self.lock().tasks.remove(&id);
            drop(future); // outside the lock: dropping may wake others
        } else {
            let mut state = self.lock();
            if let Some(slot) = state.tasks.get_mut(&id) {
                *slot = Some(future);
            }
        }
        true
    }

    /// The monotonic time of the earliest timer, if any.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.lock().timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves the monotonic clock to `to_ms` (never back) and wakes every timer due by then.
    pub fn advance_to(&self, to_ms: u64) {
        let due = {
            let mut state = self.lock();
            state.mono_ms = state.mono_ms.max(to_ms);
            let mut due = Vec::new();
            while let Some(Reverse((at, id))) = state.timers.peek().copied() {
                if at > state.mono_ms {
                    break;
                }
                state.timers.pop();
                if let Some(waker) = state.timer_wakers.remove(&id) {
                    due.push(waker);
                }
            }
            due
        };
        due.into_iter().for_each(Waker::wake);
    }

    /// Drops every task (a crash): nothing they hold survives except what they wrote.
    pub fn kill_all(&self) {
        let tasks = {
            let mut state = self.lock();
            state.ready.clear();
            state.timers.clear();
            state.timer_wakers.clear();
            std::mem::take(&mut state.tasks)
        };
        drop(tasks);
        // A future being dropped may still spawn (a guard's drop): nothing of the process
        // survives it.
        let mut state = self.lock();
        state.tasks.clear();
        state.ready.clear();
    }
}

fn wall(state: &State) -> UnixTime {
    let ms = state.wall_offset_ms.saturating_add(state.mono_ms as i64);
    UnixTime::from_millis(u64::try_from(ms).unwrap_or(0))
}

struct TaskWaker {
    executor: Weak<SimExecutor>,
    task: u64,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(executor) = self.executor.upgrade() {
            let mut state = executor.lock();
            if state.tasks.contains_key(&self.task) {
                state.ready.insert(self.task);
            }
        }
    }
}

/// The [`Runtime`] the simulated driver runs on.
#[derive(Clone)]
pub struct SimRuntime(Arc<SimExecutor>);

impl SimRuntime {
    /// The executor behind it.
    pub fn executor(&self) -> &Arc<SimExecutor> {
        &self.0
    }
}

/// A stream that is never connected: the simulated CA is reached through a transport, not TCP.
pub type NoTcp = futures_lite::io::Cursor<Vec<u8>>;

impl Runtime for SimRuntime {
    type Tcp = NoTcp;

    fn connect(&self, host: String, port: u16) -> BoxFuture<io::Result<Self::Tcp>> {
        Box::pin(async move {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{host}:{port}: no network in the simulation"),
            ))
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        let at = self.0.lock().mono_ms + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Box::pin(Sleep {
            executor: self.0.clone(),
            at,
            timer: None,
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn(future);
    }

    fn unblock<T: Send + 'static>(&self, work: Box<dyn FnOnce() -> T + Send>) -> BoxFuture<T> {
        // Blocking work runs as a task step of its own, after a yield, so that other tasks
        // may run between the decision and the disk operation.
        Box::pin(async move {
            futures_lite::future::yield_now().await;
            work()
        })
    }

    fn wall_clock(&self) -> UnixTime {
        self.0.wall_clock()
    }
}

struct Sleep {
    executor: Arc<SimExecutor>,
    at: u64,
    timer: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.executor.lock();
        if state.mono_ms >= self.at {
            return Poll::Ready(());
        }
        let id = match self.timer {
            Some(id) => id,
            None => {
                let id = state.next_timer;
                state.next_timer += 1;
                state.timers.push(Reverse((self.at, id)));
                id
            }
        };
        state.timer_wakers.insert(id, cx.waker().clone());
        drop(state);
        self.timer = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.timer {
            self.executor.lock().timer_wakers.remove(&id);
        }
    }
}
