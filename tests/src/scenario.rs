//! The lab's fault scenarios: a two-node flannel cluster with one injected
//! fault, flannel-trace running live on both nodes (`--listen` on A,
//! `--peer` on B, both probing), and the verdict A prints. Shared by the
//! integration tests and `cargo xtask demo`.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    FABRIC_GATEWAY, Lab, LabBuilder, Netns, NodeSpec, UNDERLAY_IFACE, VXLAN_IFACE,
    bridge_port_drop_udp, fabric_drop_udp,
    fixtures::{NODE_A, NODE_B},
    input_drop_udp, second_nic_port, tracer_bin,
};

/// A FORWARD chain whose policy is DROP, as `iptables -P FORWARD DROP`
/// (Docker) leaves a node.
pub const FORWARD_DROP_POLICY: &str = "table inet ft {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n";

/// The lab's VXLAN port, given to every live run's `--port`.
pub const PORT: u16 = crate::DEFAULT_VXLAN_PORT;
pub use crate::fixtures::TOKEN;
const LISTEN_PORT: u16 = 7800;
/// The receiving pod's TCP echo port in live runs.
pub const POD_TCP_PORT: u16 = 8080;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The fabric drops UDP 8475 from B to A only: the incident.
    UnderlayDrop,
    /// An nftables rule on B drops incoming UDP 8475.
    ReceiverFirewall,
    /// B's vxlan device listens on 8472, A's on 8475.
    PortMismatch,
    /// B's vxlan device has VNI 2, A's VNI 1.
    VniMismatch,
    /// A has no FDB entry for B's VTEP.
    MissingFdb,
    /// B's port on the fabric has MTU 1400: full-size frames are lost.
    Mtu,
    /// B's FORWARD policy is DROP (what installing Docker does): pod
    /// traffic arriving over the overlay never reaches B's pod.
    ForwardDropReceiver,
    /// A's FORWARD policy is DROP: A's pod's packets never enter flannel.1.
    ForwardDropSender,
    /// A keeps an old VtepMAC for B in its neighbour and FDB entries: B
    /// decapsulates the frames and drops them as addressed to another host.
    StaleVtepMac,
    /// B has a second NIC with a more specific route to A through it, on a
    /// network that drops UDP 8475: B's frames leave by the wrong NIC.
    SecondNicRoute,
    /// B filters reverse paths strictly and holds a stray /32 route to A's
    /// pod through its NIC: B drops the decapsulated packets from that pod.
    RpFilterReceiver,
}

