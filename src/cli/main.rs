//! The `framepipe` command line: parse arguments, call the library, print.

use std::process::ExitCode;

use clap::Parser;
use framepipe::Error;

use crate::args::{Cli, Command, attach_negative_values, non_utf8_argument, value_options};
use crate::signals::{FIRST_SIGNAL, STOPPING_NOW, die_by, route_signals};

/// `eprintln!` that never panics: a full or closed stderr (`2>/dev/full`,
/// a log pipe that went away) must not abort a run that is writing frames.
/// Each note is one line of a log: control characters in it (a newline in
/// a file name) are written escaped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{}", $crate::printable(&format!($($arg)*)));
    }};
}

/// The plural ending for a count: `frame{}` of 1 is `frame`, of 2 `frames`.
pub(crate) fn plural<N: PartialEq + From<u8>>(n: N) -> &'static str {
    if n == N::from(1) { "" } else { "s" }
}

mod args;
mod commands;
mod files;
mod notices;
mod process;
mod signals;

/// `text` with control characters escaped (`\n`, `\u{1b}`), as one line.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

fn main() -> ExitCode {
    quiet_mesa_wsi();
    route_signals();
    // A codec's panic on an odd file is that file's one-line decode error:
    // not printed as a crash as well.
    framepipe::io::quiet_decoder_panics();
    let cli = match Cli::try_parse_from(attach_negative_values(std::env::args_os(), &value_options(false))) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // The flag that raises the budget, as the command spells it (`demo`
    // runs on the default budget: none).
    let budget_flag = match cli.command {
        Command::Process(_) => Some("--vram-budget"),
        Command::BenchPool(_) => Some("--budget"),
        Command::Generate(_) | Command::Info | Command::Demo(_) => None,
    };
    let result = match cli.command {
        Command::Process(args) => process::process(args),
        Command::Generate(args) => commands::generate(args),
        Command::Info => commands::info(),
        Command::BenchPool(args) => commands::bench_pool(args),
        Command::Demo(args) => commands::demo(args),
    };
    // A signal stopping the process at once ends it (the signal thread is
    // on its way to): what failed because of it (no new output may be
    // made) says nothing.
    let stopping = || {
        if STOPPING_NOW.load(std::sync::atomic::Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
    };
    // A signal that asked a run to stop (or came once it had finished)
    // ends the process, once the run's state is dropped and all is said.
    let signalled = || {
        let signal = FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
        if signal != 0 {
            die_by(signal);
        }
    };
    match result {
        Ok(code) => {
            stopping();
            signalled();
            code
        }
        Err(e) => {
            stopping();
            let e = in_flag_terms(e);
            note!("error: {e}{}", flag_hint(&e, budget_flag));
            signalled();
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

/// `e` with the library's name for a setting replaced by the flag that
/// sets it, where the two differ in more than spelling.
fn in_flag_terms(e: Error) -> Error {
    match e {
        Error::InvalidValue { what, value, expected } => {
            let what = match what.as_str() {
                "adapter" => "--adapter".to_owned(),
                "skip existing" => "--skip-existing".to_owned(),
                _ => what,
            };
            Error::InvalidValue { what, value, expected }
        }
        e => e,
    }
}

/// The flag that changes the outcome of an error, where one does: the
/// library's messages name no command-line flags (an editor embedding it
/// shows them to its users), so the command line adds its own.
fn flag_hint(e: &Error, budget_flag: Option<&str>) -> String {
    match e {
        Error::MissingFrames { .. } => " (use --missing skip to process the others)".into(),
        Error::OutputExists(_) => " (use --overwrite to replace it)".into(),
        Error::Budget(_) => budget_flag.map(|flag| format!(" (raise {flag})")).unwrap_or_default(),
        Error::InvalidValue { what, value, .. } if what == "--adapter" && value.trim_matches('"').trim().is_empty() => {
            " (framepipe info lists the adapters)".into()
        }
        _ => String::new(),
    }
}

/// Help and version go to stdout as clap writes them; a usage error is
/// one line on stderr (clap's own spans several: a tip, the usage, a
/// pointer to `--help`), naming the argument and the value, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Help that cannot be written (`--help > /dev/full`) is a failure;
        // a reader that stopped early (`| head`) got what it wanted.
        use std::io::Write as _;
        return match e.print().and_then(|()| std::io::stdout().flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                note!("error: stdout: {e}");
                ExitCode::from(1)
            }
            _ => ExitCode::SUCCESS,
        };
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    if e.kind() == ErrorKind::InvalidUtf8 {
        // clap names neither the argument nor the value: name the value.
        if let Some(bad) = non_utf8_argument() {
            note!("error: argument {bad:?} is not valid UTF-8 (frame patterns and option values must be)");
            return ExitCode::from(2);
        }
    }
    note!("{}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's message up to its first blank line, as one line: a list under
/// the first line (missing arguments) joined with commas, and its tips
/// (a similar argument) after a semicolon.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().take_while(|l| !l.trim().is_empty());
    let mut out = lines.next().unwrap_or("error: invalid arguments").trim_end().to_string();
    let items: Vec<&str> = lines.map(str::trim).collect();
    if !items.is_empty() {
        out.push(' ');
        out.push_str(&items.join(", "));
    }
    // Not clap's "to pass '-5' as a value, use '-- -5'": after `--` comes
    // the input, never an option's value.
    let tips = rendered.lines().map(str::trim).filter(|l| l.starts_with("tip:") && !l.contains("use '-- "));
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip);
    }
    out.push_str(" (see --help)");
    out
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid" on
/// headless machines (render nodes, CI) although compute needs no window
/// system; that line would read like one of ours. Point it at the temp dir.
fn quiet_mesa_wsi() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", framepipe::io::temp_root().0) };
    }
}
