"""Flow state cost: the full native path (decode, 2 LPM, tag, flows, count) with flow
state on vs off, in one process, on batches held in memory.

    python3 bench/bench_flows.py [--packets 2000000] [--flows 1000000] [--repeat 3]
    python3 -m pytest bench/bench_flows.py --benchmark-only -s     # pytest-benchmark

Two inputs:
- the generated mixed capture (`nkstream.synth.write_pcap`, cached as
  /tmp/nkstream-bench-synth-v2-{N}-seed0.pcap): realistic flow lengths;
- many short flows: a dedicated generator builds N distinct TCP flows of 3 packets
  (SYN, SYN-ACK, ACK), each round sent over all flows before the next, so all N
  flows are in the table at once (N concurrent flows, 3N packets): every packet is
  among its flow's first three, the worst case for flow state;
- the same N concurrent flows as TLS sessions of 12 packets (`--sessions`): the
  handshake, a ClientHello whose SNI decides the flow, then 8 packets of the
  decided flow, each round again over all flows -- flow state's cost when most
  packets belong to flows it has already decided, as on a real link.

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


def _tcp_frames(src, dst, sport, dport, flags, payload_len, size):
    """One frame per row (Ethernet + IPv4 + 20-byte TCP, `size` bytes in all), the
    payload left zero for the caller."""
    n = len(src)
    frames = np.zeros((n, size), np.uint8)
    frames[:, 12:14] = (0x08, 0x00)
    frames[:, 14] = 0x45
    tot = np.full(n, 40 + payload_len, ">u2")
    frames[:, 16:18] = tot.view(np.uint8).reshape(-1, 2)
    frames[:, 22] = 64
    frames[:, 23] = 6
    frames[:, 26:30] = src.astype(">u4").view(np.uint8).reshape(-1, 4)
    frames[:, 30:34] = dst.astype(">u4").view(np.uint8).reshape(-1, 4)
    frames[:, 34:36] = sport.astype(">u2").view(np.uint8).reshape(-1, 2)
    frames[:, 36:38] = dport.astype(">u2").view(np.uint8).reshape(-1, 2)
    frames[:, 46] = 0x50
    frames[:, 47] = flags
    return frames


def _endpoints(rng, n_flows):
    """Clients in the shipped watch table's KP range, servers anywhere public,
    client ports: n_flows draws each (the caller drops repeated flows, _distinct)."""
    cli = (np.uint32(0xAF2DB000) + rng.integers(0, 1024, n_flows, dtype=np.uint32))
    srv = rng.integers(0x01000000, 0xDF000000, n_flows, dtype=np.uint32)
    sport = rng.integers(1024, 65536, n_flows, dtype=np.uint32).astype(np.uint16)
    return cli, srv, sport


def _distinct(cli, srv, sport, *more):
    """The arrays restricted to one row per (client, server, client port)."""
    key = (cli.astype(np.uint64) << 32) ^ srv.astype(np.uint64) ^ (sport.astype(np.uint64) << 7)
    keep = np.unique(key, return_index=True)[1]
    return [x[keep] for x in (cli, srv, sport) + more]


def _batches(frames, first, batch):
    """(data, recs) batches of `batch` packets from one frame per row of `frames`,
    the packets numbered from `first` (100 ns apart)."""
    total, size = frames.shape
    data = frames.reshape(-1)
    recs = np.zeros(total, _core.REC_DTYPE)
    recs["ts_ns"] = 1_767_225_600 * 10**9 + (first + np.arange(total, dtype=np.int64)) * 100
    recs["off"] = np.arange(total, dtype=np.uint64) * size
    recs["caplen"] = recs["wirelen"] = size
    recs["linktype"] = 1
    out = []
    for lo in range(0, total, batch):
        hi = min(total, lo + batch)
        r = recs[lo:hi].copy()
        r["off"] -= lo * size
        out.append((data[lo * size:hi * size], r))
    return out


def short_flow_batches(n_flows, batch=65536, seed=0):
    """3 * n_flows packets of n_flows concurrent TCP flows (60-byte frames)."""
    rng = np.random.default_rng(seed)
    cli, srv, sport = _endpoints(rng, n_flows)
    dport = rng.choice(np.array([443, 80, 8333, 3333, 53, 1194], np.uint16), n_flows)
    cli, srv, sport, dport = _distinct(cli, srv, sport, dport)
    n = len(cli)
    order = np.concatenate([rng.permutation(n) for _ in range(3)])
    rnd = np.repeat(np.arange(3), n)
    fwd = rnd != 1                                  # SYN, ACK client->server; SYN-ACK back
    frames = _tcp_frames(np.where(fwd, cli[order], srv[order]),
                         np.where(fwd, srv[order], cli[order]),
                         np.where(fwd, sport[order], dport[order]),
                         np.where(fwd, dport[order], sport[order]),
                         np.choose(rnd, [0x02, 0x12, 0x10]), 6, 60)
    return _batches(frames, 0, batch), n


def tls_session_batches(n_flows, batch=65536, seed=0):
    """12 * n_flows packets of n_flows concurrent TLS sessions: SYN, SYN-ACK, ACK,
    a ClientHello (SNI r3---sn-abc.googlevideo.com, which decides the flow), then
    8 packets alternating server -> client and back (60-byte frames, 6 payload
    bytes); round k sends packet k of every flow, in a fresh random order."""
    from nkstream import synth
    rng = np.random.default_rng(seed)
    cli, srv, sport = _distinct(*_endpoints(rng, n_flows))
    n = len(cli)
    dport = np.full(n, 443, np.uint16)
    hello = np.frombuffer(synth.tls_client_hello("r3---sn-abc.googlevideo.com",
                                                 lambda k: bytes(range(k))), np.uint8)
    # (from the client?, TCP flags, payload bytes) of each round
    rounds = [(True, 0x02, 6), (False, 0x12, 6), (True, 0x10, 6), (True, 0x18, len(hello))]
    rounds += [(k % 2 == 1, 0x18, 6) for k in range(8)]
    out = []
    for k, (fwd, flags, plen) in enumerate(rounds):
        o = rng.permutation(n)
        a, b = (cli[o], srv[o]) if fwd else (srv[o], cli[o])
        pa, pb = (sport[o], dport[o]) if fwd else (dport[o], sport[o])
        frames = _tcp_frames(a, b, pa, pb, flags, plen, max(60, 54 + plen))
        if plen == len(hello):
            frames[:, 54:54 + plen] = hello
        out += _batches(frames, k * n, batch)
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
    ap.add_argument("--sessions", action="store_true",
                    help="also the --flows concurrent flows as 12-packet TLS sessions")
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
    del b
    if a.sessions:
        b, n = tls_session_batches(a.flows)
        rows.append(compare(f"{n // 1000}k concurrent TLS sessions", b, cap, a.repeat))
        del b
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


def test_tls_sessions_on(benchmark):
    _bench(benchmark, tls_session_batches(50_000)[0], 1 << 17)


if __name__ == "__main__":
    main()
