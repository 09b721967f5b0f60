//! The event's fields whose type is not ours to give serde: a hop
//! (flannel-trace-common is `no_std` for the eBPF programs and has no serde)
//! and a wall-clock time, an `i64` in memory. Used with `#[serde(with)]`.

use serde::{Deserializer, Serializer};

use super::{BadValue, bad, deserialize_text};

/// A hop by its name (`#[serde(with = "hop_name")]`).
pub mod hop_name {
    use flannel_trace_common::Hop;

    use super::*;

    pub fn parse(s: &str) -> Result<Hop, BadValue> {
        match Hop::ALL.into_iter().find(|h| h.name() == s) {
            Some(h) => Ok(h),
            None => bad("a hop", s),
        }
    }

    pub fn serialize<S: Serializer>(h: &Hop, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(h.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hop, D::Error> {
        deserialize_text(d, "a hop name", parse)
    }
}

/// Wall-clock nanoseconds since the epoch as RFC 3339 text
/// (`#[serde(with = "rfc3339_text")]`), e.g. `2026-11-27T09:58:01.123456789Z`.
pub mod rfc3339_text {
    use std::cell::RefCell;

    use super::*;
    use crate::kernel::clock::Rfc3339Cache;

    thread_local! {
        /// Events written in a row fall within a second: the date is
        /// formatted once a second, not per event.
        static CACHE: RefCell<Rfc3339Cache> = RefCell::default();
    }

    pub fn serialize<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
        CACHE.with_borrow_mut(|c| s.serialize_str(c.write(*ns)))
    }

    /// The inverse of [`crate::kernel::clock::rfc3339`], its fallback for
    /// times outside years -9999..=9999 included.
    pub fn parse(s: &str) -> Result<i64, BadValue> {
        if let Some(n) = s.strip_suffix("ns since the epoch")
            && let Ok(n) = n.parse::<i64>()
        {
            return Ok(n);
        }
        match s.parse::<jiff::Timestamp>() {
            Ok(t) => i64::try_from(t.as_nanosecond()).or_else(|_| bad("a time", s)),
            Err(_) => bad("an RFC 3339 time", s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        deserialize_text(d, "an RFC 3339 time", parse)
    }
}
