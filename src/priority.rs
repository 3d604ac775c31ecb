//! A lock with three priority classes, for the one GPU (or CPU compute)
//! that previews, prefetches and exports share.
//!
//! Whoever holds it owns submission and polling. When it is released the
//! next holder is chosen by class, not arrival: a waiting preview always
//! goes before a waiting prefetch, which goes before a waiting export frame.
//! Work already running is never preempted (a GPU submission cannot be),
//! so a preview waits at most for the one frame in progress.

use std::sync::{Condvar, Mutex, MutexGuard};

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
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the value is free and no higher class is waiting.
    pub fn lock(&self, priority: Priority) -> PriorityGuard<'_, T> {
        let p = priority as usize;
        let mut s = self.state();
        s.waiting[p] += 1;
        while s.held || s.waiting[p + 1..].iter().any(|&n| n > 0) {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.waiting[p] -= 1;
        s.held = true;
        drop(s);
        PriorityGuard { lock: self, value: Some(self.value.lock().unwrap_or_else(|e| e.into_inner())) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

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
        std::thread::sleep(Duration::from_millis(100));
        drop(guard);
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*lock.lock(Priority::Export), [Priority::Preview, Priority::Prefetch, Priority::Export]);
    }
}
