//! Command line.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Find the hop that loses a frame on a VXLAN overlay.
///
/// flannel-trace attaches eBPF programs to one node's VXLAN datapath and
/// reports every encapsulated packet at each hop it passes, with its inner
/// and outer 5-tuple, and every kernel drop of such a packet with the
/// kernel's drop reason. The hops:
///
/// pod-ingress: TC ingress on the pod device (cni0), a pod's packet enters the node.
///
/// overlay-egress: TC egress on the vxlan device, the inner frame enters the tunnel.
///
/// underlay-egress: TC egress on the underlay NIC (and every other NIC), the
/// encapsulated frame leaves.
///
/// underlay-ingress: TC ingress on the underlay NIC (and every other NIC), an
/// encapsulated frame arrives.
///
/// vxlan-rcv: the vxlan receive path (decapsulation).
///
/// overlay-ingress: TC ingress on the vxlan device, the decapsulated inner frame.
///
/// pod-egress: TC egress on the pod device, the packet leaves towards the receiving pod.
///
/// drop: skb:kfree_skb of this overlay's packets on any device, with reason and location.
///
/// Only the network namespace flannel-trace runs in is traced. It needs root
/// (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and a kernel with BTF. It leaves
/// nothing behind: TC links (TCX, Linux 6.6+) vanish with the process even
/// after SIGKILL; with netlink TC, the filters it added, and a clsact qdisc it
/// created, are removed on exit.
///
/// Two nodes, one verdict: run `--listen ADDR` on one node and `--peer ADDR`
/// on the other (same `--token`), and the listening node prints, for each
/// direction and inner flow, the segment where frames are lost — sender
/// host, underlay, or receiver host (with the kernel's drop reason) — or
/// that they were delivered. Offline: `--record FILE` on each node, then
/// `flannel-trace join A.rec B.rec` anywhere. `--probe` sends a few ICMP
/// echoes across the overlay, so an idle or broken link still gets a verdict.
///
/// Exit status: 0 success; 1 runtime failure; 2 usage error; 3 not enough
/// privilege; 4 device not found or not a vxlan device; 5 kernel lacks a
/// required feature; 6 a live join did not happen (the session is recorded:
/// the command to join it later is printed).
#[derive(Debug, Parser)]
#[command(
    name = "flannel-trace",
    version,
    about,
    long_about,
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Print the capabilities checked for at start, one a line, and exit
    /// (for a container's securityContext).
    #[arg(long)]
    pub print_capabilities: bool,
    #[command(flatten)]
    pub trace: TraceArgs,
}

