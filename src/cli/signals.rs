//! Signals: the first asks a run to stop, a second (or one outside a run)
//! stops the process at once; either way it ends by the signal.

use framepipe::Cancel;

/// The run that the first interrupt asks to stop, once `process` (or
/// `demo`) has one going.
pub(crate) static RUN: std::sync::OnceLock<Cancel> = std::sync::OnceLock::new();

/// Set by a `-q` run: a stop it was asked for is said by its exit code
/// alone.
pub(crate) static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by the demo, whose folder a second Ctrl-C removes whole.
pub(crate) static DEMO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGINT, SIGTERM (how render farms stop a job) and SIGHUP. During a
/// `process` run the first asks it to stop (frames being written finish,
/// the rest are dropped, the summary is printed, then the process ends by
/// that signal: [`die_by`]). Otherwise, and on a second signal, the
/// process stops at once after removing its unfinished outputs and scratch
/// folders, ending by the signal that stopped it.
fn on_signal(signal: i32) {
    let first = FIRST_SIGNAL
        .compare_exchange(0, signal, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst)
        .is_ok();
    // `timeout` (a farm's wrapper) sends its signal to the process, then
    // again to its process group: the same signal twice within
    // microseconds is one request to stop, not the second that stops at
    // once. A person's second Ctrl-C comes later than this. Timed from
    // when the first was answered: a copy that came while it was (its
    // notice held up by a slow log pipe) is read just after.
    let answered = FIRST_ANSWERED.get().is_some_and(|at| at.elapsed() < SAME_REQUEST);
    if !first && answered && signal == FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    match RUN.get() {
        Some(run) if first && STREAMING.load(std::sync::atomic::Ordering::SeqCst) => {
            // Cancelled and watched before the notice: stderr may be a
            // pipe nobody reads, whose write would hold both back.
            run.cancel();
            // A reader that stalls holds a write, and the run, forever:
            // one signal from a supervisor must still end it. Frames
            // still being made (an 8K frame on a software adapter takes
            // half a minute) are not the reader's doing: only a write
            // left waiting counts. Not once the run has returned: its
            // frames were taken, and the report being written must not be
            // cut off.
            let _ = std::thread::Builder::new().spawn(move || {
                use std::sync::atomic::Ordering::SeqCst;
                while !RUN_RETURNED.load(SeqCst) {
                    let since = crate::files::WRITING_SINCE.load(SeqCst);
                    let waited = crate::files::write_clock().saturating_sub(since);
                    if since != 0 && waited > STREAM_GRACE.as_millis() as u64 {
                        stop_now(signal);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            if !QUIET.load(std::sync::atomic::Ordering::SeqCst) {
                say(format!(
                    "framepipe: stopping: finishing the frames under way and writing them to stdout (interrupt again to stop now; stops at once if the reader leaves a write waiting {} s)",
                    STREAM_GRACE.as_secs()
                ));
            }
            let _ = FIRST_ANSWERED.set(std::time::Instant::now());
        }
        Some(run) if first => {
            run.cancel();
            if !QUIET.load(std::sync::atomic::Ordering::SeqCst) {
                say("framepipe: stopping: finishing the frames being written (interrupt again to stop now)".into());
            }
            let _ = FIRST_ANSWERED.set(std::time::Instant::now());
        }
        _ => stop_now(signal),
    }
}

/// Set as `process` starts: until its run is under way ([`RUN`]), a
/// signal stops it before the run began.
pub(crate) static PREPARING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once a signal stops the process at once: it exits from there.
pub(crate) static STOPPING_NOW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The first signal received (0 before any): a run it stopped ends as it
/// would have ([`die_by`]), once the summary and reports are out.
pub(crate) static FIRST_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// When the first signal, asking a run to stop, was answered.
static FIRST_ANSWERED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// How soon after the first was answered the same signal again is taken
/// as a repeat of its delivery, not a second request ([`on_signal`]).
const SAME_REQUEST: std::time::Duration = std::time::Duration::from_millis(250);

/// SIGINT's number, what Ctrl-C is where there are no signals.
pub(crate) const CTRL_C: i32 = 2;

/// The exit code of a process `signal` stopped: 128 + its number, as a
/// shell reports one the signal ended (130 for Ctrl-C).
pub(crate) fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(130)
}

/// Routes SIGINT, SIGTERM and SIGHUP (Ctrl-C where there are no signals)
/// to [`on_signal`], on a thread of its own, not in the signal handler.
/// Returns once they are routed; if they cannot be, they keep their
/// default action (ending the process). One the parent set to be ignored
/// stays ignored: `nohup` (SIGHUP), a script's background job (SIGINT).
pub(crate) fn route_signals() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let routed_signals: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !ignored(s)).collect();
        let (routed, ready) = crossbeam_channel::bounded(1);
        // Registered on the thread that serves them: no thread, no
        // registration, so a signal never goes unanswered.
        let thread = std::thread::Builder::new().name("framepipe-signals".into()).spawn(move || {
            let signals = signal_hook::iterator::Signals::new(routed_signals);
            let _ = routed.send(());
            if let Ok(mut signals) = signals {
                signals.forever().for_each(on_signal);
            }
        });
        if thread.is_ok() {
            let _ = ready.recv();
        }
    }
    #[cfg(not(unix))]
    let _ = ctrlc::set_handler(|| on_signal(CTRL_C));
}

