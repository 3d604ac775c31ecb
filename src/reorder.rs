//! Putting frames that finish out of order back in sequence order.
//!
//! Files can be written in any order, but a stream (a pipe into an
//! encoder) must get frame N before frame N+1. Encoders finish frames in
//! whatever order their codec times allow, so the stream writer keeps the
//! early ones in a [`Reorder`] buffer until the frames before them arrive.
//! A [`Window`] keeps the reader from dispatching frames more than a fixed
//! number of positions past the last one written, so one slow frame cannot
//! make the buffer grow without bound.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Results keyed by frame number, released in the order given at creation.
pub(crate) struct Reorder<T> {
    order: Vec<u64>,
    next: usize,
    /// Arrived but not yet released; `None` marks a frame that failed.
    pending: HashMap<u64, Option<T>>,
}

impl<T> Reorder<T> {
    /// A buffer that releases frames in `order`.
    pub(crate) fn new(order: Vec<u64>) -> Self {
        Reorder { order, next: 0, pending: HashMap::new() }
    }

    /// Files frame `number`'s result; `None` when the frame failed, so the
    /// ones after it are not held forever.
    pub(crate) fn insert(&mut self, number: u64, item: Option<T>) {
        self.pending.insert(number, item);
    }

    /// The next frame in order, once it has arrived.
    pub(crate) fn pop(&mut self) -> Option<(u64, Option<T>)> {
        let number = *self.order.get(self.next)?;
        let item = self.pending.remove(&number)?;
        self.next += 1;
        Some((number, item))
    }

    /// Frames released so far.
    pub(crate) fn released(&self) -> usize {
        self.next
    }

    /// Gives up on the frames still held (a run that stopped before the
    /// ones they wait for arrived); returns how many results that drops.
    pub(crate) fn abandon(&mut self) -> usize {
        self.pending.drain().filter(|(_, item)| item.is_some()).count()
    }
}

/// How far the reader may run ahead of the stream writer.
pub(crate) struct Window {
    released: Mutex<usize>,
    moved: Condvar,
    size: usize,
}

impl Window {
    /// A window of `size` positions (at least one).
    pub(crate) fn new(size: usize) -> Self {
        Window { released: Mutex::new(0), moved: Condvar::new(), size: size.max(1) }
    }

    /// Records that the first `released` positions are written (or dropped).
    pub(crate) fn advance(&self, released: usize) {
        *crate::lock(&self.released) = released;
        self.moved.notify_all();
    }

    /// Waits up to `timeout` for `position` to be inside the window;
    /// returns whether it is, so the caller can check for a stop between
    /// waits.
    pub(crate) fn admit(&self, position: usize, timeout: Duration) -> bool {
        let guard = crate::lock(&self.released);
        let (guard, _) = self
            .moved
            .wait_timeout_while(guard, timeout, |released| position >= *released + self.size)
            .unwrap_or_else(|p| p.into_inner());
        position < *guard + self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_and_passes_failed_frames() {
        let mut r = Reorder::new(vec![1001, 1002, 1005, 1007]);
        r.insert(1005, Some("c"));
        r.insert(1007, Some("d"));
        assert!(r.pop().is_none(), "1001 has not arrived");
        assert_eq!(r.pending.len(), 2);
        r.insert(1002, None);
        assert!(r.pop().is_none());
        r.insert(1001, Some("a"));
        let out: Vec<_> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(out, vec![(1001, Some("a")), (1002, None), (1005, Some("c")), (1007, Some("d"))]);
        assert_eq!((r.released(), r.pending.len()), (4, 0));
        assert!(r.pop().is_none());

        let mut r = Reorder::new(vec![1, 2, 3]);
        r.insert(2, None);
        r.insert(3, Some(()));
        assert_eq!(r.abandon(), 1, "only results count, not failures");
        assert_eq!(r.pending.len(), 0);
    }

    #[test]
    fn window_admits_only_positions_near_the_writer() {
        let w = Window::new(3);
        assert!(w.admit(2, Duration::ZERO));
        assert!(!w.admit(3, Duration::from_millis(1)));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                w.advance(1);
            });
            assert!(w.admit(3, Duration::from_secs(10)), "woken by the writer");
        });
        assert!(!w.admit(4, Duration::ZERO));
    }
}
