//! The VRAM ledger: one count of every GPU byte the engine allocates,
//! against a hard budget.
//!
//! Frame slots, band scratch, staging buffers, uniforms, timers: each GPU
//! buffer is created through [`Ledger::reserve`] and holds its
//! [`Reservation`] for as long as it lives, so the ledger's `current` is
//! the engine's GPU footprint and `peak` its high-water mark. A reservation
//! that would cross the budget fails (or, with [`Ledger::reserve_wait`],
//! waits for a release); it never silently exceeds.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// Default VRAM budget: 2 GiB.
pub const DEFAULT_BUDGET: u64 = 2 << 30;

#[derive(Debug, Default)]
struct Counts {
    current: u64,
    peak: u64,
    /// High-water marks of the [`PeakWatch`]es alive, by id.
    watches: std::collections::BTreeMap<u64, u64>,
    next_watch: u64,
    /// Releases so far: a waiter compares it with what it saw when it
    /// started its attempt (see [`ReleaseMark`]), so no release by another
    /// thread since is missed.
    releases: u64,
}

/// Counts GPU bytes against a budget. Shared as `Arc<Ledger>`.
#[derive(Debug)]
pub struct Ledger {
    budget: u64,
    counts: Mutex<Counts>,
    released: Condvar,
}

impl Ledger {
    /// A ledger with `budget` bytes.
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(Ledger { budget, counts: Mutex::default(), released: Condvar::new() })
    }

    /// A ledger that never refuses (for one-off work outside an engine).
    pub fn unlimited() -> Arc<Self> {
        Self::new(u64::MAX)
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes reserved now.
    pub fn current(&self) -> u64 {
        self.lock().current
    }

    /// Most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// Starts a high-water mark of its own, from the bytes held now: what
    /// one run reports, when the engine's lifetime peak includes earlier
    /// runs and previews.
    pub fn watch(self: &Arc<Self>) -> PeakWatch {
        let mut c = self.lock();
        let id = c.next_watch;
        c.next_watch += 1;
        let now = c.current;
        c.watches.insert(id, now);
        PeakWatch { ledger: self.clone(), id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        crate::lock(&self.counts)
    }

    /// Reserves `bytes` for `what`, or fails at once if that would cross
    /// the budget.
    ///
    /// # Errors
    /// [`Error::Budget`] saying what needed how much and what was left.
    pub fn reserve(self: &Arc<Self>, bytes: u64, what: &str) -> Result<Reservation> {
        let mut c = self.lock();
        self.take(&mut c, bytes, what)
    }

    /// Like [`Ledger::reserve`], but waits up to `timeout` for releases
    /// when the budget is momentarily full. Requests larger than the whole
    /// budget fail at once.
    ///
    /// # Errors
    /// [`Error::Budget`] when it cannot fit in time.
    pub fn reserve_wait(self: &Arc<Self>, bytes: u64, what: &str, timeout: Duration) -> Result<Reservation> {
        let mut c = self.lock();
        if bytes <= self.budget {
            let (guard, _) = self
                .released
                .wait_timeout_while(c, timeout, |c| c.current.saturating_add(bytes) > self.budget)
                .unwrap_or_else(|p| p.into_inner());
            c = guard;
        }
        self.take(&mut c, bytes, what)
    }

    /// Refuses, reserving nothing, what needs more than the whole budget
    /// (`what`'s pieces may each fit, never all of them at once), as
    /// [`Ledger::reserve`] refuses one such piece: no release can make room.
    ///
    /// # Errors
    /// [`Error::Budget`] with the sizes.
    pub fn check_fits(&self, bytes: u64, what: &str) -> Result<()> {
        if bytes > self.budget {
            OWN_OVERSIZED.set(OWN_OVERSIZED.get() + 1);
            let (need, budget) = human_bytes_pair(bytes, self.budget);
            return Err(Error::Budget(format!("{what} needs {need}, more than the whole {budget} VRAM budget")));
        }
        Ok(())
    }

    /// Releases so far.
    pub fn releases(&self) -> u64 {
        self.lock().releases
    }

    /// Taken before an attempt that the budget may refuse; see
    /// [`ReleaseMark::since`].
    pub fn mark(&self) -> ReleaseMark {
        ReleaseMark {
            total: self.releases(),
            own: OWN_RELEASES.get(),
            oversized: OWN_OVERSIZED.get(),
            _thread: std::marker::PhantomData,
        }
    }

    /// Waits until the release count passes `since` (at once if it already
    /// has), or `timeout` passes.
    pub fn wait_release(&self, since: u64, timeout: Duration) {
        let c = self.lock();
        let _ = self.released.wait_timeout_while(c, timeout, |c| c.releases <= since);
    }

    /// Wakes [`Ledger::wait_release`] as a release would, without
    /// returning bytes: for memory that stays reserved but changes hands
    /// (a preview's slot put back where the next preview takes it), so
    /// the one waiting for it does not sleep out its timeout.
    pub fn hand_over(&self) {
        count_own_release();
        self.lock().releases += 1;
        self.released.notify_all();
    }

    fn take(self: &Arc<Self>, c: &mut Counts, bytes: u64, what: &str) -> Result<Reservation> {
        self.check_fits(bytes, what)?;
        if c.current.checked_add(bytes).is_none_or(|total| total > self.budget) {
            let (need, free) = human_bytes_pair(bytes, self.budget - c.current);
            return Err(Error::Budget(format!(
                "{what} needs {need}, but only {free} of the {} VRAM budget is free",
                human_bytes(self.budget)
            )));
        }
        c.current += bytes;
        c.peak = c.peak.max(c.current);
        let current = c.current;
        for mark in c.watches.values_mut() {
            *mark = (*mark).max(current);
        }
        Ok(Reservation { ledger: self.clone(), bytes })
    }
}

thread_local! {
    /// Releases (and hand-overs) this thread made, on any ledger.
    static OWN_RELEASES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Requests this thread made that were larger than the whole budget of
    /// their ledger: no release can ever make room for them.
    static OWN_OVERSIZED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_own_release() {
    OWN_RELEASES.set(OWN_RELEASES.get() + 1);
}

/// Where the release count stood before an attempt, and how many of the
/// releases were this thread's.
///
/// Bound to the thread that took it (the count of its own releases is the
/// thread's), so it is neither `Send` nor `Sync`. That count covers every
/// ledger: a release the thread makes on another engine's ledger meanwhile
/// would only make a wait sleep to its timeout.
#[derive(Clone, Copy, Debug)]
pub struct ReleaseMark {
    total: u64,
    own: u64,
    oversized: u64,
    _thread: std::marker::PhantomData<*const ()>,
}

impl ReleaseMark {
    /// The count to pass to [`Ledger::wait_release`] once the attempt was
    /// refused and undid what it had reserved: the mark plus this thread's
    /// releases since. Its own undoing is no reason to wake, but a release
    /// by another thread at any time since the mark is, even one that came
    /// before the refusal was seen (the memory is free: try again at once).
    /// What the thread gives back after this call (shedding, reclaiming)
    /// wakes the wait as any release does.
    pub fn since(&self) -> u64 {
        self.total + OWN_RELEASES.get().saturating_sub(self.own)
    }

    /// True when, since the mark, this thread asked for more than the
    /// whole budget: waiting for releases cannot help, the attempt fails.
    pub fn hopeless(&self) -> bool {
        OWN_OVERSIZED.get() > self.oversized
    }
}

/// A high-water mark from [`Ledger::watch`] on; stops when dropped.
#[derive(Debug)]
pub struct PeakWatch {
    ledger: Arc<Ledger>,
    id: u64,
}

impl PeakWatch {
    /// Most bytes reserved at once since the watch started.
    pub fn peak(&self) -> u64 {
        self.ledger.lock().watches.get(&self.id).copied().unwrap_or(0)
    }
}

impl Drop for PeakWatch {
    fn drop(&mut self) {
        self.ledger.lock().watches.remove(&self.id);
    }
}

/// Bytes held against a ledger; released on drop.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.ledger.lock();
        c.current -= self.bytes;
        c.releases += 1;
        count_own_release();
        drop(c);
        self.ledger.released.notify_all();
    }
}

