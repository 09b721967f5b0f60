//! Visible skips for the unit tests that read the running kernel
//! (kallsyms): a test that cannot run on this host says so — `SKIPPED: …` on
//! stderr and a line in `$FLANNEL_TRACE_SKIP_LOG` — so that `cargo xtask
//! test` counts it as skipped, not passed (xtask/src/test.rs reads the
//! file; the integration tests' lab writes the same lines).

use std::io::Write as _;

/// The whole test cannot run here: call it, then return.
pub fn skip_test(reason: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned();
    eprintln!("SKIPPED test: {name}: {reason}");
    let Some(path) = std::env::var_os("FLANNEL_TRACE_SKIP_LOG") else {
        return;
    };
    let line = format!("test\t{name}\t{reason}\n");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .expect("recording the skip in $FLANNEL_TRACE_SKIP_LOG");
}
