"""Flow state cost: the full native path (decode, 2 LPM, tag, flows, count) with flow
state on vs off, in one process, on batches held in memory.

    python3 bench/bench_flows.py [--packets 2000000] [--flows 1000000] [--repeat 3]
    python3 -m pytest bench/bench_flows.py --benchmark-only -s     # pytest-benchmark

Two inputs:
- the generated mixed capture (`nkstream.synth.write_pcap`, cached as
  /tmp/nkstream-bench-synth-v2-{N}-seed0.pcap): realistic flow lengths;
- many short flows: a dedicated generator builds N distinct TCP flows of 3 packets
  (SYN, SYN-ACK, ACK), each round sent over all flows before the next, so all N
  flows are in the table at once (N concurrent flows, 3N packets).

Reported: ns/packet of `process()` with flows off and on (best of --repeat, process
CPU time), the throughput ratio, the time of the window close (`close_window()`, a
full pass over the table, once per snapshot window), the flow table's fixed memory
and how much of it the kernel backed with huge pages (a table on 4 KiB pages adds a
TLB miss to every lookup), and the process's
peak RSS (which includes the batches held in memory).  Speed is reported,
never asserted.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nkstream import _core  # noqa: E402
from nkstream.capture import open_capture  # noqa: E402
from nkstream.classify import Classifier  # noqa: E402
from nkstream.bench import huge_page_share  # noqa: E402
from nkstream.config import load_config  # noqa: E402

SYNTH = "/tmp/nkstream-bench-synth-v2-{n}-seed0.pcap"


def synth_batches(n_packets):
    path = SYNTH.format(n=n_packets)
    if not os.path.exists(path):
        from nkstream import synth
        synth.write_pcap(path, n_packets, seed=0)
    out = []
    with open_capture(path) as cap:
        for b in cap:
            out.append((np.array(b.data, dtype=np.uint8, copy=True), b.recs.copy()))
    return out


def short_flow_batches(n_flows, batch=65536, seed=0):
    """3 * n_flows packets of n_flows concurrent TCP flows (60-byte frames)."""
    rng = np.random.default_rng(seed)
    # clients in the shipped watch table's KP range, servers anywhere public
    cli = (np.uint32(0xAF2DB000) + rng.integers(0, 1024, n_flows, dtype=np.uint32))
    srv = rng.integers(0x01000000, 0xDF000000, n_flows, dtype=np.uint32)
    sport = rng.integers(1024, 65536, n_flows, dtype=np.uint32).astype(np.uint16)
    dport = rng.choice(np.array([443, 80, 8333, 3333, 53, 1194], np.uint16), n_flows)
    key = (cli.astype(np.uint64) << 32) ^ srv.astype(np.uint64) ^ (sport.astype(np.uint64) << 7)
    keep = np.unique(key, return_index=True)[1]
    cli, srv, sport, dport = cli[keep], srv[keep], sport[keep], dport[keep]
    n = len(cli)
    order = np.concatenate([rng.permutation(n) for _ in range(3)])
    rnd = np.repeat(np.arange(3), n)
    fwd = rnd != 1                                  # SYN, ACK client->server; SYN-ACK back
    total = 3 * n
    frames = np.zeros((total, 60), np.uint8)
    frames[:, 12:14] = (0x08, 0x00)
    frames[:, 14] = 0x45
    frames[:, 16:18] = (0, 46)                      # IPv4 total length: 20 + 20 + 6
    frames[:, 22] = 64
    frames[:, 23] = 6
    s_ip = np.where(fwd, cli[order], srv[order]).astype(">u4")
    d_ip = np.where(fwd, srv[order], cli[order]).astype(">u4")
    frames[:, 26:30] = s_ip.view(np.uint8).reshape(-1, 4)
    frames[:, 30:34] = d_ip.view(np.uint8).reshape(-1, 4)
    sp = np.where(fwd, sport[order], dport[order]).astype(">u2")
    dp = np.where(fwd, dport[order], sport[order]).astype(">u2")
    frames[:, 34:36] = sp.view(np.uint8).reshape(-1, 2)
    frames[:, 36:38] = dp.view(np.uint8).reshape(-1, 2)
    frames[:, 46] = 0x50
    frames[:, 47] = np.choose(rnd, [0x02, 0x12, 0x10])
    data = frames.reshape(-1)
    recs = np.zeros(total, _core.REC_DTYPE)
    recs["ts_ns"] = 1_767_225_600 * 10**9 + np.arange(total, dtype=np.int64) * 100
    recs["off"] = np.arange(total, dtype=np.uint64) * 60
    recs["caplen"] = recs["wirelen"] = 60
    recs["linktype"] = 1
    out = []
    for lo in range(0, total, batch):
        hi = min(total, lo + batch)
        r = recs[lo:hi].copy()
        r["off"] -= lo * 60
        out.append((data[lo * 60:hi * 60], r))
    return out, n


def run_once(batches, flow_capacity, cfg):
    clf = Classifier.from_config(cfg, flows=flow_capacity > 0) if flow_capacity == 0 else None
    if clf is None:
        cfg.flow_capacity = flow_capacity
        clf = Classifier.from_config(cfg, flows=True)
    ft = clf.flow_table
    clf.huge_share = (huge_page_share(ft.slots_address, ft.capacity * _core.FLOW_ENTRY_BYTES)
                      if ft is not None else None)
    n = 0
    t0 = time.process_time()
    for data, recs in batches:
        n += clf.process(data, recs)
    t1 = time.process_time()
    clf.close_window()       # once per snapshot window: timed apart
    t2 = time.process_time()
    snap = clf.snapshot()
    clf.close_ms = (t2 - t1) * 1e3
    return (t1 - t0) / n * 1e9, n, snap["totals"], clf


def _pct(x):
    return "?" if x is None else f"{x:.0%}"


def compare(name, batches, flow_capacity, repeat):
    cfg = load_config(None)
    best = {}
    last = {}
    for _ in range(repeat):
        for cap in (0, flow_capacity):
            ns, n, totals, clf = run_once(batches, cap, cfg)
            if cap not in best or ns < best[cap]:
                best[cap] = ns
            last[cap] = (totals, clf)
    totals, clf = last[flow_capacity]
    mem = clf.flow_table.memory_bytes
    off, on = best[0], best[flow_capacity]
    row = {
        "input": name, "packets": n, "flow_capacity": clf.flow_table.capacity,
        "ns_off": round(off, 1), "ns_on": round(on, 1),
        "throughput_on_vs_off": round(off / on, 3), "close_window_ms": round(clf.close_ms, 1),
        "cost_share": round(1 - off / on, 3),
        "flow_table_MiB": round(mem / 2**20, 1),
        "flow_table_on_huge_pages": clf.huge_share,
        "flows": totals["flows"], "flows_active": totals["flows_active"],
        "evictions": totals["flow_evictions"], "timeouts": totals["flow_timeouts"],
    }
    print(f"{name:<28} {n:>9,} pkts  off {off:6.1f} ns/pkt  on {on:6.1f} ns/pkt  "
          f"on/off throughput {off / on:5.2f}  close_window {clf.close_ms:5.1f} ms  "
          f"table {mem / 2**20:7.1f} MiB ({_pct(clf.huge_share)} on huge pages)  flows "
          f"{totals['flows']:,} active {totals['flows_active']:,} evicted "
          f"{totals['flow_evictions']:,}", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    b = synth_batches(a.packets)
    rows.append(compare(f"synth {a.packets // 10**6}M mixed", b, 1 << 20, a.repeat))
    del b
    b, n = short_flow_batches(a.flows)
    cap = 1
    while cap < 2 * n:
        cap <<= 1
    rows.append(compare(f"{n // 1000}k concurrent flows", b, cap, a.repeat))
    rows.append(compare(f"{n // 1000}k flows, table {cap // 2 // 1024}k", b, cap // 2, a.repeat))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if a.json:
        import json
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


# pytest-benchmark entry (bench/ convention): one round each, flows off and on
def _bench(benchmark, batches, cap):
    cfg = load_config(None)
    benchmark.pedantic(lambda: run_once(batches, cap, cfg), rounds=1, iterations=1)


def test_short_flows_off(benchmark):
    _bench(benchmark, short_flow_batches(200_000)[0], 0)


def test_short_flows_on(benchmark):
    _bench(benchmark, short_flow_batches(200_000)[0], 1 << 19)


if __name__ == "__main__":
    main()
