"""`fastrelay doctor` and the checks at a bridge or tap target's start, in throwaway namespaces.

Each test sets one condition in a namespace of its own (the bridge-nf-call sysctls are
per namespace), checks the line the doctor prints for it, then applies the fix that line
gives and checks that the line is gone: the fixes are tested commands, not advice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privileged.netns import Lab, wait_for

pytestmark = pytest.mark.privileged

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
NF_CALLS = {"iptables": "IPv4", "ip6tables": "IPv6", "arptables": "ARP"}
BRIDGE_NF = "/proc/sys/net/bridge"

def without_nft(scratch: Path) -> list[str]:
    """A command prefix that runs the rest where /usr/sbin (and so /sbin) has every program
    but nft: the doctor must then read the firewall with iptables-save. The mount
    namespace is private (its mounts vanish with it); the real /usr/sbin is bound under
    `scratch`, a test folder, so that nothing else (the checkout, /tmp) is hidden."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"""set -e
mkdir -p {scratch}/sbin
mount --bind /usr/sbin {scratch}/sbin
mount -t tmpfs -o mode=755 frt /usr/sbin
for f in {scratch}/sbin/*; do
    [ "${{f##*/}}" = nft ] || ln -s "$f" "/usr/sbin/${{f##*/}}"
done
exec "$@"
""", "frt-no-nft"]


def need_bridge_nf() -> None:
    """Skip unless br_netfilter is loaded (loading it if modprobe can)."""
    if os.path.isdir(BRIDGE_NF):
        return
    why = "modprobe is not installed"
    if shutil.which("modprobe"):
        done = subprocess.run(["modprobe", "br_netfilter"], capture_output=True, text=True,
                              check=False)
        why = done.stderr.strip() or f"exit status {done.returncode}"
    if not os.path.isdir(BRIDGE_NF):
        pytest.skip(f"br_netfilter is not loaded and cannot be ({why}): the bridge-nf-call "
                    f"sysctls do not exist")


def sh(lab: Lab, command: str, ns: str | None = None) -> None:
    """Run a shell command in ns (default relay_ns); it must succeed."""
    done = lab.run(ns or lab.relay_ns, ["sh", "-c", command])
    assert done.returncode == 0, f"{command}: {done.stderr}"


def nf_call(lab: Lab, name: str, value: int) -> None:
    """Set net.bridge.bridge-nf-call-NAME in relay_ns (it has a value per namespace)."""
    sh(lab, f"echo {value} > {BRIDGE_NF}/bridge-nf-call-{name}")


def clean_bridge(lab: Lab, *hosts: str) -> list[str]:
    """br0, up, with a test host per role in hosts (the first is "a"), bridge-nf-call off.
    Returns the hosts' namespaces."""
    if os.path.isdir(BRIDGE_NF):
        for name in NF_CALLS:
            nf_call(lab, name, 0)
    lab.bridge("br0")
    addresses = {"a": (A4, A6), "b": (B4, B6)}
    return [lab.host(role, "br0", *addresses[role]) for role in hosts or ("a",)]


def doctor(lab: Lab, *args: str, prefix: tuple[str, ...] | list[str] = ()
           ) -> subprocess.CompletedProcess[str]:
    """`fastrelay doctor ARGS` in relay_ns."""
    return lab.run(lab.relay_ns, [*prefix, sys.executable, "-m", "fastrelay", "doctor", *args])


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.stderr == "", result.stderr
    return result.stdout.splitlines()


def fix_of(line: str) -> str:
    """The command a finding gives as its fix (the text after `fix: `, up to a comma)."""
    return line.split("; fix: ", 1)[1].split(", or ")[0]


def assert_clean(lab: Lab, *args: str) -> None:
    result = doctor(lab, *args)
    assert lines(result) == ["br0: OK"]
    assert result.returncode == 0


def test_a_clean_bridge_gives_no_finding(lab: Lab) -> None:
    clean_bridge(lab)
    assert_clean(lab)            # every bridge of the namespace
    assert_clean(lab, "br0")


@pytest.mark.parametrize("name", list(NF_CALLS))
def test_bridge_nf_call_sysctls(lab: Lab, name: str) -> None:
    need_bridge_nf()
    clean_bridge(lab)
    nf_call(lab, name, 1)
    result = doctor(lab)
    assert lines(result) == [
        (f"br0: net.bridge.bridge-nf-call-{name} = 1: bridged {NF_CALLS[name]} frames pass "
         f"the host firewall; fix: sysctl -w net.bridge.bridge-nf-call-{name}=0")]
    assert result.returncode == 1
    sh(lab, fix_of(result.stdout))
    assert_clean(lab)


def test_bridge_option_nf_call_iptables(lab: Lab) -> None:
    """The per-bridge option turns the firewall on for one bridge though the sysctl is 0."""
    need_bridge_nf()
    clean_bridge(lab)
    sh(lab, "ip link set br0 type bridge nf_call_iptables 1")
    result = doctor(lab, "br0")
    assert lines(result) == [
        ("br0: bridge option nf_call_iptables is on: bridged IPv4 frames pass the host "
         "firewall; fix: ip link set br0 type bridge nf_call_iptables 0")]
    assert result.returncode == 1
    sh(lab, fix_of(result.stdout))
    assert_clean(lab, "br0")


def test_forward_policy_drop_stops_bridged_frames_until_fixed(lab: Lab) -> None:
    """The finding is true (pings across the bridge fail) and its fix makes them pass."""
    need_bridge_nf()
    ha, _ = clean_bridge(lab, "a", "b")
    nf_call(lab, "iptables", 1)
    sh(lab, "nft add table ip t && nft add chain ip t forward "
            "'{ type filter hook forward priority 0; policy drop; }'")
    assert lab.ping(ha, B4, count=1, deadline=2).returncode != 0
    result = doctor(lab)
    firewall = [ln for ln in lines(result) if "bridge-nf-call" not in ln]
    assert firewall == [
        ("br0: nft chain `ip t forward` has policy drop and no rule before it accepts bridged "
         "IPv4 frames; fix: nft insert rule ip t forward iifname \"br0\" oifname \"br0\" accept")]
    assert result.returncode == 1
    sh(lab, fix_of(firewall[0]))
    lab.ping_until(ha, B4)
    assert [ln for ln in lines(doctor(lab)) if "bridge-nf-call" not in ln] == []


def test_forward_rules_are_judged_only_with_bridge_nf_call_on(lab: Lab) -> None:
    need_bridge_nf()
    clean_bridge(lab)
    sh(lab, "iptables -A FORWARD -i br0 -j DROP && iptables -A FORWARD -p udp -j REJECT")
    # bridge-nf-call off: bridged frames never reach FORWARD, whatever it holds.
    assert_clean(lab)
    nf_call(lab, "iptables", 1)
    result = doctor(lab)
    # iptables-nft keeps its rules in nftables, so nft reads them; the first drops every
    # frame of br0, so the walk ends there and the udp rule after it is not reached.
    assert [ln.split(";")[0] for ln in lines(result) if "bridge-nf-call" not in ln] == [
        "br0: nft rule `ip filter FORWARD handle 2` drops bridged IPv4 frames"]
    assert result.returncode == 1


def test_iptables_save_is_read_when_nft_is_missing(lab: Lab, tmp_path: Path) -> None:
    need_bridge_nf()
    clean_bridge(lab)
    nf_call(lab, "iptables", 1)
    sh(lab, "iptables -A FORWARD -p udp -j DROP && iptables -A FORWARD -i br0 -j DROP")
    result = doctor(lab, prefix=without_nft(tmp_path))
    firewall = [ln for ln in lines(result) if "bridge-nf-call" not in ln]
    assert firewall == [
        ("br0: iptables rule `-A FORWARD -p udp -j DROP` may drop bridged IPv4 frames; fix: "
         "iptables -t filter -D FORWARD -p udp -j DROP, or accept br0's frames before it"),
        ("br0: iptables rule `-A FORWARD -i br0 -j DROP` drops bridged IPv4 frames; fix: "
         "iptables -t filter -D FORWARD -i br0 -j DROP, or accept br0's frames before it")]
    for line in firewall:
        sh(lab, fix_of(line))
    assert [ln for ln in lines(doctor(lab, prefix=without_nft(tmp_path)))
            if "bridge-nf-call" not in ln] == []


def test_legacy_iptables_rules_are_read_beside_nft(lab: Lab) -> None:
    need_bridge_nf()
    if not shutil.which("iptables-legacy"):
        pytest.skip("iptables-legacy is not installed")
    clean_bridge(lab)
    nf_call(lab, "iptables", 1)
    done = lab.run(lab.relay_ns, ["iptables-legacy", "-P", "FORWARD", "DROP"])
    if done.returncode != 0:
        pytest.skip(f"this kernel has no legacy iptables: {done.stderr.strip()}")
    firewall = [ln for ln in lines(doctor(lab)) if "bridge-nf-call" not in ln]
    assert firewall == [
        ("br0: iptables-legacy chain FORWARD (table filter) has policy drop and no rule before "
         "it accepts bridged IPv4 frames; fix: iptables-legacy -t filter -I FORWARD -i br0 "
         "-o br0 -j ACCEPT")]
    sh(lab, fix_of(firewall[0]))
    assert [ln for ln in lines(doctor(lab)) if "bridge-nf-call" not in ln] == []


def test_bridge_family_rules_count_without_bridge_nf_call(lab: Lab) -> None:
    """nft's bridge family sees bridged frames always, its ports as the interfaces."""
    clean_bridge(lab)   # host a's port is `va`
    sh(lab, "nft add table bridge t && nft add chain bridge t forward "
            "'{ type filter hook forward priority 0; policy accept; }' && "
            "nft add rule bridge t forward iifname va drop")
    result = doctor(lab)
    assert [ln.split(";")[0] for ln in lines(result)] == [
        "br0: nft rule `bridge t forward handle 2` drops frames crossing br0"]
    assert result.returncode == 1
    sh(lab, fix_of(result.stdout))
    assert_clean(lab)


def test_bridge_down(lab: Lab) -> None:
    clean_bridge(lab)
    sh(lab, "ip link set br0 down")
    result = doctor(lab, "br0")
    assert lines(result) == [("br0: the bridge is down: it forwards nothing; "
                             "fix: ip link set br0 up")]
    assert result.returncode == 1
    sh(lab, fix_of(result.stdout))
    assert_clean(lab, "br0")


def test_bridge_with_no_port_up(lab: Lab) -> None:
    (ha,) = clean_bridge(lab)
    lab.bridge("br1")
    sh(lab, "ip link set va down")
    result = doctor(lab)
    assert lines(result) == [
        ("br0: no port of the bridge is up (va down): frames have nowhere to go; "
         "fix: ip link set PORT up, and start what is behind it"),
        ("br1: the bridge has no ports: frames have nowhere to go; "
         "fix: attach an interface (ip link set IFACE master br1)")]
    assert result.returncode == 1
    # Up, but the other end of the veth is down: no carrier, still nowhere to go.
    sh(lab, "ip link set va up")
    sh(lab, "ip link set eth0 down", ns=ha)
    assert lines(doctor(lab, "br0"))[0].startswith("br0: no port of the bridge is up "
                                                   "(va no carrier)")
    sh(lab, "ip link set eth0 up", ns=ha)
    wait_for("va's carrier", lambda: doctor(lab, "br0").returncode == 0, timeout=5)


def test_mtu_of_port_and_max_frame(lab: Lab) -> None:
    clean_bridge(lab)
    # A bridge follows its smallest port's MTU unless its own was set after that.
    sh(lab, "ip link set va mtu 1400 && ip link set br0 mtu 1500")
    result = doctor(lab, "--max-frame", "1500", "br0")
    assert lines(result) == [
        ("br0: port va has MTU 1400, the bridge 1500: frames longer than the smaller are "
         "dropped; fix: ip link set va mtu 1500"),
        ("br0: --max-frame 1500 is less than MTU 1500 + 14 (Ethernet header): full-size "
         "frames are dropped; fix: --max-frame 1514 (max_frame = 1514 in the config), or a "
         "smaller MTU")]
    assert result.returncode == 1
    sh(lab, fix_of(result.stdout.splitlines()[0]))
    assert_clean(lab, "--max-frame", "1514", "br0")


def test_max_frame_on_a_vlan_filtering_bridge(lab: Lab) -> None:
    """A VLAN-filtering bridge may hand on tagged frames: 4 bytes more."""
    clean_bridge(lab)
    done = lab.run(lab.relay_ns, ["ip", "link", "set", "br0", "type", "bridge",
                                  "vlan_filtering", "1"])
    if done.returncode != 0:
        pytest.skip(f"this kernel's bridges cannot filter VLANs: {done.stderr.strip()}")
    assert lines(doctor(lab, "--max-frame", "1514", "br0")) == [
        ("br0: --max-frame 1514 is less than MTU 1500 + 18 (Ethernet header and VLAN tag): "
         "full-size frames are dropped; fix: --max-frame 1518 (max_frame = 1518 in the "
         "config), or a smaller MTU")]
    assert_clean(lab, "--max-frame", "1518", "br0")


def test_missing_bridge_and_not_a_bridge(lab: Lab) -> None:
    clean_bridge(lab)
    result = doctor(lab, "nope", "lo", "br0")
    assert lines(result) == [
        ("nope: no such interface in this network namespace; fix: ip link add nope type "
         "bridge, or name an existing bridge"),
        "lo: not a bridge (it is a plain device); fix: name a bridge",
        "br0: OK"]
    assert result.returncode == 1


def test_no_bridge_at_all(lab: Lab) -> None:
    result = doctor(lab)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == ("fastrelay: doctor: no bridge in this network namespace (name "
                             "one: fastrelay doctor BRIDGE)\n")


def test_unprivileged_doctor_says_what_it_could_not_check(lab: Lab) -> None:
    clean_bridge(lab)
    result = doctor(lab, prefix=lab.unprivileged())
    out = lines(result)
    assert len(out) == 2, out
    assert out[0].startswith("br0: could not check the firewall's forward rules: nft: "), out
    assert out[1] == "br0: no problem found, but 1 check(s) could not be made"
    assert result.returncode == 0
    # What it can read it still judges.
    sh(lab, "ip link set br0 down")
    result = doctor(lab, prefix=lab.unprivileged())
    assert "br0: the bridge is down: it forwards nothing; fix: ip link set br0 up" in lines(
        result)
    assert result.returncode == 1


def test_without_proc_sys_the_sysctls_are_not_taken_as_off(lab: Lab) -> None:
    """systemd's ProcSubset=pid hides /proc/sys: that is a check not made, not a clean one."""
    clean_bridge(lab)
    proc_pid_only = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     'mount -t proc -o subset=pid frt /proc && exec "$@"', "frt-proc"]
    result = doctor(lab, prefix=proc_pid_only)
    assert lines(result) == [
        ("br0: could not check net.bridge.bridge-nf-call-*: /proc/sys/net is not visible here "
         "(a sandbox: systemd's ProcSubset=pid)"),
        "br0: no problem found, but 1 check(s) could not be made"]
    assert result.returncode == 0


# -- at a target's start ------------------------------------------------------------------

def start_relay(lab: Lab, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`fastrelay -vvv ARGS` in relay_ns, its stderr in a file (read while it runs)."""
    log = tmp_path / "relay.log"
    with open(log, "wb") as file:
        proc = lab.popen(lab.relay_ns, [sys.executable, "-m", "fastrelay", "-vvv", *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=file)
    return proc, log


def checked(proc: subprocess.Popen[bytes], log: Path, tap: str | None = None) -> str:
    """The relay's log once its bridge checks are done (it must still be running)."""
    def done() -> str | None:
        assert proc.poll() is None, log.read_text()
        text = log.read_text()
        return text if "bridge checks done" in text else None
    return str(wait_for("the bridge checks", done))


def test_bridge_target_start_logs_the_findings_as_warnings(lab: Lab, tmp_path: Path) -> None:
    clean_bridge(lab)
    proc, log = start_relay(lab, tmp_path, "--max-frame", "1500", "-l", "127.0.0.1:5500",
                            "br0")
    text = checked(proc, log)
    assert ("fastrelay: br0: --max-frame 1500 is less than MTU 1500 + 14 (Ethernet header): "
            "full-size frames are dropped; fix: --max-frame 1514") in text, text
    assert text.count("; fix: ") == 1, text
    assert "bridge checks done, 1 problem(s)" in text, text
    status, _ = lab.stop(proc)
    assert status == 0   # warnings only: the relay ran, and stops cleanly


def test_bridge_target_on_a_clean_bridge_warns_nothing(lab: Lab, tmp_path: Path) -> None:
    clean_bridge(lab)
    proc, log = start_relay(lab, tmp_path, "-l", "127.0.0.1:5500", "br0")
    text = checked(proc, log)
    assert "; fix: " not in text and "could not check" not in text, text
    assert "bridge checks done, 0 problem(s)" in text, text
    lab.stop(proc)


def test_tap_target_start_checks_the_taps_bridge(lab: Lab, tmp_path: Path) -> None:
    clean_bridge(lab)
    lab.user_tap("ut0", "br0", mtu=1400)
    sh(lab, "ip link set br0 mtu 1500")   # else the bridge takes its smallest port's MTU
    proc, log = start_relay(lab, tmp_path, "-l", "127.0.0.1:5500", "tap:ut0")
    text = checked(proc, log)
    assert ("fastrelay: br0: port ut0 has MTU 1400, the bridge 1500: frames longer than the "
            "smaller are dropped; fix: ip link set ut0 mtu 1500") in text, text
    lab.stop(proc)