const EXAMPLES: &str = "\
Examples:
  Watch one node's overlay traffic and drops (port from flannel.1):
    flannel-trace
  The incident: which hop loses frames between two nodes on udp/8475?
    node A: flannel-trace --port 8475 --listen 10.25.1.51:7800 --token \"$T\" --probe
    node B: flannel-trace --port 8475 --peer 10.25.1.51:7800 --token \"$T\" --probe
  Offline, e.g. when the nodes cannot reach each other at all:
    each node: flannel-trace --port 8475 --record /tmp/$(hostname).rec --duration 60s
    anywhere:  flannel-trace join a.rec b.rec
  Only one pod's TCP traffic, as JSON lines:
    flannel-trace --host 10.244.3.17 --proto tcp --json";

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Join two recordings (made with --record on two nodes) into a verdict.
    Join(JoinArgs),
    /// Remove what killed flannel-trace runs left in this network namespace
    /// (netlink TC filters named ft_*, empty clsact qdiscs the tool created),
    /// and say what was removed. Every run does this by itself at start.
    Cleanup,
    /// Compare `kubectl get nodes -o json` with this node's vxlan device.
    ///
    /// Reports, one line each with its fix: a node whose public-ip has no FDB
    /// entry, an FDB entry or neighbour whose MAC is not that node's
    /// VtepMAC, a missing route to a node's podCIDR, a node whose backend is
    /// not vxlan, this node's own annotations disagreeing with its device,
    /// and a device port or VNI other than --port/--vni. Exit status: 0 all
    /// agree; 1 a finding stands (or the device could not be read); 2 bad
    /// input (unreadable file, not JSON, not a NodeList); 4 no such vxlan
    /// device.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output of `kubectl get nodes -o json`: a file, or `-` for stdin.
    #[arg(value_name = "NODES_JSON")]
    pub nodes: PathBuf,
    /// The vxlan device of the overlay.
    #[arg(long, value_name = "NAME", default_value = "flannel.1")]
    pub vxlan_dev: String,
    /// This node's name in the node list. Default: the hostname, else the
    /// node whose public-ip is an address of this host.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The VXLAN port the cluster uses; a device with another is a finding.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The VNI the cluster uses; a device with another is a finding.
    #[arg(long)]
    pub vni: Option<u32>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The two recordings, one per node.
    #[arg(num_args = 2, required = true, value_name = "RECORDING")]
    pub files: Vec<PathBuf>,
    /// One JSON document (schema in README.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Packets sent less than this before a node stopped recording count as
    /// in flight, not lost.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub grace: Duration,
    /// How far apart in time (on the recordings' wall clocks) a packet's
    /// observations on the two nodes may be and still be matched. The join
    /// streams both recordings and holds this much of them in memory; a
    /// counterpart further away counts as missing.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub window: Duration,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// UDP port of the VXLAN tunnel. Default: the vxlan device's own
    /// destination port, else 8472 (flannel's default). Repeat (or use
    /// commas) to trace up to four ports, e.g. while ports disagree between
    /// nodes; in --listen/--peer mode the peer's port is added by itself.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,

    /// The vxlan device of the overlay.
    #[arg(long, value_name = "NAME", default_value = "flannel.1")]
    pub vxlan_dev: String,

    /// The underlay NIC. Default: the vxlan device's link device, else the
    /// device of the default route.
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,

    /// Pod-side device whose TC hooks are the pod-ingress and pod-egress
    /// hops: where a pod's packet enters the node and where it leaves it
    /// towards the receiving pod. Repeat for several. Default: cni0, else the
    /// device of the route to this node's pod subnet; `none` traces
    /// host-network traffic only (the path then starts and ends at the vxlan
    /// device).
    #[arg(long, value_name = "NAME")]
    pub pod_dev: Vec<String>,

    /// The overlay's pod network (e.g. 10.244.0.0/16; once per address
    /// family). Default: flannel's /run/flannel/subnet.env, else the prefix
    /// covering the routes through the vxlan device and this node's pod
    /// subnet. Drops of packets between its addresses are reported on any
    /// device.
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Vec<crate::net::Cidr>,

    /// Attach the underlay hops to --iface only. By default every other
    /// device with an address (but loopback, the vxlan and the pod devices)
    /// is watched too, so frames the routing table sends out of another NIC
    /// are seen.
    #[arg(long)]
    pub only_iface: bool,

    /// Counters mode: no per-packet events, only in-kernel counters of
    /// packets and bytes per peer, hop and device, and of drops per reason,
    /// printed every --report-every. With --listen/--peer both nodes'
    /// counters are joined into a verdict per direction. Cheap enough to
    /// leave running for hours.
    #[arg(long, conflicts_with_all = ["record", "events"])]
    pub stats: bool,

    /// Keep 1 in N packets (N a power of two up to 65536), chosen in the
    /// kernel by a hash of the inner fields the underlay never changes, so
    /// that two nodes sampling alike keep the same packets and the join
    /// still matches them (TCP by whole flows). flannel-trace's own probes
    /// are always kept. Verdicts scale counts and say so.
    #[arg(long, value_name = "N", value_parser = parse_sample, conflicts_with = "stats")]
    pub sample: Option<u32>,

    /// Serve the counters (--stats) for Prometheus on ADDR (e.g.
    /// 127.0.0.1:9475), at /metrics.
    #[arg(long, value_name = "ADDR", requires = "stats")]
    pub metrics: Option<SocketAddr>,

    /// Keep only frames with this VNI (0 to 16777215, 24 bits). Default:
    /// every VNI on the port, so that a peer sending with the wrong VNI
    /// still shows up.
    #[arg(long, value_parser = clap::value_parser!(u32).range(..=0xFF_FFFF))]
    pub vni: Option<u32>,

    /// Keep only packets whose inner source or destination is this address.
    #[arg(long, value_name = "IP")]
    pub host: Option<IpAddr>,

    /// Keep only packets of this inner protocol.
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,

    /// One JSON object per line instead of text (schema in README.md).
    #[arg(long)]
    pub json: bool,

    /// Stop after this long (e.g. 30s, 5m, 1h). Default: until Ctrl-C/SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Ring buffer size in bytes (a power of two, at least one page). Events
    /// that do not fit are counted and reported, never silently dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20, value_parser = parse_ring_size)]
    pub ring_size: u32,

    /// Do not trace kernel drops.
    #[arg(long)]
    pub no_drops: bool,

    /// How to attach the TC programs.
    #[arg(long, value_enum, default_value_t = TcMode::Auto)]
    pub tc_mode: TcMode,

    /// Backend of the vxlan-rcv hop. `auto` tries fentry, kprobe, tp-btf,
    /// then tracepoint, and reports the one it got.
    #[arg(long, value_enum, default_value_t = VxlanBackendChoice::Auto)]
    pub vxlan_rcv_backend: VxlanBackendChoice,

    /// Backend of the drop hop. `auto` tries tp-btf, then tracepoint.
    #[arg(long, value_enum, default_value_t = DropBackendChoice::Auto)]
    pub drop_backend: DropBackendChoice,

    /// Name of this node in verdicts and recordings. Default: the hostname.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Also write the session to FILE, for `flannel-trace join` later.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Wait for a peer node on ADDR (e.g. 0.0.0.0:7800), join its events with
    /// this node's and print verdicts. Runs over the underlay, so it works
    /// while the overlay is broken.
    #[arg(long, value_name = "ADDR", conflicts_with = "peer")]
    pub listen: Option<SocketAddr>,

    /// Stream this node's events to a node running --listen on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<SocketAddr>,

    /// Shared secret of --listen/--peer (never sent over the wire).
    #[arg(long, env = "FLANNEL_TRACE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How long --peer keeps trying to reach the listener.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub peer_wait: Duration,

    /// Send ICMP echo probes across the overlay: to the peer's VTEP address
    /// in --listen/--peer mode, or to --probe-to.
    #[arg(long)]
    pub probe: bool,

    /// Overlay address to probe (default: the peer's VTEP address).
    #[arg(long, value_name = "IP")]
    pub probe_to: Option<IpAddr>,

    /// Number of probes.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub probe_count: u32,

    /// Interval between probes.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// In --listen mode, how often to print verdicts that changed; with
    /// --stats, how often to print the counters.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub report_every: Duration,

    /// In --listen mode, also print every event.
    #[arg(long)]
    pub events: bool,

    /// In --listen mode, events kept per node for the join; beyond it the
    /// verdict is marked incomplete rather than memory growing.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    pub max_events: usize,

    /// Write the eBPF verifier log of a program that fails to load here.
    #[arg(long, value_name = "FILE", hide = true)]
    pub verifier_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcMode {
    /// TCX links where the kernel has them (6.6+), netlink clsact otherwise.
    Auto,
    Tcx,
    Netlink,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VxlanBackendChoice {
    Auto,
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DropBackendChoice {
    Auto,
    TpBtf,
    Tracepoint,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    // jiff's friendly format (30s, 5m, 1h 30m, 250ms, 1.5s); a bare number
    // is seconds. Days and longer are refused: not a fixed length.
    let text = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        format!("{s}s")
    } else {
        s.to_owned()
    };
    let d: jiff::SignedDuration = text.parse().map_err(|_| {
        format!("`{s}` is not a duration such as 30s, 5m or 1h (units: ms, s, m, h)")
    })?;
    if d.is_negative() || d.is_zero() {
        return Err(format!("duration `{s}` must be positive"));
    }
    Duration::try_from(d).map_err(|_| format!("duration `{s}` is out of range"))
}

fn parse_sample(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (--sample N keeps 1 in N packets)"))?;
    if n == 0 || n > 65536 || !n.is_power_of_two() {
        return Err(format!(
            "--sample {n}: N must be a power of two from 1 to 65536"
        ));
    }
    Ok(n)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "ring size {n} must be a power of two of at least 4096"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn sample_rates() {
        assert_eq!(parse_sample("16"), Ok(16));
        assert_eq!(parse_sample("1"), Ok(1));
        assert!(parse_sample("0").is_err());
        assert!(parse_sample("12").is_err());
        assert!(parse_sample("131072").is_err());
        assert!(Cli::try_parse_from(["flannel-trace", "--sample", "16", "--stats"]).is_err());
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert!(parse_ring_size("5000").is_err());
        assert!(parse_ring_size("1024").is_err());
    }

    #[test]
    fn port_zero_is_refused() {
        let err = Cli::try_parse_from(["flannel-trace", "--port", "0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(Cli::try_parse_from(["flannel-trace", "--port", "70000"]).is_err());
        let ok = Cli::try_parse_from(["flannel-trace", "--port", "8475"]).unwrap();
        assert_eq!(ok.trace.port, vec![8475]);
        let two = Cli::try_parse_from(["flannel-trace", "--port", "8475,8472"]).unwrap();
        assert_eq!(two.trace.port, vec![8475, 8472]);
    }

    #[test]
    fn a_vni_beyond_24_bits_is_refused() {
        let err = Cli::try_parse_from(["flannel-trace", "--vni", "16777216"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
        let ok = Cli::try_parse_from(["flannel-trace", "--vni", "16777215"]).unwrap();
        assert_eq!(ok.trace.vni, Some(16_777_215));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
