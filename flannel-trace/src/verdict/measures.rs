//! The bounded measures a flow keeps: a running median of delays and the
//! TCP sequence ranges each hop saw.

use std::collections::BTreeMap;

/// Samples kept for a median: all of them up to this many, then every
/// other one of those and of what comes (and so on): exact for the flows
/// of a diagnosis, a close estimate within a fixed size for long ones.
const MEDIAN_KEPT: usize = 1 << 16;

#[derive(Debug)]
pub(super) struct Median {
    kept: Vec<f64>,
    pub(super) seen: u64,
    stride: u64,
}

impl Default for Median {
    fn default() -> Self {
        Median {
            kept: Vec::new(),
            seen: 0,
            stride: 1,
        }
    }
}

impl Median {
    pub fn push(&mut self, v: f64) {
        if self.seen.is_multiple_of(self.stride) {
            self.kept.push(v);
            if self.kept.len() >= MEDIAN_KEPT {
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    pub(super) fn get(&self) -> Option<f64> {
        let mut v = self.kept.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    }
}

/// Merged TCP sequence ranges (start → end): one interval for a stream
/// without holes, one more per hole.
#[derive(Debug, Default)]
pub(super) struct Ranges(BTreeMap<i64, i64>);

impl Ranges {
    pub fn insert(&mut self, (mut a, mut b): (i64, i64)) {
        if let Some((&s, &e)) = self.0.range(..=a).next_back()
            && e >= a
        {
            a = s;
            b = b.max(e);
        }
        let over: Vec<(i64, i64)> = self.0.range(a..=b).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in over {
            self.0.remove(&s);
            b = b.max(e);
        }
        self.0.insert(a, b);
    }

    pub(super) fn len(&self) -> u64 {
        self.0.iter().map(|(a, b)| (b - a) as u64).sum()
    }

    /// How far from `at` these ranges reach without a gap, if they hold it.
    fn reach(&self, at: i64) -> Option<i64> {
        self.0
            .range(..=at)
            .next_back()
            .map(|(_, &e)| e)
            .filter(|&e| e > at)
    }
}

/// Whether the union of `sets` covers `r`.
pub(super) fn covered<'a>(r: (i64, i64), sets: impl Iterator<Item = &'a Ranges> + Clone) -> bool {
    let mut at = r.0;
    while at < r.1 {
        match sets.clone().filter_map(|s| s.reach(at)).max() {
            Some(e) => at = e,
            None => return false,
        }
    }
    true
}