impl Fault {
    pub const ALL: [Fault; 12] = [
        Fault::None,
        Fault::UnderlayDrop,
        Fault::ReceiverFirewall,
        Fault::PortMismatch,
        Fault::VniMismatch,
        Fault::MissingFdb,
        Fault::Mtu,
        Fault::ForwardDropReceiver,
        Fault::ForwardDropSender,
        Fault::StaleVtepMac,
        Fault::SecondNicRoute,
        Fault::RpFilterReceiver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::UnderlayDrop => "underlay-drop",
            Fault::ReceiverFirewall => "receiver-firewall",
            Fault::PortMismatch => "port-mismatch",
            Fault::VniMismatch => "vni-mismatch",
            Fault::MissingFdb => "missing-fdb",
            Fault::Mtu => "mtu",
            Fault::ForwardDropReceiver => "forward-drop-receiver",
            Fault::ForwardDropSender => "forward-drop-sender",
            Fault::StaleVtepMac => "stale-vtep-mac",
            Fault::SecondNicRoute => "second-nic-route",
            Fault::RpFilterReceiver => "rp-filter-receiver",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::None => "a healthy overlay",
            Fault::UnderlayDrop => {
                "the underlay (a cloud security group) drops UDP 8475 from node B to node A only"
            }
            Fault::ReceiverFirewall => "an nftables rule on node B drops incoming UDP 8475",
            Fault::PortMismatch => "node B's flannel.1 listens on udp/8472, node A's on udp/8475",
            Fault::VniMismatch => "node B's flannel.1 has VNI 2, node A's VNI 1",
            Fault::MissingFdb => "node A has no FDB entry for node B's VTEP MAC",
            Fault::Mtu => "node B's underlay port has MTU 1400: full-size frames do not fit",
            Fault::ForwardDropReceiver => {
                "node B's FORWARD policy is DROP (as after installing Docker): pod traffic never reaches B's pod"
            }
            Fault::ForwardDropSender => {
                "node A's FORWARD policy is DROP: A's pod's packets never reach flannel.1"
            }
            Fault::StaleVtepMac => {
                "node A still has node B's old VtepMAC in its neighbour and FDB entries"
            }
            Fault::SecondNicRoute => {
                "node B routes node A's address through a second NIC, whose network drops UDP 8475"
            }
            Fault::RpFilterReceiver => {
                "node B has strict rp_filter and a stray route to node A's pod through its NIC"
            }
        }
    }

    /// The lab with this fault built in.
    pub fn lab(self) -> LabBuilder {
        let (a, b) = match self {
            Fault::PortMismatch => (NodeSpec::new(), NodeSpec::new().vxlan_port(8472)),
            Fault::VniMismatch => (NodeSpec::new(), NodeSpec::new().vni(2)),
            Fault::MissingFdb => (NodeSpec::new().skip_fdb_to('b'), NodeSpec::new()),
            Fault::Mtu => (NodeSpec::new(), NodeSpec::new().fabric_mtu(1400)),
            Fault::StaleVtepMac => (NodeSpec::new().stale_mac_for('b'), NodeSpec::new()),
            Fault::SecondNicRoute => (NodeSpec::new(), NodeSpec::new().second_nic_to('a')),
            _ => (NodeSpec::new(), NodeSpec::new()),
        };
        Lab::builder().node(a).node(b)
    }

    /// Faults applied after the lab is up (firewall rules).
    pub fn apply(self, lab: &Lab) -> Result<()> {
        let (a, b) = (lab.node('a'), lab.node('b'));
        match self {
            Fault::UnderlayDrop => {
                lab.fabric()
                    .nft(&fabric_drop_udp(b.underlay_ip(), a.underlay_ip(), PORT))
            }
            Fault::ReceiverFirewall => b.nft(&input_drop_udp(PORT)),
            Fault::ForwardDropReceiver => b.nft(FORWARD_DROP_POLICY),
            Fault::ForwardDropSender => a.nft(FORWARD_DROP_POLICY),
            Fault::SecondNicRoute => lab
                .fabric()
                .nft(&bridge_port_drop_udp(&second_nic_port('b'), PORT)),
            Fault::RpFilterReceiver => {
                // The kernel filters with the larger of `all` and the device's.
                for conf in ["all", VXLAN_IFACE] {
                    b.set_sysctl(&format!("net/ipv4/conf/{conf}/rp_filter"), "1")?;
                }
                let pod = format!("{}/32", a.pod_ip());
                b.run(&[
                    "ip",
                    "route",
                    "add",
                    &pod,
                    "via",
                    &FABRIC_GATEWAY.to_string(),
                    "dev",
                    UNDERLAY_IFACE,
                ])
                .map(drop)
            }
            _ => Ok(()),
        }
    }
}

/// What one flannel-trace process printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A flannel-trace process in a node, its output collected in threads.
pub struct Proc {
    child: Child,
    out: thread::JoinHandle<String>,
    err: Arc<Mutex<String>>,
    err_done: thread::JoinHandle<()>,
}

impl Proc {
    pub fn spawn(ns: &Netns, args: &[&str]) -> Result<Proc> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(tracer_bin())
            .args(args)
            .env("FLANNEL_TRACE_RECORD_DIR", crate::recording_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting flannel-trace in {}", ns.name()))?;
        let mut o = child.stdout.take().context("stdout")?;
        let e = child.stderr.take().context("stderr")?;
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = o.read_to_string(&mut s);
            s
        });
        // stderr line by line, so a test can wait for "joined with ...".
        let err = Arc::new(Mutex::new(String::new()));
        let sink = err.clone();
        let err_done = thread::spawn(move || {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(Proc {
            child,
            out,
            err,
            err_done,
        })
    }

    /// Wait until stderr contains `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .err
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(needle)
            {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "flannel-trace exited ({st}) before printing {needle:?}:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "flannel-trace did not print {needle:?} within {timeout:?}:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for two tracers (each within 30 s) and require that both
    /// exited 0, with both stderrs in the error otherwise.
    pub fn wait_both_ok(a: Proc, b: Proc) -> Result<()> {
        let (x, y) = (
            a.wait(Duration::from_secs(30))?,
            b.wait(Duration::from_secs(30))?,
        );
        anyhow::ensure!(
            x.status.success() && y.status.success(),
            "{}\n{}",
            x.stderr,
            y.stderr
        );
        Ok(())
    }

    pub fn wait(mut self, timeout: Duration) -> Result<Run> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "flannel-trace did not finish within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.out.join().unwrap_or_default();
        let _ = self.err_done.join();
        let stderr = self.err.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Run {
            status,
            stdout,
            stderr,
        })
    }
}

