//! Converting the programs' CLOCK_MONOTONIC timestamps to wall-clock time.

use std::time::{SystemTime, UNIX_EPOCH};

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, sampled once at
/// start. Later NTP slews are not followed: a trace session is short.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime − monotonic, in nanoseconds.
    offset_ns: i64,
}

fn now(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Clock {
    pub fn sample() -> Clock {
        // Bracket the realtime read with two monotonic reads, take the middle.
        let m1 = now(libc::CLOCK_MONOTONIC);
        let r = now(libc::CLOCK_REALTIME);
        let m2 = now(libc::CLOCK_MONOTONIC);
        Clock {
            offset_ns: r - (m1 + m2) / 2,
        }
    }

    pub fn offset_ns(&self) -> i64 {
        self.offset_ns
    }

    #[cfg(test)]
    pub fn monotonic_now() -> u64 {
        now(libc::CLOCK_MONOTONIC) as u64
    }

    /// Nanoseconds since the Unix epoch for a monotonic timestamp.
    pub fn wall_ns(&self, mono_ns: u64) -> i64 {
        mono_ns as i64 + self.offset_ns
    }

    pub fn now_wall_ns() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-27T09:58:01.123456789Z`.
pub fn rfc3339(unix_ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(unix_ns)) {
        Ok(t) => format!("{t:.9}"),
        // Outside years -9999..=9999: no clock of a node says that.
        Err(_) => format!("{unix_ns}ns since the epoch"),
    }
}

/// `HH:MM:SS.micros` (UTC), for text output. The session writes
/// [`time_of_day_bytes`]; this owning form is for everyone else.
#[allow(dead_code)]
pub fn time_of_day(unix_ns: i64) -> String {
    let mut b = [0u8; 15];
    String::from_utf8_lossy(time_of_day_bytes(unix_ns, &mut b)).into_owned()
}

/// [`time_of_day`] into a stack buffer: the text output writes it once per
/// event, and the formatting machinery costs more than the digits.
pub fn time_of_day_bytes(unix_ns: i64, b: &mut [u8; 15]) -> &[u8] {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
    let sod = secs.rem_euclid(86_400);
    digits(&mut b[0..2], sod / 3600);
    b[2] = b':';
    digits(&mut b[3..5], sod / 60 % 60);
    b[5] = b':';
    digits(&mut b[6..8], sod % 60);
    b[8] = b'.';
    digits(&mut b[9..15], micros);
    &b[..]
}

/// `v` as exactly `out.len()` decimal digits, zero-padded (`v` fits).
fn digits(out: &mut [u8], mut v: i64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// [`rfc3339`] for a stream of timestamps close together, as a trace's
/// events are: the date and time of day change once a second, so that part
/// is formatted once a second and only the nanoseconds per event.
#[derive(Debug, Default)]
pub struct Rfc3339Cache {
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix_len: usize,
    /// The prefix, then the last time written's nanoseconds and `Z`.
    text: String,
}

impl Rfc3339Cache {
    #[cfg(test)]
    pub fn format(&mut self, unix_ns: i64) -> String {
        self.write(unix_ns).to_owned()
    }

    /// The text of `unix_ns`, valid until the next call.
    pub fn write(&mut self, unix_ns: i64) -> &str {
        let secs = unix_ns.div_euclid(1_000_000_000);
        if self.second != Some(secs) {
            self.text = rfc3339(unix_ns);
            self.prefix_len = self.text.len() - 10;
            self.second = Some(secs);
        }
        let mut nanos = [0u8; 9];
        digits(&mut nanos, unix_ns.rem_euclid(1_000_000_000));
        self.text.truncate(self.prefix_len);
        self.text
            .push_str(std::str::from_utf8(&nanos).expect("ASCII digits"));
        self.text.push('Z');
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2021-08-25T12:34:56.5Z, the day of the incident post.
        let t = 1_629_894_896_500_000_000i64;
        assert_eq!(rfc3339(t), "2021-08-25T12:34:56.500000000Z");
        assert_eq!(time_of_day(t), "12:34:56.500000");
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn the_cached_formats_equal_the_plain_ones() {
        let mut cache = Rfc3339Cache::default();
        let t = 1_629_894_896_500_000_000i64;
        for ns in [t, t + 1, t + 999_999_999, t + 1_000_000_000, 7, -1] {
            assert_eq!(cache.format(ns), rfc3339(ns));
        }
        let mut b = [0u8; 15];
        assert_eq!(time_of_day_bytes(t + 7_000, &mut b), b"12:34:56.500007");
    }

    #[test]
    fn monotonic_maps_near_now() {
        let c = Clock::sample();
        let wall = c.wall_ns(Clock::monotonic_now());
        assert!((wall - Clock::now_wall_ns()).abs() < 50_000_000);
    }
}
