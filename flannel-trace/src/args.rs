//! From the command line to options: the one place (besides `cli.rs`,
//! which xtask also compiles on its own, and `lib.rs`) that names clap's
//! types. Combinations of flags clap cannot check are refused here, before
//! the run touches the kernel.

use crate::{
    cli::{self, JoinArgs, TraceArgs},
    datapath,
    options::{
        self, DatapathOptions, Filter, JoinOptions, LiveJoin, MAX_PORTS, Mode, NodeOptions,
        OptionsError, Output, Probe, Role, TraceOptions,
    },
};

/// The trace run's options, or why the flags cannot run together.
pub fn trace_options(args: TraceArgs) -> Result<TraceOptions, OptionsError> {
    let token = args.token.unwrap_or_default();
    let role = match (args.listen, args.peer) {
        (Some(addr), _) => Some(Role::Listen(addr)),
        (None, Some(addr)) => Some(Role::Peer {
            addr,
            wait: args.peer_wait,
        }),
        (None, None) => None,
    };
    if role.is_some() && token.is_empty() {
        return Err(OptionsError::NoToken);
    }
    if args.probe && args.probe_to.is_none() && role.is_none() {
        return Err(OptionsError::ProbeWithoutTarget);
    }
    if args.port.len() > MAX_PORTS {
        return Err(OptionsError::TooManyPorts);
    }
    let pod_devs = options::pod_devs(&args.pod_dev)?;
    options::one_network_per_family(&args.pod_cidr)?;
    Ok(TraceOptions {
        node: NodeOptions {
            vxlan_dev: args.vxlan_dev,
            iface: args.iface,
            pod_devs,
            pod_cidrs: args.pod_cidr,
            only_iface: args.only_iface,
        },
        ports: args.port,
        filter: Filter {
            vni: args.vni,
            host: args.host,
            proto: args.proto.map(cli::Proto::number),
        },
        sample: args.sample.unwrap_or(1),
        output: Output {
            json: args.json,
            events: args.events,
        },
        mode: if args.stats {
            Mode::Stats {
                metrics: args.metrics,
            }
        } else {
            Mode::Events
        },
        record: args.record,
        live: role.map(|role| LiveJoin { role, token }),
        probe: args.probe.then_some(Probe {
            to: args.probe_to,
            count: args.probe_count,
            interval: args.probe_interval,
        }),
        duration: args.duration,
        report_every: args.report_every,
        max_events: args.max_events,
        datapath: DatapathOptions {
            tc_mode: args.tc_mode.into(),
            vxlan_rcv: args.vxlan_rcv_backend.into(),
            drop: (!args.no_drops).then_some(args.drop_backend.into()),
            ring_size: args.ring_size,
            verifier_log: args.verifier_log,
        },
        name: args.name,
    })
}

/// `join`'s options (clap takes exactly two files).
pub fn join_options(args: JoinArgs) -> JoinOptions {
    let mut files = args.files.into_iter();
    let mut next = || files.next().unwrap_or_default();
    JoinOptions {
        files: [next(), next()],
        json: args.json,
        grace: args.grace,
        window: args.window,
    }
}

// The command line's choices, mapped to the loader's own values (the
// loader never sees a clap type).
impl From<cli::TcMode> for datapath::TcMode {
    fn from(m: cli::TcMode) -> Self {
        match m {
            cli::TcMode::Auto => Self::Auto,
            cli::TcMode::Tcx => Self::Tcx,
            cli::TcMode::Netlink => Self::Netlink,
        }
    }
}

impl From<cli::VxlanBackendChoice> for datapath::VxlanBackendChoice {
    fn from(b: cli::VxlanBackendChoice) -> Self {
        use cli::VxlanBackendChoice as C;
        match b {
            C::Auto => Self::Auto,
            C::Fentry => Self::Fentry,
            C::Kprobe => Self::Kprobe,
            C::TpBtf => Self::TpBtf,
            C::Tracepoint => Self::Tracepoint,
        }
    }
}