/// Options of a live run.
#[derive(Debug, Clone)]
pub struct Live {
    pub json: bool,
    /// How long the peer (B) traces; the listener (A) ends when B does.
    pub duration: Duration,
    pub token_b: String,
    /// More options for both tracers (e.g. `--sample 16`).
    pub extra: Vec<String>,
    /// Pings from each pod to the other (default 3).
    pub pod_pings: u32,
    /// More traffic once both have joined, before the usual pings (e.g. a
    /// flood); what it returns (e.g. packets sent) is in [`LiveRun`].
    pub traffic: Option<fn(&Lab) -> Result<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            json: true,
            duration: Duration::from_secs(5),
            token_b: TOKEN.into(),
            extra: Vec::new(),
            pod_pings: 3,
            traffic: None,
        }
    }
}

pub struct LiveRun {
    pub a: Run,
    pub b: Run,
    /// What [`Live::traffic`] returned.
    pub traffic: u64,
}

/// Listener on A, peer on B, both probing; plus full-size pings from A to
/// B so that an MTU problem shows. Returns when both have exited.
pub fn run_live(lab: &Lab, opts: &Live) -> Result<LiveRun> {
    let (a, b) = (lab.node('a'), lab.node('b'));
    let listen = format!("{}:{LISTEN_PORT}", a.underlay_ip());
    let port = PORT.to_string();
    let mut a_args = vec![
        "--name", NODE_A, "--port", &port, "--listen", &listen, "--token", TOKEN, "--probe",
    ];
    a_args.extend(["--duration", "60s", "--report-every", "1h"]);
    if opts.json {
        a_args.push("--json");
    }
    a_args.extend(opts.extra.iter().map(String::as_str));
    let mut pa = Proc::spawn(a, &a_args)?;
    pa.wait_stderr("waiting for a peer", Duration::from_secs(30))?;
    let dur = format!("{}ms", opts.duration.as_millis());
    let mut b_args = vec![
        "--name",
        NODE_B,
        "--port",
        &port,
        "--peer",
        &listen,
        "--token",
        &opts.token_b,
        "--probe",
        "--duration",
        &dur,
    ];
    b_args.extend(opts.extra.iter().map(String::as_str));
    let pb = Proc::spawn(b, &b_args)?;
    // Traffic only once both tracers are attached and joined; then
    // full-size frames A -> B, so that an MTU problem shows.
    pa.wait_stderr("joined with", Duration::from_secs(30))?;
    let traffic = opts.traffic.map(|t| t(lab)).transpose()?.unwrap_or(0);
    // Pod to pod, both ways, as in a cluster.
    pod_ping(a, b, opts.pod_pings);
    pod_ping(b, a, opts.pod_pings);
    // And a TCP exchange pod A -> pod B (what `curl` would do); its
    // failure under a fault is what the tracers explain.
    let server = std::net::SocketAddr::from((b.pod_ip(), POD_TCP_PORT));
    if let Ok(listener) = b.pod().tcp_listen(POD_TCP_PORT) {
        let _ = a
            .pod()
            .tcp_echo(server, b"pod to pod over vxlan", Duration::from_secs(2));
        drop(listener);
    }
    let _ = a.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "-s",
        "1400",
        "-M",
        "do",
        &b.vtep_ip().to_string(),
    ]);
    let rb = pb.wait(opts.duration + Duration::from_secs(40))?;
    let ra = pa.wait(Duration::from_secs(40))?;
    Ok(LiveRun {
        a: ra,
        b: rb,
        traffic,
    })
}

/// Pings from `from`'s pod to `to`'s pod; losses are what the tracers are
/// there to explain, so the exit status is not checked.
pub fn pod_ping(from: &crate::Node, to: &crate::Node, count: u32) {
    let (n, dst) = (count.to_string(), to.pod_ip().to_string());
    let _ = from
        .pod()
        .exec(&["ping", "-c", &n, "-i", "0.01", "-W", "1", &dst]);
}
