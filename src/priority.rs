//! A lock with three priority classes, for the one GPU (or CPU compute)
//! that previews, prefetches and exports share.
//!
//! Whoever holds it owns submission and polling. When it is released the
//! next holder is chosen by class, not arrival: a waiting preview always
//! goes before a waiting prefetch, which goes before a waiting export frame.
//! Work already running is never preempted (a GPU submission cannot be),
//! so at the lock a preview waits at most for the one frame in progress
//! (and for previews ahead of it; for memory, see the preview module). On
//! the GPU queue itself it also waits for the export frames already
//! submitted (at most `GPU_DEPTH`, one while previews are live).
//!
//! A class can also be announced ahead of the lock with [`PriorityLock::intend`]:
//! a preview announces itself when it arrives, before it decodes, so export
//! frames that come to the lock while it decodes wait behind it instead of
//! slipping in first.
//!
//! A [`Class`] lets another thread raise work already announced: a
//! preview that comes to wait for a prefetch rendering the same frame
//! raises the prefetch to a preview's class ([`PriorityLock::raise`]).
//!
//! The [`Gate`] covers what the lock cannot: export frames that have not
//! started yet. While a preview is raised at it (until the preview holds
//! its VRAM), no new export frame starts decoding, so none that started
//! after the request can use the memory or the GPU time the preview is
//! waiting for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Batch export frames.
    Export = 0,
    /// Speculative preview work.
    Prefetch = 1,
    /// A preview someone is waiting for.
    Preview = 2,
}

#[derive(Default)]
struct State {
    held: bool,
    waiting: [usize; 3],
}

/// A mutex whose waiters are served by [`Priority`].
pub struct PriorityLock<T> {
    state: Mutex<State>,
    changed: Condvar,
    value: Mutex<T>,
}

/// Access to the value; releases on drop.
pub struct PriorityGuard<'a, T> {
    lock: &'a PriorityLock<T>,
    value: Option<MutexGuard<'a, T>>,
}

impl<T> PriorityLock<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        PriorityLock { state: Mutex::default(), changed: Condvar::new(), value: Mutex::new(value) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Waits until the value is free and no higher class is waiting.
    pub fn lock(&self, priority: Priority) -> PriorityGuard<'_, T> {
        self.intend(priority).lock()
    }

    /// Counts `priority` as waiting from now until the returned intent is
    /// dropped, across any number of [`Intent::lock`] calls: lower classes
    /// stay out all that time, even while the intent holds nothing.
    pub fn intend(&self, priority: Priority) -> Intent<'_, T> {
        self.intend_as(priority, &Class::default())
    }

    /// [`PriorityLock::intend`] at `priority`, or higher where `class` was
    /// raised; [`PriorityLock::raise`] on `class` moves the intent up while
    /// it lives (a prefetch that a preview came to wait for).
    pub fn intend_as(&self, priority: Priority, class: &Class) -> Intent<'_, T> {
        let mut s = self.state();
        // Checked in release builds too: a second intent would be undone
        // twice, which no Drop can survive.
        assert_eq!(class.0.attached.load(Ordering::SeqCst), DETACHED, "one live intent per class");
        let at = (priority as usize).max(class.0.wanted.load(Ordering::SeqCst));
        s.waiting[at] += 1;
        class.0.attached.store(at, Ordering::SeqCst);
        Intent { lock: self, class: class.clone() }
    }

    /// Raises `class` to at least `to`: its intent, if one lives, counts
    /// at `to` from now (a waiting one is served as that class), and any
    /// made with it later start there.
    pub fn raise(&self, class: &Class, to: Priority) {
        let mut s = self.state();
        let to = to as usize;
        class.0.wanted.fetch_max(to, Ordering::SeqCst);
        let at = class.0.attached.load(Ordering::SeqCst);
        if at != DETACHED && at < to {
            s.waiting[at] -= 1;
            s.waiting[to] += 1;
            class.0.attached.store(to, Ordering::SeqCst);
            drop(s);
            self.changed.notify_all();
        }
    }

    /// Undoes [`PriorityLock::raise`]: `class` goes back to `to`, the
    /// priority its own work was announced at (a prefetch whose waiting
    /// preview left). Its live intent, if one counts higher, counts at
    /// `to` from now.
    pub fn lower(&self, class: &Class, to: Priority) {
        let s = &mut *self.state();
        let to = to as usize;
        class.0.wanted.store(to, Ordering::SeqCst);
        let at = class.0.attached.load(Ordering::SeqCst);
        if at != DETACHED && at > to {
            s.waiting[at] -= 1;
            s.waiting[to] += 1;
            class.0.attached.store(to, Ordering::SeqCst);
        }
        // (Lower classes may now be served: a raised waiter held them out.)
        self.changed.notify_all();
    }

    /// Whether a class above `priority` is waiting (or announced).
    pub fn waiting_above(&self, priority: Priority) -> bool {
        self.state().waiting[priority as usize + 1..].iter().any(|&n| n > 0)
    }

    /// Waits, up to `timeout`, until no class above `priority` is waiting;
    /// returns whether none is. For work that never takes the lock but
    /// must not run beside higher classes (an export with no kernels).
    pub fn wait_clear_above(&self, priority: Priority, timeout: Duration) -> bool {
        let above = |s: &mut State| s.waiting[priority as usize + 1..].iter().any(|&n| n > 0);
        let (mut s, _) =
            self.changed.wait_timeout_while(self.state(), timeout, above).unwrap_or_else(|e| e.into_inner());
        !above(&mut s)
    }
}