impl From<cli::DropBackendChoice> for datapath::DropBackendChoice {
    fn from(b: cli::DropBackendChoice) -> Self {
        use cli::DropBackendChoice as C;
        match b {
            C::Auto => Self::Auto,
            C::TpBtf => Self::TpBtf,
            C::Tracepoint => Self::Tracepoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser as _;

    use super::*;

    fn options(argv: &[&str]) -> Result<TraceOptions, OptionsError> {
        let cli =
            cli::Cli::try_parse_from(std::iter::once("flannel-trace").chain(argv.iter().copied()))
                .expect("the command line parses");
        trace_options(cli.trace)
    }

    #[test]
    fn a_live_join_needs_a_token() {
        // The environment variable is clap's: make sure it is not set here.
        assert!(std::env::var_os("FLANNEL_TRACE_TOKEN").is_none());
        let err = options(&["--listen", "127.0.0.1:7800"]).unwrap_err();
        assert_eq!(err, OptionsError::NoToken);
        assert!(options(&["--peer", "127.0.0.1:7800", "--token", ""]).is_err());
        let ok = options(&[
            "--peer",
            "127.0.0.1:7800",
            "--token",
            "t",
            "--peer-wait",
            "3s",
        ])
        .unwrap();
        assert_eq!(
            ok.role(),
            Some(Role::Peer {
                addr: "127.0.0.1:7800".parse().unwrap(),
                wait: std::time::Duration::from_secs(3)
            })
        );
        assert!(!ok.listening());
    }

    #[test]
    fn a_probe_needs_a_target() {
        assert_eq!(
            options(&["--probe"]).unwrap_err(),
            OptionsError::ProbeWithoutTarget
        );
        let ok = options(&["--probe", "--probe-to", "10.244.1.0"]).unwrap();
        assert_eq!(ok.probe.unwrap().to, Some("10.244.1.0".parse().unwrap()));
        assert!(options(&[]).unwrap().probe.is_none());
    }

    #[test]
    fn flags_clap_cannot_check() {
        assert_eq!(
            options(&["--port", "1,2,3,4,5"]).unwrap_err(),
            OptionsError::TooManyPorts
        );
        assert_eq!(options(&["--port", "1,2,3,4"]).unwrap().ports, [1, 2, 3, 4]);
        assert_eq!(
            options(&["--pod-dev", "none", "--pod-dev", "cni0"]).unwrap_err(),
            OptionsError::PodDevNoneWithNames
        );
        assert!(matches!(
            options(&["--pod-cidr", "10.244.0.0/16", "--pod-cidr", "10.1.0.0/16"]).unwrap_err(),
            OptionsError::SecondPodNetwork(_)
        ));
    }

    #[test]
    fn every_refusal_is_a_usage_error() {
        for argv in [
            &["--listen", "127.0.0.1:7800"][..],
            &["--probe"],
            &["--port", "1,2,3,4,5"],
            &["--pod-dev", "none", "--pod-dev", "cni0"],
        ] {
            let fatal = crate::exit::Fatal::from(options(argv).unwrap_err());
            assert_eq!(fatal.status, crate::exit::Status::Usage, "{argv:?}");
        }
    }

    #[test]
    fn join_takes_two_recordings() {
        let cli = cli::Cli::try_parse_from(["flannel-trace", "join", "a.rec", "b.rec", "--json"])
            .unwrap();
        let Some(cli::Cmd::Join(a)) = cli.cmd else {
            panic!("not the join command");
        };
        let o = join_options(a);
        assert_eq!(o.files, [PathBuf::from("a.rec"), PathBuf::from("b.rec")]);
        assert!(o.json);
        assert_eq!(o.window, std::time::Duration::from_secs(5));
    }

    #[test]
    fn choices_and_defaults() {
        let o = options(&[
            "--stats",
            "--no-drops",
            "--tc-mode",
            "netlink",
            "--proto",
            "icmp",
        ])
        .unwrap();
        assert!(o.stats());
        assert_eq!(o.datapath.drop, None);
        assert_eq!(o.datapath.tc_mode, datapath::TcMode::Netlink);
        assert_eq!(o.filter.proto, Some(1));
        let d = options(&[]).unwrap();
        assert_eq!(d.mode, Mode::Events);
        assert_eq!(d.sample, 1);
        assert_eq!(d.datapath.drop, Some(datapath::DropBackendChoice::Auto));
        assert_eq!(d.node.pod_devs, options::PodDevs::Found);
    }
}
