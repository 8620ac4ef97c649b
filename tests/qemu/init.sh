#!/bin/sh
# /init of the test guests: bring up their NICs from fr_* kernel arguments, run one action, report on the serial console, power off.
#
# Kernel arguments without a dot in their name reach us as environment variables:
#   fr_ip=169.254.0.1/16  fr_mtu=1500  fr_action=ping|serve|shell|iperf-server|iperf-client
#   fr_peer=A[,B...]  fr_count=5  fr_size=56  fr_interval=0.2  fr_rounds=1  fr_gap=1
#   fr_wait=30 (seconds to wait for a peer to answer at all)  fr_time=10 (iperf seconds)
#   fr_timeout=120 (hard limit on this guest's life)  fr_trace=1 (ping: traceroute each peer too)
# Several NICs (a router) replace fr_ip with one word per NIC, each found by its MAC, so the
# order in which the kernel names them does not matter:
#   fr_if0=10.20.10.1/24,12:34:56:ab:cd:71  fr_if1=...  (up to fr_if7)
#   fr_route0=10.20.60.0/24,10.20.20.2  fr_route1=default,10.20.10.1  (up to fr_route7)
#   fr_forward=1 (net.ipv4.ip_forward)
# Every line meant for the harness starts with "FR-": FR-BOOT, FR-UP, FR-READY,
# FR-RESULT ..., FR-ERROR ..., FR-DONE.  Keep it machine-readable: key=value words.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "FR-BOOT kernel=$(uname -r)"

# A hard bound on the guest's life, so that a harness that dies cannot leave it running.
(sleep "${fr_timeout:-120}"; echo "FR-ERROR timeout=${fr_timeout:-120}"; poweroff -f) &

finish() {
    echo "FR-DONE"
    sync
    poweroff -f
}

# No modules.dep ships in the .deb and there is no depmod: the builder wrote the
# load order (dependencies first) into /etc/fr-modules.
while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" || echo "FR-ERROR insmod=$mod"
done < /etc/fr-modules

ip link set lo up

