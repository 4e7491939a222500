//! Coarse deadlines for Membrane's HTTP/1.x connections: the head-read timeout (which also
//! bounds an idle keep-alive connection) and the upstream request timeout, without a tokio
//! timer per request.
//!
//! Why: a tokio `Sleep` lives in the runtime's timer wheel. Creating, polling, resetting and
//! dropping one took about fifteen atomic read-modify-write operations per request (the
//! wheel's lock, the entry's atomic waker, the runtime handle's reference count), each 6-12
//! ns on the development machine, plus about a thousand instructions. Here a connection owns
//! one `Deadline` for its whole life: arming it is a plain store, checking it a plain load,
//! and the task's waker is handed over once per connection (again only if it changes). One
//! ticker task per worker looks at every armed deadline each `TICK` and wakes the
//! connections whose time has come.
//!
//! Assumption, and the price: a deadline fires between its duration and its duration plus a
//! tick (10 ms, more when the worker is too busy to run the ticker on time) after it was
//! armed, never early. Gateway timeouts are seconds; nginx likewise checks its timers
//! against a clock it updates once per event loop turn.
//!
//! The same ticker carries a listener's stop to its idle connections: `wake_all` wakes every
//! connection of the worker, and each looks at its own listener's stop flag. `sweep` does the
//! same after a new deny list, and each TLS connection looks at whether its peer is revoked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the ticker looks at the deadlines.
pub const TICK: Duration = Duration::from_millis(10);
const DISARMED: u64 = u64::MAX;

/// One worker's deadlines and their ticker. Cheap to clone.
#[derive(Clone)]
pub struct Timers(Arc<Wheel>);

struct Wheel {
    epoch: Instant,
    /// Milliseconds since `epoch` as of the last tick: the clock deadlines are checked
    /// against (it is never ahead of the real one).
    now_ms: AtomicU64,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// How many sweeps there have been: a connection that saw another count looks again.
    sweeps: AtomicU64,
    /// Wakes the ticker when the first deadline of an empty wheel is made.
    first: Notify,
}

struct Slot {
    /// Milliseconds since the epoch from which the deadline has passed; `DISARMED` if none.
    at: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

/// One connection's deadline. Re-armed for each phase; never shared.
pub struct Deadline {
    slot: Arc<Slot>,
    wheel: Arc<Wheel>,
    /// The waker the slot holds, to see without taking its lock whether it changed.
    handed: Option<Waker>,
}

impl Timers {
    /// Makes a worker's timers and starts their ticker on the current runtime.
    pub fn start() -> Self {
        let wheel = Arc::new(Wheel {
            epoch: Instant::now(),
            now_ms: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            sweeps: AtomicU64::new(0),
            first: Notify::new(),
        });
        tokio::spawn(tick(wheel.clone()));
        Timers(wheel)
    }

    /// A new, disarmed deadline.
    pub fn deadline(&self) -> Deadline {
        let slot = Arc::new(Slot {
            at: AtomicU64::new(DISARMED),
            waker: Mutex::new(None),
        });
        let was_empty = {
            let mut slots = lock(&self.0.slots);
            slots.push(slot.clone());
            slots.len() == 1
        };
        if was_empty {
            self.0.first.notify_one();
        }
        Deadline {
            slot,
            wheel: self.0.clone(),
            handed: None,
        }
    }

    /// Wakes every connection with a deadline, armed or not: a listener is stopping, and
    /// its idle connections are to look at their stop flags.
    pub fn wake_all(&self) {
        for slot in lock(&self.0.slots).iter() {
            if let Some(w) = lock(&slot.waker).as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// A new deny list is in: counts a sweep and wakes every connection to look at it.
    pub fn sweep(&self) {
        self.0.sweeps.fetch_add(1, Ordering::Relaxed);
        self.wake_all();
    }
}

impl Deadline {
    /// Arms the deadline `after` from now. Reads the clock (a vDSO call, no atomic
    /// operation): the ticker's clock could be stale after a pause, and a deadline taken
    /// from it could then fire early.
    pub fn arm(&mut self, after: Duration) {
        let now = self.wheel.epoch.elapsed().as_millis();
        // Whole milliseconds, rounded up on both counts: never early by the fraction.
        let after_ms = after.as_nanos().div_ceil(1_000_000);
        let at = u64::try_from(now + 1 + after_ms).unwrap_or(DISARMED);
        self.slot.at.store(at.min(DISARMED - 1), Ordering::Relaxed);
    }

    /// Disarms it: it does not fire until armed again.
    pub fn disarm(&mut self) {
        self.slot.at.store(DISARMED, Ordering::Relaxed);
    }

    /// Ready once the armed deadline has passed; a disarmed one never is.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.slot.at.load(Ordering::Relaxed);
        if at != DISARMED && self.wheel.now_ms.load(Ordering::Relaxed) >= at {
            return Poll::Ready(());
        }
        if !self
            .handed
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let w = cx.waker().clone();
            *lock(&self.slot.waker) = Some(w.clone());
            self.handed = Some(w);
        }
        Poll::Pending
    }