/// Whether `signal` is set to be ignored (as a parent left it).
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: only reads the current action (no new one is given), into a
    // zeroed struct of the platform's layout.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut action) == 0 && action.sa_sigaction == libc::SIG_IGN
    }
}

/// Ends the process as `signal` would have had it not been caught, once
/// its clean-up is done: a shell then sees a process the signal ended
/// (`$?` is 128 + its number) and stops a loop or script running it, where
/// one that exits with that code is taken to have handled the signal and
/// the loop goes on. Like `_exit`, it runs no exit handlers. Where the
/// signal cannot end it, it exits with 128 + the number.
pub(crate) fn die_by(signal: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: the signal's default action is restored, unblocked on this
    // thread and raised on it: the process ends.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    exit_now(signal_exit_code(signal).into())
}

/// Set once the run has returned (its stream's last frame taken): a
/// stream's grace for its reader is over.
pub(crate) static RUN_RETURNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set while `process` writes its frames to stdout.
pub(crate) static STREAMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The earlier reports of its output that an `--overwrite` run replaces
/// at its end: stopped at once, it writes none, and they no longer
/// describe the outputs, so they go. Each leaves the list as the run's own
/// report takes its name.
static STALE_REPORTS: std::sync::Mutex<Vec<StaleReport>> = std::sync::Mutex::new(Vec::new());

/// [`STALE_REPORTS`], locked (its lists stay whole through any panic).
pub(crate) fn stale_reports() -> std::sync::MutexGuard<'static, Vec<StaleReport>> {
    STALE_REPORTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An earlier report as the run found it: removed only while still that
/// file (not one put under its name since: another file, or another
/// length or modification time).
pub(crate) struct StaleReport {
    pub(crate) path: std::path::PathBuf,
    stamp: Option<ReportStamp>,
}

/// A file's identity (device and inode, where it has them), length and
/// modification time.
type ReportStamp = (Option<(u64, u64)>, u64, std::time::SystemTime);

impl StaleReport {
    pub(crate) fn new(path: std::path::PathBuf) -> Self {
        let stamp = Self::stamp(&path);
        StaleReport { path, stamp }
    }

    fn stamp(path: &std::path::Path) -> Option<ReportStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some((framepipe::io::file_id(path), meta.len(), meta.modified().ok()?))
    }

    /// Whether it is still the file the run found.
    fn unchanged(&self) -> bool {
        self.stamp.is_some() && Self::stamp(&self.path) == self.stamp
    }
}

