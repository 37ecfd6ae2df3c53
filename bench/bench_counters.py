"""Counter table micro benchmark: agg_add per packet, through Counters.add_many.

    python3 -m pytest bench/bench_counters.py --benchmark-only -s

Key streams shaped like traffic: 2M packets over N distinct keys (1k, 50k, 190k =
near the default table's 196,608-key cap), in bursts of 1-16 packets of one key (a
flow's packets arrive together, which the last-key cache serves), plus a worst case
with every packet a fresh random key of the 190k.  The baseline is what a Python user
writes: a dict of [packets, bytes] lists keyed by the 4-tuple, timed on a 200k slice in
the same process.  ns/packet and the ratio are printed and stored in extra_info;
speed is reported, never asserted.
"""
import time

import numpy as np
import pytest

from nkstream._core import Counters

N_PACKETS = 2_000_000


def key_stream(distinct, bursty, seed=1):
    rng = np.random.default_rng(seed)
    keys = np.stack([rng.integers(0, 200, distinct), rng.integers(0, 4, distinct),
                     rng.integers(0, 60_000, distinct), rng.integers(0, 300, distinct)], axis=1)
    keys = np.unique(keys, axis=0)
    if bursty:
        lens = rng.integers(1, 17, N_PACKETS // 8)
        idx = np.repeat(rng.integers(0, len(keys), len(lens)), lens)[:N_PACKETS]
    else:
        idx = rng.integers(0, len(keys), N_PACKETS)
    k = keys[idx]
    return (k[:, 0].astype(np.uint32), k[:, 1].astype(np.uint8), k[:, 2].astype(np.uint32),
            k[:, 3].astype(np.uint16), np.ones(len(idx), np.uint64),
            rng.integers(60, 1515, len(idx)).astype(np.uint64))


def python_dict_ns(cols, n=200_000):
    w, d, p, t, pk, by = (c[:n].tolist() for c in cols)
    t0 = time.perf_counter()
    table = {}
    for key in zip(w, d, p, t, pk, by):
        c = table.get(key[:4])
        if c is None:
            table[key[:4]] = [key[4], key[5]]
        else:
            c[0] += key[4]
            c[1] += key[5]
    return (time.perf_counter() - t0) * 1e9 / n


@pytest.mark.parametrize("distinct,bursty", [(1_000, True), (50_000, True), (190_000, True),
                                             (190_000, False)])
def test_agg_add(benchmark, distinct, bursty):
    cols = key_stream(distinct, bursty)
    c = Counters()

    def run():
        c.reset()
        return c.add_many(*cols)

    overflowed = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert overflowed == 0
    ns = benchmark.stats.stats.min * 1e9 / len(cols[0])
    base = python_dict_ns(cols)
    benchmark.extra_info.update(ns_per_packet=ns, python_dict_ns_per_packet=base,
                                speedup=base / ns, keys=len(c))
    print(f"\n{len(c):>7} keys {'bursty' if bursty else 'random'}: {ns:.1f} ns/packet "
          f"({1e3 / ns:.0f} M/s); Python dict {base:.0f} ns/packet; x{base / ns:.0f}")