/// Parses `512MiB`, `2GiB`, `1.5GB`, `800M`, or plain bytes.
///
/// # Errors
/// [`Error::InvalidValue`] naming the text.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let bad = || Error::invalid("size", s, "bytes, or a number with a unit: 512MiB, 2GiB, 1.5GB, 800MB");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "p" | "pb" => 1e15,
        "e" | "eb" => 1e18,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        "eib" => 1024f64.powi(6),
        _ => return Err(bad()),
    };
    let too_big = || Error::invalid("size", s, "at most 2^64 - 1 bytes, one byte under 16 EiB");
    // Whole numbers exactly (a u64 does not fit an f64's 53 bits); the
    // rest rounded, and either refused past u64 rather than saturated.
    if let Ok(whole) = num.parse::<u64>() {
        let zero = || Error::invalid("size", s, "more than 0 bytes");
        return match whole.checked_mul(scale as u64) {
            Some(0) => Err(zero()),
            Some(bytes) => Ok(bytes),
            None => Err(too_big()),
        };
    }
    if scale == 1.0 && value.fract() != 0.0 {
        return Err(Error::invalid("size", s, "a whole number of bytes, or a unit: 1.5GiB"));
    }
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(too_big());
    }
    if bytes < 1.0 {
        return Err(Error::invalid("size", s, "at least 1 byte"));
    }
    Ok(bytes.round() as u64)
}