/// Set once the run has written a frame: its earlier reports no longer
/// describe the outputs from then on (before, they still do, and stay).
/// Set as the frame's progress reaches the main thread, a moment after
/// its rename: a second signal in between keeps the earlier report.
pub(crate) static REPLACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set while `process` writes files that `--skip-existing` can resume.
pub(crate) static RESUMABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set while that run has `--skip-existing` itself.
pub(crate) static SKIPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long, once a signal asked a stream's run to stop, a write to it may
/// be left waiting by its reader before the run stops at once.
const STREAM_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Stops the process at once, removing its unfinished outputs: ends as
/// `signal` would ([`die_by`]).
fn stop_now(signal: i32) -> ! {
    STOPPING_NOW.store(true, std::sync::atomic::Ordering::SeqCst);
    // Once a frame was written, earlier reports go: first, a report being
    // written over one is let finish, for a while (a hung network mount
    // must not keep the process from stopping; the earlier report then
    // stays).
    let replacing = REPLACING.load(std::sync::atomic::Ordering::SeqCst);
    let stale = replacing.then(|| lock_within(&STALE_REPORTS, std::time::Duration::from_secs(2))).flatten();
    let removed = framepipe::io::remove_partials();
    // (A count of the frames kept could miss one renamed into
    // place just now, before its report: none is given.)
    // (Not the demo's: its folder goes whole.)
    let demo = DEMO.load(std::sync::atomic::Ordering::SeqCst);
    let streaming = STREAMING.load(std::sync::atomic::Ordering::SeqCst);
    let wrote = RUN.get().is_some() && replacing;
    let kept = if wrote && !demo && !streaming { "the frames written so far are kept, " } else { "" };
    // One signal before `process` began its run (opening the GPU,
    // checking the outputs) stops it too: said as that, not as a second.
    let preparing = RUN.get().is_none() && PREPARING.load(std::sync::atomic::Ordering::SeqCst);
    let how = if preparing && FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) == signal {
        "before the run began"
    } else {
        "at once"
    };
    let scratch = match removed.scratch_dirs {
        0 => String::new(),
        _ if demo => " and the demo's folder".to_string(),
        n => format!(" and {n} scratch folder{} (with the frames written there)", crate::plural(n)),
    };
    say(format!(
        "framepipe: stopped {how}; {kept}{} unfinished output{}{scratch} removed",
        removed.partials,
        crate::plural(removed.partials)
    ));
    for report in stale.iter().flat_map(|s| s.iter()).filter(|r| r.unchanged()) {
        if std::fs::remove_file(&report.path).is_ok() {
            say(format!(
                "framepipe: removed the earlier report {}: the run had begun to replace what it describes",
                report.path.display()
            ));
        }
    }
    // Only once a frame was written: before, the same command is as good.
    if RESUMABLE.load(std::sync::atomic::Ordering::SeqCst) && replacing {
        say(crate::notices::resume_hint(SKIPPING.load(std::sync::atomic::Ordering::SeqCst), ""));
    }
    die_by(signal);
}

/// Says `line` on stderr without the signal thread being held by it: a log
/// pipe nobody reads would keep the write, and with it the thread, from
/// answering the next signal or ending the process. The write is waited
/// for a moment (so notices keep their order); once one was not done in
/// that time, later ones are not waited for. (A process that ends takes an
/// unfinished one with it.)
fn say(line: String) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    static STUCK: AtomicBool = AtomicBool::new(false);
    let (said, done) = crossbeam_channel::bounded(1);
    let writer = std::thread::Builder::new().name("framepipe-notice".into()).spawn(move || {
        note!("{line}");
        let _ = said.send(());
    });
    if writer.is_ok() && !STUCK.load(SeqCst) && done.recv_timeout(STDERR_PATIENCE).is_err() {
        STUCK.store(true, SeqCst);
    }
}

/// How long a notice of the signal thread's may take to write ([`say`]).
const STDERR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// `mutex` locked, if it comes free within `wait`.
fn lock_within<T>(mutex: &std::sync::Mutex<T>, wait: std::time::Duration) -> Option<std::sync::MutexGuard<'_, T>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// Ends the process without running exit handlers: `exit` runs the C and
/// C++ ones (static destructors), and a driver another thread is loading or
/// using at that moment (Mesa's LLVM, on a signal during start-up) then
/// frees what it is still building: "double free", an abort, exit 134
/// instead of 130. Nothing of framepipe's waits on them: its unfinished
/// files are removed before, and stderr is unbuffered.
fn exit_now(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` only ends the process.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}
