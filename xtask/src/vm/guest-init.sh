#!/bin/sh
# /init of a flannel-trace kernel-matrix guest (busybox sh), written by
# `cargo xtask vm-test`. Everything the host parses is on lines starting
# with FT-VM-; the last one is always FT-VM-RESULT, then the guest powers off.

/bin/busybox --install -s /bin
# busybox sh runs its own applets before searching PATH, and its `ip` is
# not iproute2: call the real tools by path.
IP=/usr/sbin/ip
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# Where the lockdown level is read (as systemd mounts it on a node).
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
# Booted with lockdown=confidentiality (cargo xtask vm-test's second boot of
# one kernel): one attach probe, then the lockdown test only.
LOCKDOWN=
grep -q 'lockdown=confidentiality' /proc/cmdline && LOCKDOWN=1
# Kernel messages would interleave with the markers; dmesg is printed on failure.
dmesg -n 1
hostname ft-vm
$IP link set lo up
up() { cut -d' ' -f1 /proc/uptime; }
echo "FT-VM-BOOTED kernel=$(uname -r) uptime=$(up)"

while read -r ko; do
    out=$(insmod "$ko" 2>&1) || echo "FT-VM-MODULE-FAILED $ko: $out"
done < /etc/ft-modules
echo "FT-VM-MODULES loaded=$(wc -l < /proc/modules) uptime=$(up)"

fact() { echo "FT-VM-FACT $1=$2"; }
yesno() { if [ -e "$1" ]; then echo yes; else echo no; fi; }
fact btf_vmlinux "$(yesno /sys/kernel/btf/vmlinux)"
fact btf_vxlan_module "$(yesno /sys/kernel/btf/vxlan)"
fact kprobe_pmu "$(yesno /sys/bus/event_source/devices/kprobe)"
fact vxlan_rcv "$(grep -E ' vxlan_rcv(	|$)' /proc/kallsyms | head -n1 | cut -d' ' -f2- | tr '\t' ' ')"
fact kfree_skb_fields "$(sed -n 's/.*field:[^;]* \**\([a-z_]*\);.*/\1/p' /sys/kernel/tracing/events/skb/kfree_skb/format 2>/dev/null | grep -v '^common_' | tr '\n' ',')"
fact lockdown "$(cat /sys/kernel/security/lockdown 2>/dev/null)"
# What lockdown takes away besides the programs: tracefs (the classic
# tracepoints' ids) and kprobe registration.
fact tracefs_id "$(cat /sys/kernel/tracing/events/net/netif_receive_skb/id 2>&1 | head -n1)"
fact kprobe_events "$(echo 'p:ftvm_probe vxlan_rcv' 2>&1 >> /sys/kernel/tracing/kprobe_events && echo ok; echo '-:ftvm_probe' >> /sys/kernel/tracing/kprobe_events 2>/dev/null)"

# A one-node lab for the attach probes: a vxlan device over a veth, as
# flannel would set it up (port 8475, VNI 1).
$IP netns add ftvm-probe
$IP netns exec ftvm-probe /bin/sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
$IP -n ftvm-probe link set lo up
$IP -n ftvm-probe link add eth1 type veth peer name eth1p
$IP -n ftvm-probe addr add 10.99.0.1/24 dev eth1
$IP -n ftvm-probe link set eth1 up
$IP -n ftvm-probe link set eth1p up
$IP -n ftvm-probe link add flannel.1 type vxlan id 1 local 10.99.0.1 dev eth1 dstport 8475 nolearning
$IP -n ftvm-probe link set flannel.1 up

