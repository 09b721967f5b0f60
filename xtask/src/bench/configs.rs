//! The configurations compared side by side, and how each one's observers
//! are started and stopped on the lab's nodes.

use std::path::Path;

use anyhow::Result;
use flannel_trace_tests::Lab;

use super::observer::{self, Proc, Stopped};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Config {
    NoTracer,
    FtReceiver,
    FtBoth,
    Stats,
    Sample,
    TcpdumpReceiver,
    TcpdumpBoth,
}

pub const ALL: [Config; 7] = [
    Config::NoTracer,
    Config::FtReceiver,
    Config::FtBoth,
    Config::Stats,
    Config::Sample,
    Config::TcpdumpReceiver,
    Config::TcpdumpBoth,
];

/// Which optional modes this build of flannel-trace offers (by its --help).
#[derive(Clone, Copy, Default)]
pub struct Modes {
    pub stats: bool,
    pub sample: bool,
}

impl Modes {
    pub fn probe(help: &str) -> Modes {
        let has = |opt: &str| {
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
                .any(|w| w == opt)
        };
        Modes {
            stats: has("--stats"),
            sample: has("--sample"),
        }
    }
}

impl Config {
    pub fn label(self) -> &'static str {
        match self {
            Config::NoTracer => "no tracer",
            Config::FtReceiver => "flannel-trace, receiver",
            Config::FtBoth => "flannel-trace, both nodes",
            Config::Stats => "flannel-trace --stats, both",
            Config::Sample => "flannel-trace --sample 16, both",
            Config::TcpdumpReceiver => "tcpdump -w, receiver",
            Config::TcpdumpBoth => "tcpdump -w, both nodes",
        }
    }

    /// Whether this build can run the configuration at all.
    pub fn available(self, modes: Modes) -> bool {
        match self {
            Config::Stats => modes.stats,
            Config::Sample => modes.sample,
            _ => true,
        }
    }

    pub fn is_tracer(self) -> bool {
        matches!(
            self,
            Config::FtReceiver | Config::FtBoth | Config::Stats | Config::Sample
        )
    }

    fn tracer_args(self) -> &'static [&'static str] {
        match self {
            Config::Stats => &["--stats"],
            Config::Sample => &["--sample", "16"],
            _ => &[],
        }
    }

    /// Starts the observers; node b (the receiver of all traffic) first.
    /// Both nodes' tracers start concurrently, as an SRE would start them.
    pub fn start(self, lab: &Lab, dir: &Path) -> Result<Vec<Proc>> {
        let (a, b) = (lab.node('a'), lab.node('b'));
        let null = Path::new("/dev/null");
        let both = matches!(
            self,
            Config::FtBoth | Config::Stats | Config::Sample | Config::TcpdumpBoth
        );
        let mut nodes = vec![('b', b)];
        if both {
            nodes.push(('a', a));
        }
        match self {
            Config::NoTracer => Ok(Vec::new()),
            Config::TcpdumpReceiver | Config::TcpdumpBoth => {
                let mut all = Vec::new();
                for (role, node) in nodes {
                    all.extend(observer::tcpdump(&format!("tcpdump {role}"), node, dir)?);
                }
                Ok(all)
            }
            _ => std::thread::scope(|s| {
                let handles: Vec<_> = nodes
                    .into_iter()
                    .map(|(role, node)| {
                        s.spawn(move || {
                            observer::flannel_trace(
                                &format!("flannel-trace {role}"),
                                node,
                                self.tracer_args(),
                                null,
                                dir,
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("starter thread"))
                    .collect()
            }),
        }
    }
}

/// Stops every observer, even when one fails; the first error is returned.
pub fn stop_all(procs: Vec<Proc>) -> Result<Vec<Stopped>> {
    let mut out = Vec::new();
    let mut err = None;
    for p in procs {
        match p.stop() {
            Ok(s) => out.push(s),
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_help() {
        let m = Modes::probe("      --stats\n          counters\n      --sample <N>\n");
        assert!(m.stats && m.sample);
        let m = Modes::probe("      --statistics\n      --json\n");
        assert!(!m.stats && !m.sample);
    }
}
