//! Where the tracers started by the tests put the recordings a live join
//! always makes (`$FLANNEL_TRACE_RECORD_DIR`): under the build's own target
//! directory, so that test runs leave nothing in /var/tmp. Recordings of
//! earlier runs (older than an hour) are removed the first time it is asked.

use std::{
    path::PathBuf,
    sync::Once,
    time::{Duration, SystemTime},
};

use crate::tracer_bin;

pub fn recording_dir() -> PathBuf {
    // target/<profile>/flannel-trace → target/tmp/recordings
    let dir = tracer_bin()
        .parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("tmp/recordings"))
        .unwrap_or_else(|| std::env::temp_dir().join("flannel-trace-test-recordings"));
    let _ = std::fs::create_dir_all(&dir);
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago);
            if old && entry.path().extension().is_some_and(|e| e == "rec") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    dir
}
