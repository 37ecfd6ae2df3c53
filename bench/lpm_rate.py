#!/usr/bin/env python3
"""LPM lookup rates, build time and memory, with pytricia measured in the same run.

    NKSTREAM_SHARED=/work/shared python bench/lpm_rate.py [--n 4000000] [--repeat 5]

Tables (from shared/data): a 20k-prefix IPv4 table (a random 20,000-prefix sample of the
2014 routing table), the full 2014 IPv4 table (512,621 prefixes), the 2015 IPv6 table
(27,693 prefixes).  Addresses: `random` = uniform over the whole space (IPv6: inside
random prefixes of the table, since uniform IPv6 addresses almost all miss at the first
level); `traffic` = 4,096 hosts inside the table drawn with a Zipf(1.2) law, the repeats
of real traffic.  Native rates are batch lookups (PrefixCore.lookup_many_*, one core,
GIL released); pytricia is looked up from Python one address at a time, the way a
Python user writes it (the DESIGN's baseline).
"""
import argparse
import gzip
import ipaddress
import os
import socket
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nkstream._core import PrefixCore  # noqa: E402
from nkstream.prefixes import PrefixTable  # noqa: E402


def data_dir():
    for cand in (os.environ.get("NKSTREAM_SHARED"), os.path.join(ROOT, "..", "shared"),
                 os.path.join(ROOT, "shared"), "/work/shared"):
        if cand and os.path.isdir(os.path.join(cand, "data")):
            return os.path.join(cand, "data")
    raise SystemExit("shared/data not found: set NKSTREAM_SHARED")


def tables():
    """{name: (PrefixTable, family, list of (cidr, label) for pytricia)}"""
    d = data_dir()
    full = PrefixTable.load(os.path.join(d, "ipasn_20140513.dat.gz"))
    n4, l4, i4, _, _, _ = full._arrays()
    rng = np.random.default_rng(20)
    k = np.sort(rng.choice(len(n4), 20000, replace=False))
    small = PrefixTable()
    small._labels, small._label_ids = list(full._labels), dict(full._label_ids)
    small._add_arrays4(n4[k], l4[k], i4[k])
    v6 = PrefixTable()
    with gzip.open(os.path.join(d, "ipasn6_20151101.dat.gz"), "rt") as f:
        for line in f:
            if not line.startswith(";") and ":" in line.split("\t", 1)[0]:
                p, a = line.split()
                v6.add(p, f"AS{a}")
    return {"ipv4-20k": (small, 4), "ipv4-full-512k": (full, 4), "ipv6-27k": (v6, 6)}


def synthetic_v6(real, n=200_000, seed=9):
    """An IPv6 table of n prefixes: the real 2015 table plus more-specifics of random
    real prefixes, lengths drawn from the real table's length mix.  A stand-in for
    today's ~200k-route table, which is not in shared/data; it is deeper and more
    scattered than a real table (every more-specific sits under a random parent)."""
    _, _, _, n6, l6, i6 = real._arrays()
    rng = np.random.default_rng(seed)
    extra = n - len(l6)
    k = rng.choice(len(l6), extra)
    hist = np.bincount(l6, minlength=129).astype(float)
    ln = np.maximum(rng.choice(129, extra, p=hist / hist.sum()), l6[k]).astype(np.uint8)
    nets = n6[k].copy()
    rnd = rng.integers(0, 256, (extra, 16), dtype=np.uint8)
    for b in range(16):
        free_bits = (0xFF >> np.clip(l6[k].astype(int) - 8 * b, 0, 8)).astype(np.uint8)
        nets[:, b] = (nets[:, b] & ~free_bits) | (rnd[:, b] & free_bits)
        keep = ((0xFF00 >> np.clip(ln.astype(int) - 8 * b, 0, 8)) & 0xFF).astype(np.uint8)
        nets[:, b] &= keep
    t = PrefixTable(name="ipv6-200k-synthetic")
    t._labels, t._label_ids = list(real._labels), dict(real._label_ids)
    t._add_arrays6(np.concatenate([n6, nets]), np.concatenate([l6, ln]),
                   np.concatenate([i6, i6[k]]))
    return t


def addresses(table, family, kind, n, seed=1):
    rng = np.random.default_rng(seed)
    n4, l4, _, n6, l6, _ = table._arrays()
    if family == 4:
        if kind == "random":
            return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
        k = rng.choice(len(n4), 4096)
        hosts = (n4[k].astype(np.uint64) | (rng.integers(0, 1 << 32, 4096, dtype=np.uint64)
                 & ((np.uint64(1) << (np.uint64(32) - l4[k].astype(np.uint64))) - np.uint64(1)))).astype(np.uint32)
    else:
        m = 4096 if kind == "traffic" else n
        k = rng.choice(len(n6), m)
        hosts = n6[k].copy()
        rnd = rng.integers(0, 256, (m, 16), dtype=np.uint8)
        for byte in range(16):   # random host bits below each prefix length
            keep = np.clip(l6[k].astype(int) - 8 * byte, 0, 8)
            mask = (0xFF >> keep).astype(np.uint8)
            hosts[:, byte] = (hosts[:, byte] & ~mask) | (rnd[:, byte] & mask)
        if kind == "random":
            return hosts
    z = np.minimum(rng.zipf(1.2, n), 4096) - 1
    return np.ascontiguousarray(hosts[z])


