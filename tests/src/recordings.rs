//! Where the tracers started by the tests put the recordings a live join
//! always makes (`$FLANNEL_TRACE_RECORD_DIR`): under the build's own target
//! directory, so that test runs leave nothing in /var/tmp.

use std::path::PathBuf;

use crate::tracer_bin;

pub fn recording_dir() -> PathBuf {
    // target/<profile>/flannel-trace → target/tmp/recordings
    let dir = tracer_bin()
        .parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("tmp/recordings"))
        .unwrap_or_else(|| std::env::temp_dir().join("flannel-trace-test-recordings"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
