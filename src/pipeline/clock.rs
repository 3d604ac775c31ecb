//! Per-worker time accounting: busy, waiting for input, waiting to pass
//! work on or held back by what is downstream (a free slot, previews), and
//! the intervals the timeline draws.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::report::Interval;

/// One worker's clock.
#[derive(Default)]
pub(crate) struct Clock {
    pub(crate) busy: Duration,
    pub(crate) wait_in: Duration,
    pub(crate) wait_out: Duration,
    pub(crate) frames: usize,
    pub(crate) intervals: Vec<Interval>,
}

impl Clock {
    pub(crate) fn work<T>(
        &mut self,
        start: Instant,
        stage: &'static str,
        worker: usize,
        frame: u64,
        f: impl FnOnce() -> T,
    ) -> T {
        let t0 = Instant::now();
        let out = f();
        let t1 = Instant::now();
        self.busy += t1 - t0;
        self.frames += 1;
        self.intervals.push(Interval {
            stage,
            worker,
            start: (t0 - start).as_secs_f64(),
            end: (t1 - start).as_secs_f64(),
            frame,
        });
        out
    }

    /// Takes `waited` (spent inside the last [`Clock::work`] waiting behind
    /// previews, for the backend or for memory) off its busy time, as time
    /// held back by what is downstream; its interval starts that much
    /// later (the waits come before the work that goes through), so the
    /// timeline's bar is as long as the work and where it was done.
    pub(crate) fn discount(&mut self, waited: Duration) {
        // Never more than that work took.
        let took = self.intervals.last().map_or(Duration::ZERO, |l| Duration::from_secs_f64(l.end - l.start));
        let waited = waited.min(took).min(self.busy);
        self.busy -= waited;
        self.wait_out += waited;
        if let Some(last) = self.intervals.last_mut() {
            last.start = (last.start + waited.as_secs_f64()).min(last.end);
        }
    }

    /// Takes back the last [`Clock::work`], a frame it did not get through
    /// (refused memory, so tried again later; or dropped as the run
    /// stopped): no frame, no interval on the timeline, and its time counts
    /// as held back, not as work.
    pub(crate) fn undo_last(&mut self) {
        self.frames = self.frames.saturating_sub(1);
        if let Some(last) = self.intervals.pop() {
            let took = Duration::from_secs_f64(last.end - last.start).min(self.busy);
            self.busy -= took;
            self.wait_out += took;
        }
    }

    /// Like [`Clock::work`] for the second half of a frame's work (the GPU
    /// owner waiting for it): busy time and an interval, no new frame.
    pub(crate) fn wait<T>(&mut self, start: Instant, stage: &'static str, frame: u64, f: impl FnOnce() -> T) -> T {
        let frames = self.frames;
        let out = self.work(start, stage, 0, frame, f);
        self.frames = frames;
        out
    }

    pub(crate) fn recv<T>(&mut self, rx: &Receiver<T>) -> Option<T> {
        let t = Instant::now();
        let v = rx.recv().ok();
        self.wait_in += t.elapsed();
        v
    }

    pub(crate) fn send<T>(&mut self, tx: &Sender<T>, v: T) -> bool {
        let t = Instant::now();
        let ok = tx.send(v).is_ok();
        self.wait_out += t.elapsed();
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time waited inside a frame's work leaves its busy time and its bar.
    #[test]
    fn a_discounted_wait_is_neither_busy_nor_drawn() {
        let start = Instant::now();
        let mut clock = Clock::default();
        clock.work(start, "gpu", 0, 7, || std::thread::sleep(Duration::from_millis(30)));
        let (busy, start_at, end) = (clock.busy, clock.intervals[0].start, clock.intervals[0].end);
        clock.discount(Duration::from_millis(20));
        assert_eq!(
            (clock.busy, clock.wait_out, clock.frames),
            (busy - Duration::from_millis(20), Duration::from_millis(20), 1)
        );
        let bar = clock.intervals[0].end - clock.intervals[0].start;
        assert!((bar - clock.busy.as_secs_f64()).abs() < 1e-9, "{bar}");
        assert!(clock.intervals[0].start > start_at && clock.intervals[0].end == end, "the wait came first");
        // Never more than the work took.
        clock.discount(Duration::from_secs(5));
        assert!(clock.busy < Duration::from_micros(1), "{:?}", clock.busy);
        assert!((clock.intervals[0].end - clock.intervals[0].start).abs() < 1e-9);
    }

    /// A frame that did not get through leaves no frame, bar or busy time.
    #[test]
    fn an_undone_frame_is_held_back_time() {
        let start = Instant::now();
        let mut clock = Clock::default();
        clock.work(start, "gpu", 0, 1, || std::thread::sleep(Duration::from_millis(5)));
        let (busy, bars) = (clock.busy, clock.intervals.clone());
        clock.work(start, "gpu", 0, 2, || std::thread::sleep(Duration::from_millis(10)));
        let tried = clock.busy - busy;
        clock.undo_last();
        assert_eq!((clock.frames, clock.intervals.len()), (1, 1));
        assert!(clock.busy.abs_diff(busy) < Duration::from_micros(1), "{:?} {busy:?}", clock.busy);
        assert_eq!(clock.intervals[0].frame, bars[0].frame);
        assert!((clock.wait_out.as_secs_f64() - tried.as_secs_f64()).abs() < 1e-6, "{:?}", clock.wait_out);
    }
}
