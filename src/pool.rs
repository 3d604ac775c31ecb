//! The frame-slot pool: a fixed set of slots handed out one frame at a time.
//!
//! A slot is acquired before its frame is decoded and released once the
//! frame no longer needs it (a GPU slot as soon as the GPU has read its
//! upload, a host slot once the kernels ran), so the pool size bounds the
//! frames being decoded and processed, and with the bounded queues after
//! it, host memory as well as VRAM. A
//! [`Lease`] returns its slot on drop, so a stage that fails, or panics,
//! never leaks one and never leaves the pipeline waiting for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How many slots a pool should have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum PoolSize {
    /// As many as fit the VRAM budget after fixed costs, at least 2 where
    /// they fit, capped at [`auto_cap`] where more cannot be used and at
    /// the run's frame count (a still takes one).
    #[default]
    Auto,
    /// Exactly this many (at least 1).
    Fixed(usize),
}

/// The most slots a fixed pool may ask for: far past where more stop
/// helping, and a typo rather than a plan beyond it.
pub const MAX_POOL: usize = 256;

impl std::str::FromStr for PoolSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `--pools "1, 2"`: spaces around a value are the shell's, not it.
        let s = s.trim();
        if s == "auto" {
            return Ok(PoolSize::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_POOL).contains(&n) => Ok(PoolSize::Fixed(n)),
            _ => Err(format!("invalid pool size {s:?} (expected auto or 1 to {MAX_POOL})")),
        }
    }
}

impl std::fmt::Display for PoolSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolSize::Auto => f.write_str("auto"),
            PoolSize::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// The most slots `auto` takes for `threads` decode workers.
///
/// A slot is held from the start of its frame's decode until the GPU has
/// read it (the result comes back through the run's readback ring, not the
/// slot), so at most one per decode worker, one per frame on the GPU (two)
/// and one decoded frame waiting its turn are ever busy in steady state:
/// more slots than that only sit idle in VRAM. Without GPU work (`gpu`
/// false: the CPU backend, or no ops) a slot is a host frame between
/// decode and the kernels, and one per worker plus two waiting is enough.
pub fn auto_cap(threads: usize, gpu: bool) -> usize {
    let cap = threads.saturating_add(if gpu { crate::pipeline::GPU_DEPTH + 1 } else { 2 });
    cap.min(MAX_POOL)
}

/// A pool of slots of type `T`, shared by the pipeline's threads.
pub struct Pool<T> {
    free_tx: Sender<T>,
    free: Arc<Free<T>>,
    size: usize,
    occupancy: Arc<Occupancy>,
}

/// Who is waiting for VRAM: previews and prefetches (`any`), and of those
/// the previews someone is looking at (`urgent`).
#[derive(Debug, Default)]
pub struct Pressure {
    /// Previews and prefetches waiting for VRAM.
    pub any: AtomicUsize,
    /// Previews waiting for VRAM.
    pub urgent: AtomicUsize,
    /// The pools built with this pressure, whose free slots a waiting
    /// preview can retire itself: an export's decoders retire them only
    /// as they start frames, and none may for a while (all waiting on a
    /// stream's slow reader, or done and the last frames on their way out).
    pools: Mutex<Vec<Weak<dyn Shed>>>,
}

impl Pressure {
    /// Retires one free slot of every live pool above its floor (see
    /// [`Pool::shed`]); returns whether any went. Called by whoever raised
    /// the pressure, after raising it.
    pub fn shed_free(&self) -> bool {
        let mut pools = crate::lock(&self.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).fold(false, |shed, p| p.shed() | shed)
    }

    /// The fewest live slots a pool keeps now: none while a preview waits
    /// (the export pauses rather than the preview failing), else one (a
    /// prefetch is speculative: the export slows, never stops, for it).
    fn floor(&self) -> usize {
        usize::from(self.urgent.load(Ordering::SeqCst) == 0)
    }
}