/// No intent lives for a [`Class`].
const DETACHED: usize = usize::MAX;

/// The class of one piece of work across its intents, which another
/// thread may raise ([`PriorityLock::raise`]). Changed only under the
/// lock's state mutex, so its counts and the lock's always agree.
#[derive(Clone, Debug)]
pub struct Class(Arc<ClassState>);

#[derive(Debug)]
struct ClassState {
    /// The least class its intents take (raised so far).
    wanted: AtomicUsize,
    /// The class its live intent counts as, or [`DETACHED`].
    attached: AtomicUsize,
}

impl Class {
    /// Whether it was raised to `to` or above (or made there).
    pub fn at_least(&self, to: Priority) -> bool {
        self.0.wanted.load(Ordering::SeqCst) >= to as usize
    }
}

impl Default for Class {
    fn default() -> Self {
        Class(Arc::new(ClassState { wanted: AtomicUsize::new(0), attached: AtomicUsize::new(DETACHED) }))
    }
}

/// A class announced as waiting; see [`PriorityLock::intend`].
pub struct Intent<'a, T> {
    lock: &'a PriorityLock<T>,
    class: Class,
}

impl<'a, T> Intent<'a, T> {
    /// Waits until the value is free and no higher class is waiting.
    pub fn lock(&self) -> PriorityGuard<'a, T> {
        self.lock_while(None).expect("waits for as long as it takes")
    }

    /// [`Intent::lock`], giving up (`None`) once `wanted` says the holder
    /// no longer wants it, asked every 20 ms while it waits: a preview an
    /// editor has since replaced stops holding lower classes out.
    pub fn lock_while(&self, wanted: Option<&dyn Fn() -> bool>) -> Option<PriorityGuard<'a, T>> {
        let lock = self.lock;
        let mut s = lock.state();
        // Read under the state mutex each time: a raise moves it.
        let above = |s: &State| {
            let at = self.class.0.attached.load(Ordering::SeqCst);
            s.held || s.waiting[at + 1..].iter().any(|&n| n > 0)
        };
        while above(&s) {
            s = match wanted {
                None => lock.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(wanted) if !wanted() => return None,
                Some(_) => lock.changed.wait_timeout(s, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
        s.held = true;
        drop(s);
        Some(PriorityGuard { lock, value: Some(crate::lock(&lock.value)) })
    }
}

impl<T> Drop for Intent<'_, T> {
    fn drop(&mut self) {
        let mut s = self.lock.state();
        let at = self.class.0.attached.swap(DETACHED, Ordering::SeqCst);
        s.waiting[at] -= 1;
        drop(s);
        self.lock.changed.notify_all();
    }
}