def rate(fn, n, repeat):
    fn()
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn):
    # CPU time of this process, not wall time: on a shared machine the wall clock also
    # counts the time other jobs hold the core, CPU time only ours.
    t = time.process_time()
    fn()
    return time.process_time() - t


def pytricia_rate(table, family, addrs, n=200_000):
    try:
        import pytricia
    except ImportError:
        return None
    pt = pytricia.PyTricia(32 if family == 4 else 128)
    for cidr, label in table.prefixes():
        pt[cidr] = label
    if family == 4:
        texts = [socket.inet_ntoa(int(a).to_bytes(4, "big")) for a in addrs[:n]]
    else:
        texts = [str(ipaddress.IPv6Address(bytes(r))) for r in addrs[:n]]
    get = pt.get

    def run():
        for t in texts:
            get(t)
    return rate(run, len(texts), 3)


def build_1m():
    """Build time of a 1M-prefix IPv4 table: the 2015 table's 606k IPv4 prefixes plus
    random ones, their lengths drawn from that table's length histogram (so the
    result looks like today's ~1M-route table), up to 1,000,000 distinct."""
    rng = np.random.default_rng(3)
    t = PrefixTable.load(os.path.join(data_dir(), "ipasn6_20151101.dat.gz"))
    n4, l4, i4, _, _, _ = t._arrays()
    extra = 1_000_000 - len(n4) + 20000
    hist = np.bincount(l4, minlength=33).astype(float)
    ln = rng.choice(33, extra, p=hist / hist.sum()).astype(np.uint8)
    net = rng.integers(0, 1 << 32, extra, dtype=np.uint64).astype(np.uint32) & \
        ((np.uint64(0xFFFFFFFF) << (np.uint64(32) - ln.astype(np.uint64))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    nets = np.concatenate([n4, net])
    lens = np.concatenate([l4, ln])
    key = (nets.astype(np.uint64) << np.uint64(8)) | lens.astype(np.uint64)
    _, keep = np.unique(key, return_index=True)
    keep = np.sort(keep)[:1_000_000]
    nets, lens = nets[keep], lens[keep]
    ids = np.arange(1, len(nets) + 1, dtype=np.uint32)
    e6, z8, z32 = np.zeros((0, 16), np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.uint32)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        core = PrefixCore(nets, lens, ids, e6, z8, z32)
        times.append(time.perf_counter() - t0)
    # The same through the Python API (numpy dedup + build) for the record.
    pt = PrefixTable()
    pt._labels += [f"L{i}" for i in range(1, len(nets) + 1)]
    pt._add_arrays4(nets, lens, ids)
    t0 = time.perf_counter()
    _ = pt.core
    api = time.perf_counter() - t0
    return len(nets), min(times), api, core.nbytes_v4, core.groups_v4, core.stride4


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4_000_000, help="addresses per native run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'table':16} {'addresses':9} {'M lookups/s':>11} {'ns/lookup':>9} "
          f"{'pytricia M/s':>12} {'ratio':>7} {'memory MiB':>10}")
    tabs = tables()
    tabs["ipv6-200k-synth"] = (synthetic_v6(tabs["ipv6-27k"][0]), 6)
    for name, (table, fam) in tabs.items():
        core = table.core
        mem = (core.nbytes_v4 if fam == 4 else core.nbytes_v6) / 2**20
        for kind in ("random", "traffic"):
            a = addresses(table, fam, kind, args.n)
            out = np.empty(len(a), np.uint32)
            fn = (lambda: core.lookup_many_v4(a, out)) if fam == 4 else (lambda: core.lookup_many_v6(a, out))
            r = rate(fn, len(a), args.repeat)
            pr = pytricia_rate(table, fam, a)
            ratio = f"{r / pr:6.1f}x" if pr else "   n/a"
            prs = f"{pr / 1e6:12.2f}" if pr else f"{'n/a':>12}"
            print(f"{name:16} {kind:9} {r / 1e6:11.1f} {1e9 / r:9.2f} {prs} {ratio:>7} {mem:10.2f}", flush=True)
    n, t, api, nbytes, groups, stride = build_1m()
    print(f"\nbuild {n:,} IPv4 prefixes: {t * 1000:.0f} ms native (PrefixCore), "
          f"{api * 1000:.0f} ms through PrefixTable (dedup + build); "
          f"{nbytes / 2**20:.1f} MiB, {groups:,} groups, first level {stride} bits")
    w = PrefixTable.load(os.path.join(ROOT, "nkstream", "data", "watch.csv"))
    print(f"shipped watch table ({len(w)} prefixes): {w.core.nbytes_v4 / 1024:.0f} KiB IPv4 + "
          f"{w.core.nbytes_v6 / 1024:.0f} KiB IPv6")


if __name__ == "__main__":
    main()