# The interface whose MAC is $1 (lower case, as sysfs prints it), after waiting for its driver.
dev_by_mac() {
    want=$(echo "$1" | tr 'A-F' 'a-f')
    t=0
    while [ "$t" -le 50 ]; do
        for d in /sys/class/net/*; do
            if [ "$(cat "$d/address")" = "$want" ]; then
                basename "$d"
                return 0
            fi
        done
        t=$((t + 1))
        sleep 0.1
    done
    return 1
}

# fr_ifN / fr_routeN words: print each set value, in order, stopping at the first gap.
indexed() {
    n=0
    while [ "$n" -lt 8 ]; do
        eval "v=\${$1$n:-}"
        [ -n "$v" ] || return 0
        echo "$v"
        n=$((n + 1))
    done
}

if [ -n "${fr_if0:-}" ]; then
    # One FR-UP line per NIC, with its name, so the harness can check the wiring.
    for spec in $(indexed fr_if); do
        addr=${spec%%,*}
        mac=${spec#*,}
        if ! dev=$(dev_by_mac "$mac"); then
            echo "FR-ERROR no-nic mac=$mac"
            finish
        fi
        ip link set "$dev" mtu "${fr_mtu:-1500}" || echo "FR-ERROR mtu=${fr_mtu}"
        ip addr add "$addr" dev "$dev" || echo "FR-ERROR addr=$addr dev=$dev"
        ip link set "$dev" up
        echo "FR-UP if=$dev ip=$addr mtu=$(cat "/sys/class/net/$dev/mtu") mac=$(cat "/sys/class/net/$dev/address") driver=$(basename "$(readlink "/sys/class/net/$dev/device/driver")")"
    done
else
    i=0
    while ! ip link show eth0 >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 50 ]; then
            echo "FR-ERROR no-eth0"
            finish
        fi
        sleep 0.1
    done
    ip link set eth0 mtu "${fr_mtu:-1500}" || echo "FR-ERROR mtu=${fr_mtu}"
    ip addr add "${fr_ip:-169.254.0.1/16}" dev eth0
    ip link set eth0 up
    echo "FR-UP ip=${fr_ip} mtu=$(cat /sys/class/net/eth0/mtu) mac=$(cat /sys/class/net/eth0/address) driver=$(basename "$(readlink /sys/class/net/eth0/device/driver)")"
fi

if [ "${fr_forward:-0}" = 1 ]; then
    sysctl -w net.ipv4.ip_forward=1 >/dev/null || echo "FR-ERROR forward"
fi
# Static routes, after the addresses: a gateway must be on a connected subnet.
# busybox ip has "route add"; "default" works as the destination there too.
for spec in $(indexed fr_route); do
    dest=${spec%%,*}
    via=${spec#*,}
    ip route add "$dest" via "$via" || echo "FR-ERROR route=$dest via=$via"
    echo "FR-ROUTE dest=$dest via=$via"
done

peers=$(echo "${fr_peer:-}" | tr ',' ' ')

# Wait until a peer answers one small ping: the other guest may still be booting,
# and its first ARP reply must not count as loss in the measured run.
wait_peer() {
    t=0
    while [ "$t" -lt "${fr_wait:-30}" ]; do
        t=$((t + 1))
        if ping -c 1 -W 1 "$1" >/dev/null 2>&1; then
            echo "FR-RESULT reach peer=$1 tries=$t ok=1"
            return 0
        fi
    done
    echo "FR-RESULT reach peer=$1 tries=$t ok=0"
    return 1
}

# One measured ping run; prints sent/received/loss parsed from busybox's summary.
ping_run() {
    out=$(ping -c "${fr_count:-5}" -s "${fr_size:-56}" -i "${fr_interval:-0.2}" -W 2 "$1" 2>&1)
    summary=$(echo "$out" | grep 'packets transmitted')
    sent=$(echo "$summary" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    recv=$(echo "$summary" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    loss=$(echo "$summary" | sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p')
    echo "FR-RESULT ping round=$2 peer=$1 size=${fr_size:-56} sent=${sent:-0} received=${recv:-0} loss=${loss:-100}"
}

case "${fr_action:-serve}" in
ping)
    for p in $peers; do
        wait_peer "$p"
    done
    r=1
    while [ "$r" -le "${fr_rounds:-1}" ]; do
        [ "$r" -gt 1 ] && sleep "${fr_gap:-1}"
        for p in $peers; do
            ping_run "$p" "$r"
        done
        r=$((r + 1))
    done
    # The path, hop by hop (one probe each): proves which routers carried the pings.
    if [ "${fr_trace:-0}" = 1 ]; then
        for p in $peers; do
            hops=$(traceroute -n -q 1 -w 2 -m 8 "$p" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {print $2}' | tr '\n' ',')
            echo "FR-RESULT trace peer=$p hops=${hops%,}"
        done
    fi
    ;;
serve)
    # Only answers pings; the harness kills it (or fr_timeout ends it).
    echo "FR-READY serve"
    while true; do sleep 60; done
    ;;
shell)
    # A lab run by hand (tests/qemu/README.md): a shell on the serial console with job
    # control; leaving it powers the guest off.
    echo "FR-READY shell"
    setsid cttyhack sh
    ;;
iperf-server)
    echo "FR-READY iperf-server"
    iperf3 -s -1 >/tmp/iperf.log 2>&1 || echo "FR-ERROR iperf-server"
    ;;
iperf-client)
    for p in $peers; do
        wait_peer "$p" || continue
        # The server guest prints FR-READY before iperf3 listens: retry a connect refusal.
        t=0
        while [ "$t" -lt 10 ]; do
            t=$((t + 1))
            if iperf3 -c "$p" -t "${fr_time:-10}" -f m >/tmp/iperf.log 2>&1; then
                break
            fi
            sleep 0.5
        done
        rx=$(grep 'receiver' /tmp/iperf.log | tail -1)
        tx=$(grep 'sender' /tmp/iperf.log | tail -1)
        mbps=$(echo "$rx" | awk '{for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1)}')
        retr=$(echo "$tx" | awk '{for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i+1)}')
        if [ -n "$mbps" ]; then
            echo "FR-RESULT iperf peer=$p mbps=$mbps retransmits=${retr:-0} seconds=${fr_time:-10}"
        else
            echo "FR-ERROR iperf peer=$p"
            sed 's/^/FR-LOG /' /tmp/iperf.log | tail -5
        fi
    done
    ;;
*)
    echo "FR-ERROR action=${fr_action}"
    ;;
esac
finish
