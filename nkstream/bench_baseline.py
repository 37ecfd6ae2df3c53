"""What a Python user writes without nkstream: dpkt + pytricia + dicts.

Does nkstream's work on a pcap: decode Ethernet (with VLAN tags) / IPv4 / IPv6 /
TCP / UDP, look both addresses up in a watch table and the peer side in a peer
table (pytricia, longest prefix), tag by server port or IP protocol, and count
packets and bytes per (watch label, direction, peer label, tag).  It is the baseline
`nkstream bench --compare` and docs/benchmarks.md compare nkstream against; it is
deliberately straightforward, idiomatic code, not a strawman (and it does less than
nkstream: no payload signatures, no SNI, no error reasons).

dpkt and pytricia are optional (`pip install nkstream[bench]`); they are imported
only when the baseline runs, and `missing()` names what is not installed.

    python -m nkstream.bench_baseline FILE.pcap [-c CONFIG] [--limit N] [--show]

Prints `packets=N seconds=S pps=R` and, with --show, the counters.
"""
import argparse
import collections
import gzip
import importlib
import socket
import sys
import time

PORT_TAGS = {
    ("tcp", 443): "https", ("udp", 443): "quic", ("tcp", 80): "http", ("udp", 53): "dns",
    ("tcp", 53): "dns", ("tcp", 1723): "pptp-ctrl", ("udp", 500): "ipsec-ike",
    ("udp", 4500): "ipsec-natt", ("udp", 1194): "openvpn", ("tcp", 1194): "openvpn",
    ("udp", 51820): "wireguard", ("tcp", 9001): "tor", ("tcp", 8333): "bitcoin",
    ("tcp", 18080): "monero", ("tcp", 3333): "stratum", ("tcp", 1935): "rtmp",
    ("tcp", 25): "smtp", ("tcp", 587): "smtp", ("tcp", 993): "imaps", ("tcp", 143): "imap",
}
PROTO_TAGS = {50: "esp", 51: "ah", 47: "gre"}


def missing():
    """Names of the baseline's modules that cannot be imported (empty: it can run)."""
    gone = []
    for name in ("dpkt", "pytricia"):
        try:
            importlib.import_module(name)
        except ImportError:
            gone.append(name)
    return gone


def tables_from(prefix_table):
    """(IPv4, IPv6) pytricia tries holding a PrefixTable's prefixes and labels."""
    import pytricia

    t4, t6 = pytricia.PyTricia(32), pytricia.PyTricia(128)
    for cidr, label in prefix_table.prefixes():
        (t6 if ":" in cidr else t4)[cidr] = label
    return t4, t6


def run(path, watch4, watch6, peer4, peer6, limit=None):
    """Classify a pcap file; returns (packets, counters dict)."""
    import dpkt

    counts = collections.defaultdict(lambda: [0, 0])
    n = 0
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            if limit is not None and n >= limit:
                break
            n += 1
            wirelen = len(buf)
            try:
                eth = dpkt.ethernet.Ethernet(buf)
                ip = eth.data
            except (dpkt.UnpackError, IndexError):
                c = counts[(None, "transit", None, "unknown")]
                c[0] += 1
                c[1] += wirelen
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
                c = counts[(None, "transit", None, "unknown")]
                c[0] += 1
                c[1] += wirelen
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


def measure(path, watch, peers, limit=None):
    """Run the baseline on `path` with the tables of two PrefixTables; returns
    {"packets", "seconds", "pps", "keys"} (table loading not timed)."""
    w4, w6 = tables_from(watch)
    p4, p6 = tables_from(peers)
    t0 = time.perf_counter()
    n, counts = run(path, w4, w6, p4, p6, limit=limit)
    dt = time.perf_counter() - t0
    return {"packets": n, "seconds": dt, "pps": n / dt if dt > 0 else 0.0, "keys": len(counts)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nkstream.bench_baseline",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap")
    ap.add_argument("-c", "--config", help="nkstream TOML config (default: shipped tables)")
    ap.add_argument("--limit", type=int, help="stop after N packets")
    ap.add_argument("--show", action="store_true", help="print the counters")
    args = ap.parse_args(argv)
    gone = missing()
    if gone:
        print(f"baseline needs {', '.join(gone)} (pip install nkstream[bench])", file=sys.stderr)
        return 1
    from .config import build_tables, load_config

    watch, peers = build_tables(load_config(args.config))
    w4, w6 = tables_from(watch)
    p4, p6 = tables_from(peers)
    t0 = time.perf_counter()
    n, counts = run(args.pcap, w4, w6, p4, p6, limit=args.limit)
    dt = time.perf_counter() - t0
    print(f"packets={n} seconds={dt:.3f} pps={n / dt:.0f}")
    if args.show:
        for k, (p, b) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
            print(k, p, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