impl<T> std::ops::Deref for PriorityGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held")
    }
}

impl<T> std::ops::DerefMut for PriorityGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held")
    }
}

impl<T> Drop for PriorityGuard<'_, T> {
    fn drop(&mut self) {
        self.value = None;
        self.lock.state().held = false;
        self.lock.changed.notify_all();
    }
}

/// Holds back the start of new export frames while previews are raised.
///
/// Raising and passing are ordered under one mutex: an export frame that
/// [`Gate::pass`]es ran its start before any raise that came later, so
/// "started before the request" has a precise meaning the tests check.
#[derive(Debug, Default)]
pub struct Gate {
    raised: Mutex<usize>,
    lowered: Condvar,
}

impl Gate {
    fn count(&self) -> MutexGuard<'_, usize> {
        crate::lock(&self.raised)
    }

    /// Raises the gate until the guard drops; `then` runs once it is up.
    pub fn raise(&self, then: impl FnOnce()) -> GateGuard<'_> {
        *self.count() += 1;
        then();
        GateGuard { gate: self }
    }

    /// Whether anyone holds the gate up.
    pub fn is_raised(&self) -> bool {
        *self.count() > 0
    }

    /// Runs `start` if the gate is down, atomically with respect to
    /// [`Gate::raise`], and returns what it returns (whether it started);
    /// otherwise waits up to `timeout` for the gate to come down and
    /// returns false without running `start`.
    pub fn pass(&self, timeout: Duration, start: impl FnOnce() -> bool) -> bool {
        let count = self.count();
        if *count == 0 {
            return start();
        }
        let _ = self.lowered.wait_timeout_while(count, timeout, |n| *n > 0);
        false
    }
}