/// How a pool gives memory back: while anyone waits for VRAM, slots coming
/// back are dropped instead of reused, down to [`Pressure::floor`]. A
/// paused export gets its slots back once previews have been quiet for
/// `EngineConfig::preview_memory_idle`.
struct Yield {
    pressure: Arc<Pressure>,
    live: AtomicUsize,
    /// Slots retired so far (some may have been replaced since).
    retired: AtomicUsize,
    /// Slots put back in place of retired ones.
    replenished: AtomicUsize,
}

/// A pool's free slots, as something that can give one back.
trait Shed: Send + Sync {
    fn shed(&self) -> bool;
}

/// A pool's free slots (and the way back in for one taken out and kept)
/// and how it yields them.
struct Free<T> {
    rx: Receiver<T>,
    tx: Sender<T>,
    yielding: Arc<Yield>,
}

impl<T: Send> Shed for Free<T> {
    fn shed(&self) -> bool {
        let y = &self.yielding;
        if y.pressure.any.load(Ordering::SeqCst) == 0 {
            return false;
        }
        // The slot first, then the count: a count lowered before a slot was
        // found would let `Pool::replenish` add one meanwhile, and putting
        // the count back would then leave more live slots than the free
        // list holds (the last one returned would block on it).
        let Ok(slot) = self.rx.try_recv() else { return false };
        let floor = y.pressure.floor();
        if y.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > floor).then(|| n - 1)).is_ok() {
            y.retired.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        // At the floor: it stays. The list has room (it just came out of
        // it; free slots never outnumber live ones); were it full, the slot
        // would go, counted as retired.
        if self.tx.try_send(slot).is_err() {
            y.live.fetch_sub(1, Ordering::SeqCst);
            y.retired.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// Slots in use over time, sampled at every acquire and release.
#[derive(Debug)]
pub struct Occupancy {
    start: Instant,
    samples: Mutex<Vec<(f64, u32)>>,
    in_use: Mutex<u32>,
}

impl Occupancy {
    fn change(&self, delta: i32) {
        let mut n = crate::lock(&self.in_use);
        *n = (*n as i32 + delta) as u32;
        let t = self.start.elapsed().as_secs_f64();
        crate::lock(&self.samples).push((t, *n));
    }

    /// `(seconds since start, slots in use)` after every change.
    pub fn samples(&self) -> Vec<(f64, u32)> {
        crate::lock(&self.samples).clone()
    }
}

impl<T: Send + 'static> Pool<T> {
    /// A pool holding `slots`; `start` is time zero of the occupancy
    /// samples; while `pressure` is non-zero returned slots are retired,
    /// and free ones go at [`Pressure::shed_free`].
    pub fn new(slots: Vec<T>, start: Instant, pressure: Arc<Pressure>) -> Self {
        let size = slots.len();
        let (free_tx, rx) = crossbeam_channel::bounded(size.max(1));
        for s in slots {
            free_tx.send(s).expect("pool has room for its own slots");
        }
        let occupancy = Arc::new(Occupancy { start, samples: Mutex::new(vec![(0.0, 0)]), in_use: Mutex::new(0) });
        let yielding = Arc::new(Yield {
            pressure: pressure.clone(),
            live: AtomicUsize::new(size),
            retired: AtomicUsize::new(0),
            replenished: AtomicUsize::new(0),
        });
        let free = Arc::new(Free { rx, tx: free_tx.clone(), yielding });
        let weak: Weak<dyn Shed> = Arc::downgrade(&free) as Weak<Free<T>>;
        let mut pools = crate::lock(&pressure.pools);
        // Pools of runs that ended go here too, or an engine's list would
        // grow by one per run.
        pools.retain(|p| p.strong_count() > 0);
        pools.push(weak);
        drop(pools);
        Pool { free_tx, free, size, occupancy }
    }

    /// Slots not retired.
    pub fn live(&self) -> usize {
        self.free.yielding.live.load(Ordering::SeqCst)
    }

    /// Number of slots.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots given back under pressure over the pool's life.
    pub fn retired(&self) -> usize {
        self.free.yielding.retired.load(Ordering::SeqCst)
    }

    /// Slots made anew in place of retired ones over the pool's life.
    pub fn replenished(&self) -> usize {
        self.free.yielding.replenished.load(Ordering::SeqCst)
    }

    /// Whether the pool is short of slots it gave back and nothing asks
    /// for memory now, or it is below the floor the requests waiting
    /// allow (a preview took every slot, and now prefetches alone wait:
    /// the export slows for them, never stops): the moment to
    /// [`Pool::replenish`] it.
    pub fn wants_slot(&self) -> bool {
        let pressure = &self.free.yielding.pressure;
        self.live() < self.size && (pressure.any.load(Ordering::SeqCst) == 0 || self.live() < pressure.floor())
    }

    /// Puts a new slot in place of a retired one; hands it back if the pool
    /// is full.
    pub fn replenish(&self, item: T) -> Option<T> {
        let y = &self.free.yielding;
        if y.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.size).then_some(n + 1)).is_err() {
            return Some(item);
        }
        y.replenished.fetch_add(1, Ordering::SeqCst);
        // Free slots never exceed `size`: the channel has room.
        self.free_tx.send(item).err().map(|e| e.into_inner())
    }

    /// Under pressure, retires one slot that sits free (down to none while
    /// a preview waits, one for a prefetch): memory a waiting preview can have at once,
    /// without waiting for a frame to come back. Returns whether one went.
    pub fn shed(&self) -> bool {
        self.free.shed()
    }

    /// Occupancy samples so far.
    pub fn occupancy(&self) -> &Arc<Occupancy> {
        &self.occupancy
    }

    /// Waits up to `timeout` for a free slot.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Lease<T>> {
        match self.free.rx.recv_timeout(timeout) {
            Ok(item) => {
                self.occupancy.change(1);
                Some(Lease {
                    item: Some(item),
                    home: self.free_tx.clone(),
                    occupancy: self.occupancy.clone(),
                    yielding: self.free.yielding.clone(),
                })
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }
}