# One tracer run per backend: the start record (backends chosen) or the
# error (why not), with the verifier log's tail when a program was refused.
probe() {
    t0=$(up)
    rm -f /tmp/vlog
    $IP netns exec ftvm-probe /usr/local/bin/flannel-trace --json --duration 1s --verifier-log /tmp/vlog "$@" >/tmp/probe.out 2>/tmp/probe.err
    rc=$?
    start=$(grep '"type":"start"' /tmp/probe.out | head -n1)
    err=$(tr '\t\n' '  ' < /tmp/probe.err | cut -c1-3000)
    printf 'FT-VM-PROBE\t%s\t%s\t%s\t%s\t%s\n' "$*" "$rc" "$start" "$err" "$(awk "BEGIN{print $(up) - $t0}")"
    if [ -s /tmp/vlog ]; then
        printf 'FT-VM-VERIFIER\t%s\t%s\n' "$*" "$(tail -n 40 /tmp/vlog | tr '\t\n' ' |' | cut -c1-6000)"
    fi
}
echo "FT-VM-PROBES-BEGIN uptime=$(up)"
# Only the auto run loads every hook; the others leave out what they do
# not test (the verifier is the slow part under emulation).
probe
if [ -z "$LOCKDOWN" ]; then
probe --tc-mode tcx --no-drops --vxlan-rcv-backend tracepoint
probe --tc-mode netlink --no-drops --vxlan-rcv-backend tracepoint
probe --vxlan-rcv-backend fentry --no-drops
probe --vxlan-rcv-backend kprobe --no-drops
probe --vxlan-rcv-backend tp-btf --no-drops
probe --vxlan-rcv-backend tracepoint --no-drops
probe --drop-backend tp-btf --vxlan-rcv-backend tracepoint
probe --drop-backend tracepoint --vxlan-rcv-backend tracepoint
fi
echo "FT-VM-PROBES-END uptime=$(up)"
$IP netns del ftvm-probe

export FLANNEL_TRACE_BIN=/usr/local/bin/flannel-trace
# Under emulation the tracer starts about 20 times slower (the verifier).
export FLANNEL_TRACE_TEST_TIME_SCALE=@TIME_SCALE@
echo "FT-VM-TESTS-BEGIN uptime=$(up) lockdown=${LOCKDOWN:-0} args=@TEST_ARGS@"
# One test per run, so that each one's time is on the console. `--list`
# with the selection's flags (e.g. --include-ignored) names the tests; each
# is then run alone with the same flags.
rc=0
ran=0
suite() {
    T=$1
    shift
    flags=
    case " $* " in *" --include-ignored "*) flags=--include-ignored ;; esac
    for t in $($T --list "$@" 2>/dev/null | sed -n 's/: test$//p'); do
        ran=$((ran + 1))
        t0=$(up)
        $T --test-threads=1 $flags --exact "$t" 2>&1
        r=$?
        [ "$r" = 0 ] || rc=$r
        echo "FT-VM-TEST-TIME $t $(awk "BEGIN{print $(up) - $t0}")"
    done
}
if [ -n "$LOCKDOWN" ]; then
    # Ignored elsewhere: it needs this kernel command line.
    suite /usr/local/bin/ft-lockdown-tests --include-ignored --exact @LOCKDOWN_TEST@
else
    suite /usr/local/bin/ft-tracer-tests @TEST_ARGS@
    # The crafted corpus runs on the kernels of CRAFTED_KERNELS only.
    if [ -n "@CRAFTED@" ]; then
        suite /usr/local/bin/ft-crafted-tests @CRAFTED_ARGS@
    fi
fi
[ "$ran" -gt 0 ] || { echo "FT-VM-NO-TESTS"; rc=1; }
echo "FT-VM-TESTS-END rc=$rc uptime=$(up)"
if [ "$rc" != 0 ]; then
    dmesg | tail -n 60 | sed 's/^/FT-VM-DMESG /'
fi
echo "FT-VM-RESULT kernel=$(uname -r) status=$rc uptime=$(up)"
sync
poweroff -f
# Should poweroff fail, ending init panics the kernel, and panic=-1 with
# qemu's -no-reboot ends the VM.
exit "$rc"