/// A raised [`Gate`]; lowers it on drop.
#[derive(Debug)]
pub struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        *self.gate.count() -= 1;
        self.gate.lowered.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn waiting_for_higher_classes_to_clear_wakes_when_they_go() {
        let lock = Arc::new(PriorityLock::new(()));
        assert!(lock.wait_clear_above(Priority::Export, Duration::ZERO));
        let intent = lock.intend(Priority::Preview);
        assert!(!lock.wait_clear_above(Priority::Export, Duration::from_millis(10)));
        assert!(lock.wait_clear_above(Priority::Preview, Duration::ZERO), "nothing above a preview");
        let l = lock.clone();
        let waiter = std::thread::spawn(move || l.wait_clear_above(Priority::Export, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        drop(intent);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_wait_given_up_lets_lower_classes_in() {
        let lock = Arc::new(PriorityLock::new(()));
        let held = lock.lock(Priority::Export);
        let wanted = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (l, w) = (lock.clone(), wanted.clone());
        let preview = std::thread::spawn(move || {
            let intent = l.intend(Priority::Preview);
            intent.lock_while(Some(&|| w.load(Ordering::SeqCst))).is_some()
        });
        while lock.state().waiting[Priority::Preview as usize] == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock.waiting_above(Priority::Export), "the preview holds exports out while it wants the lock");
        wanted.store(false, Ordering::SeqCst);
        assert!(!preview.join().unwrap(), "it gave up");
        assert!(!lock.waiting_above(Priority::Export), "and lets exports in again");
        drop(held);
    }

    #[test]
    fn higher_classes_go_first() {
        let lock = Arc::new(PriorityLock::new(Vec::new()));
        let guard = lock.lock(Priority::Export);
        let mut handles = Vec::new();
        for (p, delay) in [(Priority::Export, 0), (Priority::Prefetch, 10), (Priority::Preview, 20)] {
            let l = lock.clone();
            handles.push(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                l.lock(p).push(p);
            }));
        }
        // Released once all three wait, whatever order they came in.
        while lock.state().waiting != [1, 1, 1] {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(guard);
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*lock.lock(Priority::Export), [Priority::Preview, Priority::Prefetch, Priority::Export]);
    }

    #[test]
    fn a_raised_class_is_served_as_its_new_class_waiting_or_not() {
        let lock = Arc::new(PriorityLock::new(Vec::new()));
        let guard = lock.lock(Priority::Export);
        let class = Class::default();
        let (l, c) = (lock.clone(), class.clone());
        // Work announced as an export waits beside a prefetch; raised to a
        // preview's class while it waits, it goes first.
        let raised = std::thread::spawn(move || l.intend_as(Priority::Export, &c).lock().push(Priority::Preview));
        let l = lock.clone();
        let prefetch = std::thread::spawn(move || l.lock(Priority::Prefetch).push(Priority::Prefetch));
        while lock.state().waiting[..2] != [1, 1] {
            std::thread::sleep(Duration::from_millis(1));
        }
        lock.raise(&class, Priority::Preview);
        assert!(lock.waiting_above(Priority::Prefetch), "the count moved with it");
        drop(guard);
        raised.join().unwrap();
        prefetch.join().unwrap();
        assert_eq!(*lock.lock(Priority::Export), [Priority::Preview, Priority::Prefetch]);
        assert!(!lock.waiting_above(Priority::Export), "the counts went back to zero");
        // Raised before its intent: the intent starts at the new class.
        let later = Class::default();
        lock.raise(&later, Priority::Preview);
        let intent = lock.intend_as(Priority::Prefetch, &later);
        assert!(lock.waiting_above(Priority::Prefetch));
        drop(intent);
        assert!(!lock.waiting_above(Priority::Export));
        // Lowered again (the preview waiting on it left), a live intent
        // counts at its own class, and later ones start there.
        let intent = lock.intend_as(Priority::Prefetch, &later);
        lock.lower(&later, Priority::Prefetch);
        assert!(!later.at_least(Priority::Preview));
        assert!(!lock.waiting_above(Priority::Prefetch) && lock.waiting_above(Priority::Export));
        drop(intent);
        let intent = lock.intend_as(Priority::Prefetch, &later);
        assert!(!lock.waiting_above(Priority::Prefetch));
        drop(intent);
        assert!(!lock.waiting_above(Priority::Export));
    }

    #[test]
    fn an_intent_keeps_lower_classes_out_while_it_holds_nothing() {
        let lock = Arc::new(PriorityLock::new(Vec::new()));
        let intent = lock.intend(Priority::Preview);
        assert!(lock.waiting_above(Priority::Export));
        let l = lock.clone();
        let export = std::thread::spawn(move || l.lock(Priority::Export).push(Priority::Export));
        std::thread::sleep(Duration::from_millis(50));
        // The lock is free, yet the export waits for the announced preview.
        intent.lock().push(Priority::Preview);
        std::thread::sleep(Duration::from_millis(50));
        intent.lock().push(Priority::Preview);
        drop(intent);
        export.join().unwrap();
        assert!(!lock.waiting_above(Priority::Export));
        assert_eq!(*lock.lock(Priority::Export), [Priority::Preview, Priority::Preview, Priority::Export]);
    }

    #[test]
    fn a_raised_gate_holds_starts_back_until_lowered() {
        let gate = Gate::default();
        let mut started = 0;
        assert!(gate.pass(Duration::ZERO, || {
            started += 1;
            true
        }));
        let guard = gate.raise(|| {});
        assert!(gate.is_raised());
        let t = std::time::Instant::now();
        assert!(!gate.pass(Duration::from_millis(30), || {
            started += 1;
            true
        }));
        assert!(t.elapsed() >= Duration::from_millis(30), "it waited");
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(guard);
            });
            // Woken by the drop, long before the timeout.
            let t = std::time::Instant::now();
            while !gate.pass(Duration::from_secs(10), || {
                started += 1;
                true
            }) {}
            assert!(t.elapsed() < Duration::from_secs(5));
        });
        assert!(!gate.is_raised());
        assert_eq!(started, 2);
    }
}