/// Binary units, 1024 apart.
const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `1.50 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// Two sizes set against each other (a need and a budget), rounded as
/// [`human_bytes`] rounds them unless that would make different sizes read
/// the same (`12.89 MiB, more than the 12.89 MiB budget`): then in bytes.
pub fn human_bytes_pair(a: u64, b: u64) -> (String, String) {
    // In the larger one's unit where the smaller is at least half of one
    // (`1.00 GiB` against `0.99 GiB`, not `1023.00 MiB`); else each its own
    // (not `0.00 GiB`).
    let (big, small) = (a.max(b), a.min(b));
    let mut unit = 0;
    while unit + 1 < UNITS.len() && big >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let (ha, hb) = if unit > 0 && small.saturating_mul(2) >> (10 * unit) > 0 {
        let of = |v: u64| format!("{:.2} {}", v as f64 / (1u64 << (10 * unit)) as f64, UNITS[unit]);
        (of(a), of(b))
    } else {
        (human_bytes(a), human_bytes(b))
    };
    if ha == hb && a != b { (format!("{a} B"), format!("{b} B")) } else { (ha, hb) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("18446744073709551615").unwrap(), u64::MAX);
        // Past u64: refused, never saturated.
        assert_eq!(parse_bytes("1PiB").unwrap(), 1 << 50);
        assert_eq!(parse_bytes("15EiB").unwrap(), 15 << 60);
        for zero in ["0", "0B", "0MiB"] {
            assert!(parse_bytes(zero).unwrap_err().to_string().contains("more than 0 bytes"), "{zero}");
        }
        assert!(
            parse_bytes("0.1B").is_err()
                && parse_bytes("0.0001KiB").unwrap_err().to_string().contains("at least 1 byte")
        );
        assert!(parse_bytes("").unwrap_err().to_string().starts_with("invalid size \"\" (expected"));
        for bad in ["", "GiB", "-1GiB", "2 parsecs", "0", "1.5", "1.5B", "0.0004KB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        for past in ["18446744073709551616", "16777216TiB", "18446744073709551615.5", "16EiB", "20EB"] {
            assert!(
                parse_bytes(past).unwrap_err().to_string().contains("at most 2^64 - 1 bytes, one byte under 16 EiB"),
                "{past}"
            );
        }
    }

    #[test]
    fn releases_by_others_since_the_mark_wake_the_wait_and_its_own_undoing_does_not() {
        let l = Ledger::new(100);
        let other = l.reserve(50, "other").unwrap();
        // An attempt reserves a part, is refused the rest, undoes its part.
        let attempt = |l: &Arc<Ledger>| {
            let part = l.reserve(30, "part").unwrap();
            assert!(l.reserve(30, "rest").is_err());
            drop(part);
        };
        let mark = l.mark();
        attempt(&l);
        let t = std::time::Instant::now();
        l.wait_release(mark.since(), Duration::from_millis(100));
        assert!(t.elapsed() >= Duration::from_millis(100), "its own undoing is no reason to retry");
        // Another thread's release after the refusal, before the attempt
        // undid its part: the memory is free, the wait ends at once.
        let mark = l.mark();
        let part = l.reserve(30, "part").unwrap();
        assert!(l.reserve(30, "rest").is_err());
        std::thread::spawn(move || drop(other)).join().unwrap();
        drop(part);
        let t = std::time::Instant::now();
        l.wait_release(mark.since(), Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(l.reserve(60, "rest").is_ok());
    }

    #[test]
    fn only_a_request_larger_than_the_whole_budget_is_hopeless() {
        let l = Ledger::new(100);
        let held = l.reserve(60, "held").unwrap();
        // Past u64 is past any budget, however large.
        let unlimited = Ledger::new(u64::MAX);
        let _one = unlimited.reserve(1, "one").unwrap();
        assert!(unlimited.reserve(u64::MAX, "all").is_err());
        let mark = l.mark();
        assert!(l.reserve(41, "full").is_err());
        assert!(!mark.hopeless(), "a release can make room");
        let err = l.reserve(101, "slot").unwrap_err().to_string();
        assert!(mark.hopeless());
        assert!(err.contains("slot needs 101 B, more than the whole 100 B VRAM budget"), "{err}");
        // Sizes that would round alike are said in bytes.
        let close = Ledger::new(13_516_144);
        let err = close.reserve(13_518_132, "frame").unwrap_err().to_string();
        assert!(err.contains("frame needs 13518132 B, more than the whole 13516144 B VRAM budget"), "{err}");
        assert_eq!(human_bytes_pair(2 << 20, 3 << 20), ("2.00 MiB".into(), "3.00 MiB".into()));
        // One unit for both, across a unit boundary; far apart, each its own.
        assert_eq!(human_bytes_pair(3 << 29, 1023 << 20), ("1.50 GiB".into(), "1.00 GiB".into()));
        let close = human_bytes_pair((1 << 30) + (1 << 20), (1 << 30) - 1);
        assert_eq!(close, ("1074790400 B".into(), "1073741823 B".into()));
        assert_eq!(human_bytes_pair(3 << 30, 2 << 20), ("3.00 GiB".into(), "2.00 MiB".into()));
        assert_eq!(human_bytes_pair(3 << 29, 600 << 20), ("1.50 GiB".into(), "0.59 GiB".into()));
        assert_eq!(human_bytes_pair(3 << 29, 500 << 20), ("1.50 GiB".into(), "500.00 MiB".into()));
        // Another thread's hopeless request is not this one's.
        let mark = l.mark();
        let l2 = l.clone();
        std::thread::spawn(move || assert!(l2.reserve(500, "other").is_err())).join().unwrap();
        assert!(!mark.hopeless());
        drop(held);
    }

    #[test]
    fn a_hand_over_wakes_a_waiter_without_freeing_bytes() {
        let l = Ledger::new(100);
        let _held = l.reserve(100, "slot").unwrap();
        let since = l.mark().since();
        let l2 = l.clone();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            l2.wait_release(since, Duration::from_secs(30));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        l.hand_over();
        assert!(waiter.join().unwrap() < Duration::from_secs(30));
        assert_eq!(l.current(), 100);
    }

    #[test]
    fn reservations_are_bounded_and_released() {
        let l = Ledger::new(100);
        let a = l.reserve(60, "a").unwrap();
        assert!(l.reserve(41, "b").unwrap_err().to_string().contains("b needs 41 B"));
        let b = l.reserve(40, "b").unwrap();
        assert_eq!((l.current(), l.peak()), (100, 100));
        drop(a);
        assert_eq!(l.current(), 40);
        let l2 = l.clone();
        let waiter = std::thread::spawn(move || l2.reserve_wait(100, "c", Duration::from_secs(5)).map(|r| r.bytes()));
        std::thread::sleep(Duration::from_millis(50));
        drop(b);
        assert_eq!(waiter.join().unwrap().unwrap(), 100);
        assert_eq!(l.peak(), 100);
        assert!(l.reserve_wait(101, "d", Duration::from_secs(5)).is_err());
        // A watch sees only its own stretch of time.
        let held = l.reserve(30, "e").unwrap();
        let watch = l.watch();
        assert_eq!(watch.peak(), 30);
        let more = l.reserve(20, "f").unwrap();
        drop(more);
        assert_eq!((watch.peak(), l.peak()), (50, 100));
        drop(held);
    }
}
