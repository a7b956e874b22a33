//! Where `connect` writes: received messages to stdout, everything else
//! (diagnostics, frames) to stderr, so that stdout can be piped. On a terminal
//! the line editor owns the screen, and everything goes through its printer so
//! that lines appear above the prompt instead of through it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// A line editor's printer: prints above the prompt.
pub type Printer = Box<dyn rustyline::ExternalPrinter + Send>;

/// The output side of `connect`.
pub struct Console {
    printer: OnceLock<Mutex<Printer>>,
    /// The line editor is no longer used for output (the session ended).
    detached: AtomicBool,
    quiet: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("interactive", &self.printer.get().is_some()).finish()
    }
}

impl Console {
    /// Plain stdout and stderr, until [`Console::attach`].
    pub fn new(quiet: bool) -> Self {
        Self { printer: OnceLock::new(), detached: AtomicBool::new(false), quiet }
    }

    /// From now on, everything goes through the line editor's printer.
    pub fn attach(&self, printer: Printer) {
        let _ = self.printer.set(Mutex::new(printer));
    }

    /// Back to plain stdout and stderr: the line editor is left blocked at
    /// its prompt, so its line is cleared first.
    pub fn detach(&self) {
        if self.printer.get().is_some() && !self.detached.swap(true, Ordering::SeqCst) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\r\x1b[2K");
            let _ = out.flush();
        }
    }

    /// A received message (stdout). Fails when stdout is gone (a closed pipe).
    pub fn message(&self, line: &str) -> std::io::Result<()> {
        if self.print(line) {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// A status line (stderr), unless `--quiet`.
    pub fn info(&self, line: &str) {
        if !self.quiet {
            self.diag(line);
        }
    }

    /// An error or an explanation (stderr), always shown.
    pub fn diag(&self, text: &str) {
        if !self.print(text) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = err.write_all(b"\n");
            }
        }
    }

    /// Prints through the line editor; false when there is none.
    fn print(&self, text: &str) -> bool {
        let Some(printer) = self.printer.get() else { return false };
        if self.detached.load(Ordering::SeqCst) {
            return false;
        }
        let mut printer = printer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = printer.print(text.trim_end_matches('\n').to_owned());
        true
    }
}
