"""Every packet of every public-corpus capture: nkstream's decode equals tshark's.

For each capture tshark can read we run tshark once (fields per packet) and compare
with decode_columns() over the same file read by tests/pcapfile.py:
- whether there is an IP header, and the OUTER one's version, src and dst;
- the IP protocol: IPv4 `ip.proto` of the outer header; IPv6 the Next Header after
  the outer header's extension headers (hop-by-hop, routing, fragment, dstopts);
- ports: when the protocol right after the outer IP header is TCP, UDP or SCTP, its
  first ports; otherwise nkstream must report no ports (e.g. GRE, IP-in-IP, AH: the
  ports tshark shows there belong to an inner header);
- VLAN ids before the outer IP header, outermost first.
tshark runs with IP reassembly and TCP desegmentation off so each packet is
dissected on its own, as nkstream sees it.

Packets where nkstream deliberately differs are listed in EXCEPTIONS with the reason
(also in docs/decoder.md); an exception that stops matching fails the test too, so
the table cannot go stale.
"""
import ipaddress
import shutil
import subprocess

import pytest

from conftest import corpus_captures
from nkstream import _core
from pcapfile import read_batch

FIELDS = ["frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "ip.proto", "ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.routing.nxt",
          "ipv6.fraghdr.nxt", "ipv6.dstopts.nxt", "tcp.srcport", "tcp.dstport",
          "udp.srcport", "udp.dstport", "sctp.srcport", "sctp.dstport", "vlan.id"]
PREFS = ["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
         "-o", "tcp.desegment_tcp_streams:FALSE"]
IPV6_EXT = {"ipv6.hopopts": "ipv6.hopopts.nxt", "ipv6.routing": "ipv6.routing.nxt",
            "ipv6.fraghdr": "ipv6.fraghdr.nxt", "ipv6.dstopts": "ipv6.dstopts.nxt"}
TRANSPORTS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}

# (capture, frame number) -> why nkstream's decode differs from tshark's on purpose.
EXCEPTIONS = {
}

PF = _core.DECODE_FLAGS


def tshark_fields(path):
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is required for the decoder cross-check (apt-get install tshark)")
    cmd = [tshark, "-n", "-r", str(path)] + PREFS + [
        "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        return None, res.stderr
    rows = []
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        parts += [""] * (len(FIELDS) - len(parts))
        rows.append({k: (v.split(",") if v else []) for k, v in zip(FIELDS, parts)})
    return rows, res.stderr


def expected(row):
    """(ipver, src, dst, proto, ports, vlans) from one tshark row, outer header."""
    protos = row["frame.protocols"][0].split(":") if row["frame.protocols"] else []
    seen = {}
    outer = None
    for i, p in enumerate(protos):
        seen[p] = seen.get(p, 0) + 1
        if p in ("ip", "ipv6"):
            outer = i
            break
    nvlan_before = protos[:outer if outer is not None else len(protos)].count("vlan")
    vlans = [int(v) for v in row["vlan.id"][:nvlan_before]]
    if outer is None:
        return None, None, None, None, None, vlans
    kind = protos[outer]
    if not row[kind + ".src"]:
        # tshark started the IP dissector but found no usable header (bad version,
        # length or a cut header): no addresses, as in nkstream.
        return None, None, None, None, None, vlans
    # Occurrence index of this header among headers of its kind (an outer IPv6
    # inside nothing is the first IPv6; an IPv4 is always the first IPv4 here).
    idx = seen[kind] - 1
    if kind == "ip":
        ipver, src, dst = 4, row["ip.src"][idx], row["ip.dst"][idx]
        proto = int(row["ip.proto"][idx]) if len(row["ip.proto"]) > idx else None
        rest = protos[outer + 1:]
    else:
        ipver, src, dst = 6, row["ipv6.src"][idx], row["ipv6.dst"][idx]
        proto = int(row["ipv6.nxt"][idx]) if len(row["ipv6.nxt"]) > idx else None
        rest = protos[outer + 1:]
        counts = {}
        while rest and rest[0] in IPV6_EXT:
            counts[rest[0]] = counts.get(rest[0], 0) + 1
            vals = row[IPV6_EXT[rest[0]]]
            k = counts[rest[0]] - 1
            proto = int(vals[k]) if len(vals) > k else None
            rest = rest[1:]
    ports = None
    if rest and rest[0] in TRANSPORTS:
        t = TRANSPORTS[rest[0]]
        # First occurrence of this transport that is not above the outer IP.
        k = protos[:outer].count(rest[0])
        sp, dp = row[t + ".srcport"], row[t + ".dstport"]
        if len(sp) > k and len(dp) > k:
            ports = (int(sp[k]), int(dp[k]))
    return (ipver, ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, ports,
            vlans)


def actual(cols, i):
    fl = int(cols["flags"][i])
    nv = int(cols["nvlan"][i])
    vlans = [int(v) for v in cols["vlan"][i][:min(nv, _core.MAX_VLAN_IDS)]]
    if not fl & PF["PF_IP"]:
        return None, None, None, None, None, vlans
    ipver = int(cols["ipver"][i])
    raw_s, raw_d = bytes(cols["src"][i]), bytes(cols["dst"][i])
    if ipver == 4:
        src, dst = ipaddress.IPv4Address(raw_s[:4]), ipaddress.IPv4Address(raw_d[:4])
    else:
        src, dst = ipaddress.IPv6Address(raw_s), ipaddress.IPv6Address(raw_d)
    proto = int(cols["proto"][i]) if fl & PF["PF_PROTO"] else None
    ports = (int(cols["sport"][i]), int(cols["dport"][i])) if fl & PF["PF_PORTS"] else None
    return ipver, src, dst, proto, ports, vlans


CAPTURES = corpus_captures()


def test_corpus_present():
    assert len(CAPTURES) >= 50, "public corpus missing: set NKSTREAM_SHARED"


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_decode_matches_tshark(path):
    rows, err = tshark_fields(path)
    if rows is None:
        # Only a file tshark itself cannot read is left out, and it must be one
        # our reader rejects too (so nothing readable escapes the cross-check).
        with pytest.raises(Exception):
            read_batch(path)
        return
    data, recs = read_batch(path)
    assert len(rows) == len(recs), "%s: tshark saw %d packets, pcapfile %d" % (
        path.name, len(rows), len(recs))
    cols = _core.decode_columns(data, recs)
    mismatches = []
    for i, row in enumerate(rows):
        frame = int(row["frame.number"][0])
        exp, got = expected(row), actual(cols, i)
        why = EXCEPTIONS.get((path.name, frame))
        if why is None and exp != got:
            mismatches.append("frame %d: tshark %r nkstream %r (error %s)" % (
                frame, exp, got, _core.ERROR_NAMES[cols["error"][i]]))
        elif why is not None and exp == got:
            mismatches.append("frame %d is listed as an exception (%s) but now agrees"
                              % (frame, why))
    assert not mismatches, "%s:\n  %s" % (path.name, "\n  ".join(mismatches[:20]))
