//! The userspace micro-benchmark (flannel-trace/benches/decode.rs, divan):
//! run through cargo, its items/s read back for the report.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::setup;

/// One divan benchmark: events/s on one core, fastest and median sample.
pub struct Rate {
    pub name: String,
    pub fastest: f64,
    pub median: f64,
}

/// "4.208 Mitem/s" → 4.208e6.
fn items_per_s(cell: &str) -> Option<f64> {
    let mut it = cell.split_whitespace();
    let v: f64 = it.next()?.parse().ok()?;
    let scale = match it.next()? {
        "item/s" => 1.0,
        "Kitem/s" => 1e3,
        "Mitem/s" => 1e6,
        "Gitem/s" => 1e9,
        _ => return None,
    };
    Some(v * scale)
}

/// Divan prints a benchmark's name and times on one line and its
/// throughputs (fastest │ slowest │ median │ mean) on the next.
fn parse(out: &str) -> Vec<Rate> {
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0]
                .trim_start_matches(['├', '╰', '─', ' ', '│'])
                .split_whitespace()
                .next()?
                .to_owned();
            let cells: Vec<&str> = w[1].split('│').map(str::trim).collect();
            let rates: Vec<f64> = cells.iter().filter_map(|c| items_per_s(c)).collect();
            (rates.len() >= 3).then(|| Rate {
                name,
                fastest: rates[0],
                median: rates[2],
            })
        })
        .collect()
}

pub fn run() -> Result<Vec<Rate>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(setup::workspace_root())
        .args(["bench", "-p", "flannel-trace", "--bench", "decode", "--"])
        .args(["--sample-count", "300"])
        .output()
        .context("running cargo bench")?;
    if !out.status.success() {
        bail!(
            "cargo bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_divan_output() {
        let out = "decode        fastest       │ slowest       │ median        │ mean          │ samples │ iters\n\
                   ├─ decode     243.8 µs      │ 4.265 ms      │ 246.1 µs      │ 277 µs        │ 300     │ 300\n\
                   │             4.2 Mitem/s   │ 240 Kitem/s   │ 4.159 Mitem/s │ 3.696 Mitem/s │         │\n\
                   ╰─ text_line  981 µs        │ 1.053 ms      │ 1.002 ms      │ 1.003 ms      │ 300     │ 300\n\
                                 1.043 Mitem/s │ 971.6 Kitem/s │ 1.021 Mitem/s │ 1.02 Mitem/s  │         │\n";
        let r = parse(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "decode");
        assert_eq!(r[0].fastest, 4.2e6);
        assert_eq!(r[1].name, "text_line");
        assert!((r[1].median - 1.021e6).abs() < 1.0);
    }
}
