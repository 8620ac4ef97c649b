"""Host firewall rules that bridged frames meet: read with nft or iptables-save, judged per bridge.

Theory of operation. With br_netfilter loaded and `bridge-nf-call-iptables` (or
`-ip6tables`) on, every IPv4 (IPv6) frame crossing a bridge also passes the FORWARD hook
of the ip (ip6, inet) family, with the bridge itself as both input and output interface;
chains of the `bridge` family's forward hook see bridged frames always, with the bridge's
ports as interfaces. The rules are read once per check, in this order:

- `nft -j list ruleset` when the nft binary exists: native nftables and iptables-nft
  rules alike (iptables-nft keeps its rules in nftables);
- plus `iptables-legacy-save` / `ip6tables-legacy-save` when legacy x_tables are in use
  in this namespace (`/proc/self/net/ip_tables_names` not empty): nft cannot see those;
- else `iptables-save` and `ip6tables-save`.

Each base chain on the forward hook is walked in order, following jumps, for one bridge:
a rule whose interface matches exclude the bridge is skipped; a rule that matches only on
interfaces the bridge's frames carry is certain (its accept or drop decides); any other
match makes it uncertain, so an uncertain drop is reported as one that may drop, and an
uncertain accept decides nothing. A drop policy counts when no certain accept came first.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Block", "FirewallUnreadable", "Ruleset", "Table", "blocks", "nft_available",
           "read_ruleset"]

# How long one reader may take before the check gives up on it (seconds).
READ_TIMEOUT = 5.0
# nft meta keys (and iptables options) that match the input or output interface.
_IFACE_KEYS = frozenset({"iif", "oif", "iifname", "oifname"})
# nft meta keys that match the bridge a frame crosses (bridge family only).
_BRIDGE_KEYS = frozenset({"ibrname", "obrname"})
# nft statements that neither match nor decide.
_NEUTRAL = frozenset({"counter", "log", "comment", "notrack", "mangle"})
_DROPS = frozenset({"drop", "reject"})
# Legacy x_tables in use in this namespace list their tables here (one name a line).
_LEGACY = (("iptables-legacy-save", "/proc/self/net/ip_tables_names", "ip"),
           ("ip6tables-legacy-save", "/proc/self/net/ip6_tables_names", "ip6"))
_SAVE = (("iptables-save", "ip"), ("ip6tables-save", "ip6"))


# The readers live in sbin, which a non-root user's PATH often lacks.
_SBIN = ("/usr/sbin", "/sbin")


class FirewallUnreadable(Exception):
    """The rules could not be read here; the message says why (one line)."""


@dataclass
class Rule:
    """One rule, reduced to what decides whether it stops a bridged frame."""

    where: str                      # how the user finds it (an iptables-save line, a handle)
    delete: str                     # the command that removes it
    ifaces: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    # (key, negated, patterns) of each interface match; key as nft names it
    other: bool = False             # it matches on more than interfaces: may not apply
    verdicts: set[str] = field(default_factory=set)   # accept, drop, reject, return
    jumps: list[tuple[str, bool]] = field(default_factory=list)  # (chain, is goto)


@dataclass
class Chain:
    """A chain: its rules in order; base chains have a policy."""

    name: str
    rules: list[Rule] = field(default_factory=list)
    policy: str | None = None       # "accept" / "drop" for a base chain


@dataclass
class Table:
    """The chains of one table; `forward` names its base chains on the forward hook."""

    family: str                     # ip, ip6, inet, bridge (arp has no forward hook)
    name: str
    reader: str                     # the program it was read with
    chains: dict[str, Chain] = field(default_factory=dict)
    forward: list[str] = field(default_factory=list)


@dataclass
class Ruleset:
    """Every table read, and the programs that read them."""

    tables: list[Table]
    readers: list[str]


@dataclass
class Block:
    """A place where a bridged frame is dropped (certain) or may be (not certain)."""

    table: Table
    chain: str
    rule: Rule | None               # None: the chain's policy
    certain: bool


def _which(program: str) -> str | None:
    """The path of program on PATH or in sbin, or None."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(program, path=path)


def nft_available() -> bool:
    """Whether the nft binary is installed (it is what reads the bridge family's rules)."""
    return _which("nft") is not None


