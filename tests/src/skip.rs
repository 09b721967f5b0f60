//! Visible skips. A test that cannot run here (or a check of it that
//! cannot) says so instead of passing quietly: `SKIPPED: …` on stderr, and
//! a line in `$FLANNEL_TRACE_SKIP_LOG` when `cargo xtask test` set it, which
//! counts the test as skipped rather than passed and lists the reason
//! (xtask/src/test.rs reads the file; flannel-trace's unit tests write the
//! same lines, see its `testing` module).

use std::{fmt::Display, io::Write as _};

/// What was skipped: the whole test, or one check of a test that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    Test,
    Check,
}

impl Skipped {
    fn word(self) -> &'static str {
        match self {
            Skipped::Test => "test",
            Skipped::Check => "check",
        }
    }
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned()
}

fn record(what: Skipped, reason: &dyn Display) {
    let name = test_name();
    eprintln!("SKIPPED {}: {name}: {reason}", what.word());
    let Some(path) = std::env::var_os("FLANNEL_TRACE_SKIP_LOG") else {
        return;
    };
    // One short append per skip: lines of parallel tests do not interleave.
    let line = format!("{}\t{name}\t{reason}\n", what.word()).replace(['\r'], " ");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!(
            "cannot record the skip in {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// The whole test cannot run on this host: call it, then return `Ok(())`.
/// `cargo xtask test` counts the test as skipped, with `reason`.
pub fn skip_test(reason: impl Display) {
    record(Skipped::Test, &reason);
}

/// One check of a test cannot run on this host (the test's other checks
/// did): listed by `cargo xtask test` with `reason`.
pub fn skip_check(reason: impl Display) {
    record(Skipped::Check, &reason);
}