    /// True once after each `Timers::sweep` since the last call (`seen` keeps the count).
    pub fn swept(&self, seen: &mut u64) -> bool {
        let now = self.wheel.sweeps.load(Ordering::Relaxed);
        let new = now != *seen;
        *seen = now;
        new
    }

    /// Resolves once the armed deadline has passed.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // The ticker drops the wheel's reference to the slot at its next turn.
        self.slot.at.store(DISARMED, Ordering::Relaxed);
        *lock(&self.slot.waker) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every tick: advance the clock, wake the connections whose deadline has passed, forget
/// the slots of connections that ended. Parks while the worker has no connection; ends with
/// the worker's runtime.
async fn tick(wheel: Arc<Wheel>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let empty = lock(&wheel.slots).is_empty();
        if empty {
            // A deadline made meanwhile left a permit: this returns at once then.
            wheel.first.notified().await;
            continue;
        }
        interval.tick().await;
        let now = u64::try_from(wheel.epoch.elapsed().as_millis()).unwrap_or(DISARMED - 1);
        wheel.now_ms.store(now, Ordering::Relaxed);
        lock(&wheel.slots).retain(|slot| {
            // Only the wheel holds it: its connection has ended.
            if Arc::strong_count(slot) == 1 {
                return false;
            }
            let at = slot.at.load(Ordering::Relaxed);
            if at != DISARMED
                && now >= at
                && let Some(waker) = lock(&slot.waker).as_ref()
            {
                waker.wake_by_ref();
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn fires_after_its_duration_within_two_ticks_and_not_when_rearmed() {
        rt().block_on(async {
            let timers = Timers::start();
            let mut d = timers.deadline();
            for after in [Duration::from_millis(30), Duration::from_millis(120)] {
                let t = Instant::now();
                d.arm(after);
                d.expired().await;
                let took = t.elapsed();
                assert!(took >= after, "fired early: {took:?} < {after:?}");
                // It fires (its precision, two ticks, is the wheel's design; a test on a
                // loaded machine cannot measure it).
                assert!(took < after + Duration::from_secs(10), "{took:?}");
            }
            // Re-armed further out before it passes: it does not fire at the first time.
            d.arm(Duration::from_millis(40));
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.arm(Duration::from_secs(30));
            let fired = tokio::time::timeout(Duration::from_millis(150), d.expired()).await;
            assert!(fired.is_err(), "a re-armed deadline fired at its old time");
        });
    }

    #[test]
    fn an_unarmed_deadline_never_fires_and_wake_all_wakes_it() {
        rt().block_on(async {
            let timers = Timers::start();
            let mut d = timers.deadline();
            let never = tokio::time::timeout(Duration::from_millis(100), d.expired()).await;
            assert!(never.is_err());
            // A task waiting on it is woken by wake_all (it then looks at its stop flag).
            let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let seen = woken.clone();
            let waiting = tokio::spawn(async move {
                std::future::poll_fn(|cx| {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        d.poll_expired(cx)
                    } else {
                        Poll::Ready(())
                    }
                })
                .await
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            timers.wake_all();
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("wake_all did not wake the task")
                .unwrap();
            assert_eq!(woken.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn a_sweep_wakes_a_waiting_connection_and_is_seen_once() {
        rt().block_on(async {
            let timers = Timers::start();
            let mut d = timers.deadline();
            let mut seen = 0;
            assert!(!d.swept(&mut seen), "no sweep yet");
            let waiting = tokio::spawn(async move {
                std::future::poll_fn(|cx| {
                    if d.swept(&mut seen) {
                        return Poll::Ready(());
                    }
                    let _ = d.poll_expired(cx);
                    Poll::Pending
                })
                .await;
                (d, seen)
            });
            tokio::task::yield_now().await;
            timers.sweep();
            let (d, mut seen) = tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("the sweep did not wake the task")
                .unwrap();
            assert_eq!(seen, 1);
            assert!(!d.swept(&mut seen), "one sweep is seen once");
        });
    }

    #[test]
    fn ended_connections_leave_the_wheel() {
        rt().block_on(async {
            let timers = Timers::start();
            let kept = timers.deadline();
            for _ in 0..100 {
                drop(timers.deadline());
            }
            assert_eq!(lock(&timers.0.slots).len(), 101);
            // The wheel's next ticks sweep them out.
            let deadline = Instant::now() + Duration::from_secs(10);
            while lock(&timers.0.slots).len() != 1 {
                assert!(
                    Instant::now() < deadline,
                    "ended deadlines stay in the wheel"
                );
                tokio::time::sleep(TICK).await;
            }
            drop(kept);
        });
    }
}
