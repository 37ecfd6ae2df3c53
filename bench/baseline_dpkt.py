#!/usr/bin/env python3
"""What a Python user writes without nkstream: dpkt + pytricia + dicts.

Does nkstream's work on a pcap: decode Ethernet (with VLAN tags) / IPv4 / IPv6 /
TCP / UDP, look both addresses up in a watch table and the peer side in a peer
table (pytricia, longest prefix), tag by server port, and count packets and bytes
per (watch label, direction, peer label, tag).  It is the baseline the benchmarks
compare nkstream against (`nkstream bench --compare`, docs/benchmarks.md); it is
deliberately straightforward, idiomatic code, not a strawman.

    python bench/baseline_dpkt.py FILE.pcap [--watch watch.csv] [--peers peers.csv]

Prints `packets=N seconds=S pps=R` and, with --show, the counters.
"""
import argparse
import collections
import gzip
import socket
import sys
import time

import dpkt
import pytricia

PORT_TAGS = {
    ("tcp", 443): "https", ("udp", 443): "quic", ("tcp", 80): "http", ("udp", 53): "dns",
    ("tcp", 53): "dns", ("tcp", 1723): "pptp-ctrl", ("udp", 500): "ipsec-ike",
    ("udp", 4500): "ipsec-natt", ("udp", 1194): "openvpn", ("tcp", 1194): "openvpn",
    ("udp", 51820): "wireguard", ("tcp", 9001): "tor", ("tcp", 8333): "bitcoin",
    ("tcp", 18080): "monero", ("tcp", 3333): "stratum", ("tcp", 1935): "rtmp",
    ("tcp", 25): "smtp", ("tcp", 587): "smtp", ("tcp", 993): "imaps", ("tcp", 143): "imap",
}
PROTO_TAGS = {50: "esp", 51: "ah", 47: "gre"}


def load_table(path, v6=False):
    t = pytricia.PyTricia(128 if v6 else 32)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            cidr, label = [x.strip() for x in line.replace("\t", ",").split(",", 1)]
            if (":" in cidr) == v6:
                t[cidr] = label
    return t


def run(path, watch4, watch6, peer4, peer6):
    counts = collections.defaultdict(lambda: [0, 0])
    n = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            n += 1
            wirelen = len(buf)
            try:
                eth = dpkt.ethernet.Ethernet(buf)
                ip = eth.data
            except (dpkt.UnpackError, IndexError):
                counts[(None, "transit", None, "unknown")][0] += 1
                continue
            if isinstance(ip, dpkt.ip.IP):
                src, dst = socket.inet_ntop(socket.AF_INET, ip.src), socket.inet_ntop(socket.AF_INET, ip.dst)
                wt, pt = watch4, peer4
                proto = ip.p
            elif isinstance(ip, dpkt.ip6.IP6):
                src, dst = socket.inet_ntop(socket.AF_INET6, ip.src), socket.inet_ntop(socket.AF_INET6, ip.dst)
                wt, pt = watch6, peer6
                proto = ip.nxt
            else:
                counts[(None, "transit", None, "unknown")][0] += 1
                continue
            ws, wd = wt.get(src), wt.get(dst)
            if ws:
                watch, direction, peer = ws, "internal" if wd else "outbound", pt.get(dst)
            elif wd:
                watch, direction, peer = wd, "inbound", pt.get(src)
            else:
                watch, direction, peer = None, "transit", pt.get(dst) or pt.get(src)
            l4 = ip.data
            tag = PROTO_TAGS.get(proto, "unknown")
            if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                kind = "tcp" if isinstance(l4, dpkt.tcp.TCP) else "udp"
                tag = PORT_TAGS.get((kind, l4.dport)) or PORT_TAGS.get((kind, l4.sport)) or "unknown"
            c = counts[(watch, direction, peer, tag)]
            c[0] += 1
            c[1] += wirelen
    return n, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap")
    ap.add_argument("--watch", help="cidr,label file (default: the shipped watch table)")
    ap.add_argument("--peers", help="cidr,label file (default: the shipped peer table)")
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args(argv)
    if not args.watch or not args.peers:
        import importlib.resources as res
        data = res.files("nkstream") / "data"
        args.watch = args.watch or str(data / "watch.csv")
        args.peers = args.peers or str(data / "peers.csv.gz")
    watch4, watch6 = load_table(args.watch), load_table(args.watch, v6=True)
    peer4, peer6 = load_table(args.peers), load_table(args.peers, v6=True)
    t0 = time.perf_counter()
    n, counts = run(args.pcap, watch4, watch6, peer4, peer6)
    dt = time.perf_counter() - t0
    print(f"packets={n} seconds={dt:.3f} pps={n / dt:.0f}")
    if args.show:
        for k, (p, b) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
            print(k, p, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