def _run(argv: list[str]) -> str:
    """The standard output of argv; FirewallUnreadable with its first error line."""
    try:
        done = subprocess.run([_which(argv[0]) or argv[0], *argv[1:]], capture_output=True,
                              text=True, timeout=READ_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FirewallUnreadable(f"{argv[0]} did not answer within {READ_TIMEOUT:g}s") from None
    except OSError as exc:
        raise FirewallUnreadable(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        why = lines[0] if lines else f"exit status {done.returncode}"
        raise FirewallUnreadable(f"{argv[0]}: {why}")
    return done.stdout


def read_ruleset() -> Ruleset:
    """Read the firewall of this network namespace; FirewallUnreadable if it cannot be."""
    tables: list[Table] = []
    readers: list[str] = []
    if _which("nft"):
        text = _run(["nft", "-j", "list", "ruleset"])
        try:
            tables += parse_nft(json.loads(text) if text.strip() else {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FirewallUnreadable(f"nft -j: output not understood ({exc})") from None
        readers.append("nft")
        for program, names, family in _LEGACY:
            if _legacy_in_use(names) and _which(program):
                tables += parse_save(_run([program]), family, program)
                readers.append(program)
        return Ruleset(tables, readers)
    for program, family in _SAVE:
        if _which(program):
            tables += parse_save(_run([program]), family, program)
            readers.append(program)
    if not readers:
        raise FirewallUnreadable("neither nft nor iptables-save is installed")
    return Ruleset(tables, readers)


def _legacy_in_use(path: str) -> bool:
    """Whether legacy x_tables have tables in this namespace (the file lists them)."""
    try:
        with open(path) as file:
            return bool(file.read().strip())
    except OSError:
        return False


# -- nftables (JSON) -----------------------------------------------------------------------

def parse_nft(document: Any) -> list[Table]:
    """The tables of `nft -j list ruleset` output (parsed JSON)."""
    tables: dict[tuple[str, str], Table] = {}
    for item in document.get("nftables", []):
        if "table" in item:
            t = item["table"]
            tables[t["family"], t["name"]] = Table(t["family"], t["name"], "nft")
        elif "chain" in item:
            c = item["chain"]
            table = tables[c["family"], c["table"]]
            table.chains[c["name"]] = Chain(c["name"], policy=c.get("policy")
                                            if "hook" in c else None)
            if c.get("hook") == "forward":
                table.forward.append(c["name"])
        elif "rule" in item:
            r = item["rule"]
            table = tables[r["family"], r["table"]]
            table.chains[r["chain"]].rules.append(_nft_rule(r))
    return [t for t in tables.values() if t.family in ("ip", "ip6", "inet", "bridge")]


def _nft_rule(r: dict[str, Any]) -> Rule:
    """One rule of nft's JSON, reduced (an unknown statement counts as a match)."""
    spot = f"{r['family']} {r['table']} {r['chain']} handle {r['handle']}"
    rule = Rule(where=f"rule `{spot}`", delete=f"nft delete rule {spot}")
    for statement in r.get("expr", []):
        (key, value), = statement.items()
        if key == "match":
            left = value.get("left")
            meta = left.get("meta", {}).get("key") if isinstance(left, dict) else None
            names = _names(value.get("right"))
            if (meta in _IFACE_KEYS | _BRIDGE_KEYS and names is not None
                    and value.get("op") in ("==", "!=", "in")):
                rule.ifaces.append((meta, value["op"] == "!=", names))
            else:
                rule.other = True
        elif key in ("accept", "drop", "reject", "return"):
            rule.verdicts.add(key)
        elif key in ("jump", "goto"):
            rule.jumps.append((value["target"], key == "goto"))
        elif key == "xt":
            # An iptables-nft extension nft cannot show: a match, or a target by name.
            if value.get("type") == "target":
                name = str(value.get("name", "")).lower()
                if name in ("accept", "drop", "reject", "return"):
                    rule.verdicts.add(name)
            else:
                rule.other = True
        elif key == "vmap":
            # A verdict map: any of its verdicts may be taken, depending on the key.
            rule.other = True
            for verdict, target in _map_verdicts(value.get("data")):
                if target is None:
                    rule.verdicts.add(verdict)
                else:
                    rule.jumps.append((target, verdict == "goto"))
        elif key not in _NEUTRAL:
            rule.other = True
    return rule


def _names(right: Any) -> list[str] | None:
    """Interface name patterns of a match's right side, or None if it is no plain list."""
    if isinstance(right, str):
        return [right]
    if isinstance(right, dict) and isinstance(right.get("set"), list):
        items = right["set"]
        if all(isinstance(i, str) for i in items):
            return list(items)
    return None


def _map_verdicts(node: Any) -> Iterator[tuple[str, str | None]]:
    """(verdict, jump target or None) of every verdict inside a vmap's data."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("accept", "drop", "reject", "return"):
                yield key, None
            elif key in ("jump", "goto") and isinstance(value, dict):
                yield key, str(value.get("target"))
            else:
                yield from _map_verdicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _map_verdicts(value)


# -- iptables-save ------------------------------------------------------------------------

def parse_save(text: str, family: str, reader: str) -> list[Table]:
    """The tables of iptables-save (or ip6tables-save) output that have a FORWARD chain."""
    program = reader.replace("-save", "")
    tables: list[Table] = []
    table: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = Table(family, line[1:].strip(), reader)
            tables.append(table)
        elif table is None or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            table.chains[name] = Chain(name, policy=None if policy == "-" else policy.lower())
            if name == "FORWARD":
                table.forward.append(name)
        elif line.startswith("-A "):
            words = shlex.split(line)
            rule = _save_rule(words[2:], table)
            rule.where = f"rule `{line}`" + (f" (table {table.name})"
                                              if table.name != "filter" else "")
            rule.delete = (f"{program} -t {table.name} -D " +
                           " ".join(shlex.quote(w) for w in words[1:]))
            table.chains.setdefault(words[1], Chain(words[1])).rules.append(rule)
    return [t for t in tables if t.forward]


def _save_rule(words: list[str], table: Table) -> Rule:
    """A rule from the words of an iptables-save `-A CHAIN ...` line after the chain."""
    rule = Rule(where="", delete="")
    negated = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "!":
            negated = True
            i += 1
            continue
        if word in ("-i", "-o", "--in-interface", "--out-interface") and i + 1 < len(words):
            key = "iifname" if word in ("-i", "--in-interface") else "oifname"
            rule.ifaces.append((key, negated, [words[i + 1]]))
            i += 2
        elif word in ("-j", "-g") and i + 1 < len(words):
            target = words[i + 1]
            if target.lower() in ("accept", "drop", "reject", "return"):
                rule.verdicts.add(target.lower())
            elif target in table.chains:
                rule.jumps.append((target, word == "-g"))
            # Any other target (LOG, MARK, ...) goes on to the next rule; its own
            # options follow it and match nothing.
            break
        elif word == "-m" and words[i + 1:i + 2] == ["comment"]:
            i += 4 if words[i + 2:i + 3] == ["--comment"] else 2
        elif word == "-c":
            i += 3   # packet and byte counters
        else:
            rule.other = True
            i += 1
        negated = False
    return rule


# -- judging ------------------------------------------------------------------------------

def _pattern_hits(pattern: str, name: str) -> bool:
    """Whether an interface pattern (nft `br*`, iptables `br+`) matches name."""
    if pattern.endswith(("*", "+")):
        return name.startswith(pattern[:-1])
    return pattern == name


def _applies(rule: Rule, family: str, bridge: str, ports: frozenset[str]) -> bool | None:
    """True: the rule's interface matches hold for every frame of the bridge; None: for
    none of them (the rule is skipped); False: for some (it may apply)."""
    partial = False
    for key, negated, patterns in rule.ifaces:
        # In the ip families a bridged frame has the bridge as in- and output interface;
        # in the bridge family those are the ports it came in on and goes out of.
        names = {bridge} if key in _BRIDGE_KEYS or family != "bridge" else set(ports)
        if not names:
            return None   # a bridge without ports forwards nothing
        hits = [any(_pattern_hits(p, n) for p in patterns) != negated for n in names]
        if not any(hits):
            return None
        partial = partial or not all(hits)
    return not partial


def blocks(ruleset: Ruleset, bridge: str, ports: Iterable[str],
           families: set[str]) -> list[Block]:
    """Where the forward chains of the given families drop (or may drop) bridge's frames."""
    port_names = frozenset(ports)
    found: list[Block] = []
    for table in ruleset.tables:
        if table.family not in families:
            continue
        for name in table.forward:
            seen: list[Block] = []
            outcome = _walk(table, name, bridge, port_names, seen, frozenset(), True)
            if outcome is None and table.chains[name].policy == "drop":
                seen.append(Block(table, name, None, True))
            for block in seen:
                if not any(b.table is block.table and b.chain == block.chain
                           and b.rule is block.rule for b in found):
                    found.append(block)
    return found


def _walk(table: Table, name: str, bridge: str, ports: frozenset[str], found: list[Block],
          path: frozenset[str], sure: bool) -> str | None:
    """Follow chain name for the bridge's frames: "accept" or "drop" when a certain rule
    decides, None when they reach its end or a return. Drops on the way go to found;
    sure is False inside a chain that only some of the frames jump to."""
    chain = table.chains.get(name)
    if chain is None or name in path:
        return None
    path = path | {name}
    for rule in chain.rules:
        applies = _applies(rule, table.family, bridge, ports)
        if applies is None:
            continue
        certain = applies and not rule.other
        single = certain and len(rule.jumps) == 1
        for target, goto in rule.jumps:
            outcome = _walk(table, target, bridge, ports, found, path, sure and single)
            if single:
                if outcome is not None:
                    return outcome
                if goto:
                    return None   # a goto does not come back to this chain
        if rule.verdicts & _DROPS:
            found.append(Block(table, name, rule, sure and certain))
            if certain:
                return "drop"
        if certain and "accept" in rule.verdicts:
            return "accept"
        if certain and "return" in rule.verdicts:
            return None
    return None