/// A slot on loan; goes back to its pool when dropped.
pub struct Lease<T> {
    item: Option<T>,
    home: Sender<T>,
    occupancy: Arc<Occupancy>,
    yielding: Arc<Yield>,
}

impl<T> std::ops::Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item.as_ref().expect("lease holds its slot until dropped")
    }
}

impl<T> std::ops::DerefMut for Lease<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().expect("lease holds its slot until dropped")
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            // Counted out before it is free: the next lease's +1 must not
            // land first, or the samples would show more slots in use than
            // the pool has.
            self.occupancy.change(-1);
            let y = &self.yielding;
            let floor = y.pressure.floor();
            let retire = y.pressure.any.load(Ordering::SeqCst) > 0
                && y.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > floor).then(|| n - 1)).is_ok();
            if retire {
                y.retired.fetch_add(1, Ordering::SeqCst);
            } else {
                // The pool may be gone at the end of a run; then the slot just drops.
                let _ = self.home.send(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_return_on_drop() {
        let pressure = Arc::new(Pressure::default());
        let pool = Pool::new(vec![1, 2], Instant::now(), pressure.clone());
        let set = |any: usize, urgent: usize| {
            pressure.any.store(any, Ordering::SeqCst);
            pressure.urgent.store(urgent, Ordering::SeqCst);
        };
        let a = pool.acquire_timeout(Duration::from_millis(10)).unwrap();
        let b = pool.acquire_timeout(Duration::from_millis(10)).unwrap();
        assert_eq!(*a + *b, 3);
        assert!(pool.acquire_timeout(Duration::from_millis(10)).is_none());
        drop(a);
        assert!(pool.acquire_timeout(Duration::from_millis(10)).is_some());
        let peak = pool.occupancy().samples().iter().map(|s| s.1).max();
        assert_eq!(peak, Some(2));
        // Under a prefetch's pressure a returned slot is retired, but never
        // the last one; under a preview's, the last one too.
        set(1, 0);
        drop(b);
        assert_eq!(pool.live(), 1);
        let last = pool.acquire_timeout(Duration::from_millis(10)).unwrap();
        drop(last);
        assert_eq!(pool.live(), 1, "a prefetch never stops the export");
        set(2, 1);
        let last = pool.acquire_timeout(Duration::from_millis(10)).unwrap();
        drop(last);
        assert_eq!(pool.live(), 0);
        assert!(pool.acquire_timeout(Duration::from_millis(10)).is_none());
        assert!(!pool.shed(), "nothing left to shed");
        // Once the pressure is gone the pool grows back to its size, no further.
        assert!(!pool.wants_slot());
        // With prefetches alone still waiting, back to the one slot they
        // leave an export, no more.
        set(1, 0);
        assert!(pool.wants_slot(), "a prefetch never stops the export");
        assert_eq!(pool.replenish(6), None);
        assert!(!pool.wants_slot());
        set(0, 0);
        assert!(pool.wants_slot());
        assert_eq!(pool.replenish(7), None);
        assert_eq!((pool.live(), pool.retired()), (2, 2));
        assert!(!pool.wants_slot());
        assert_eq!(pool.replenish(8), Some(8), "full");
        let (x, y) = (pool.acquire_timeout(Duration::ZERO).unwrap(), pool.acquire_timeout(Duration::ZERO).unwrap());
        assert_eq!(*x + *y, 13, "the two new ones");
        // Shedding takes free slots only, and only under pressure.
        assert!(!pool.shed());
        set(1, 1);
        assert!(!pool.shed(), "both are on loan");
        set(0, 0);
        drop(x);
        set(1, 1);
        assert!(pool.shed());
        assert_eq!((pool.live(), pool.retired()), (1, 3));
        assert!(pool.acquire_timeout(Duration::ZERO).is_none());
        drop(y);
        assert_eq!(pool.live(), 0, "the last one goes while the pressure lasts");
        assert!(pool.acquire_timeout(Duration::ZERO).is_none());
        assert_eq!("auto".parse::<PoolSize>().unwrap(), PoolSize::Auto);
        assert!("0".parse::<PoolSize>().is_err());
    }

    #[test]
    fn the_pressure_sheds_free_slots_of_every_live_pool() {
        let pressure = Arc::new(Pressure::default());
        let (a, b) = (
            Pool::new(vec![1, 2], Instant::now(), pressure.clone()),
            Pool::new(vec![3], Instant::now(), pressure.clone()),
        );
        assert!(!pressure.shed_free(), "no pressure, nothing goes");
        pressure.any.store(1, Ordering::SeqCst);
        assert!(pressure.shed_free());
        assert_eq!((a.live(), b.live()), (1, 1), "a prefetch leaves each pool one slot");
        pressure.urgent.store(1, Ordering::SeqCst);
        drop(b);
        assert!(pressure.shed_free());
        assert!(!pressure.shed_free());
        assert_eq!(a.live(), 0);
        assert_eq!(pressure.pools.lock().unwrap().len(), 1, "a dropped pool is forgotten");
    }

    /// Shedding and regrowing on two threads while the pressure comes and
    /// goes never leaves more live slots than free and leased ones: each
    /// slot returned has room in the free list (a count lowered before its
    /// slot was found once let a regrow slip in, and the last slot back
    /// then blocked).
    #[test]
    fn shedding_and_regrowing_at_once_keep_the_count_true() {
        let pressure = Arc::new(Pressure::default());
        let pool = Arc::new(Pool::new(vec![0u32], Instant::now(), pressure.clone()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shedder = {
            let (pressure, stop) = (pressure.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    pressure.any.store(1, Ordering::SeqCst);
                    pressure.urgent.store(i % 2, Ordering::SeqCst);
                    pressure.shed_free();
                    pressure.urgent.store(0, Ordering::SeqCst);
                    i += 1;
                }
            })
        };
        for n in 1..20_000u32 {
            if pool.wants_slot() {
                pool.replenish(n);
            }
            // A lease taken and given back, as a decoder's.
            drop(pool.acquire_timeout(Duration::ZERO));
        }
        stop.store(true, Ordering::SeqCst);
        shedder.join().unwrap();
        let mut free = 0;
        while pool.acquire_timeout(Duration::ZERO).map(std::mem::forget).is_some() {
            free += 1;
        }
        assert_eq!(free, pool.live(), "every live slot is in the free list");
        assert!(pool.live() <= pool.size());
    }
}
