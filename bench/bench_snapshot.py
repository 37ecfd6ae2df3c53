"""Snapshot write and read of large counter sets (pytest-benchmark).

    python -m pytest bench/bench_snapshot.py --benchmark-only

Counters holding 10k, 190k (near the default table's 196,608-key cap) and 750k keys
(a 2^20-slot table) shaped like traffic (200 watch labels, 4 directions, 60k peers,
300 tags): copying the keys out of the table (`Counters.snapshot`), encoding and
writing the msgpack file atomically (tmp + fsync + rename), loading it back with its
checks, and turning it into a pandas DataFrame.  Rows/s are in extra_info; nothing is
asserted about speed.
"""
import numpy as np
import pytest

from nkstream import _core
from nkstream.snapshot import Snapshot, load_snapshot

SIZES = {"10k": (10_000, 1 << 15), "190k": (190_000, 1 << 18), "750k": (750_000, 1 << 20)}
T0 = 1_795_000_000 * 10**9


def filled(keys, capacity, seed=7):
    rng = np.random.default_rng(seed)
    k = np.unique(np.stack([rng.integers(1, 200, keys * 2), rng.integers(0, 4, keys * 2),
                            rng.integers(0, 60_000, keys * 2), rng.integers(0, 300, keys * 2)],
                           axis=1), axis=0)
    k = k[rng.permutation(len(k))[:keys]]
    c = _core.Counters(capacity)
    c.add_many(k[:, 0].astype(np.uint32), k[:, 1].astype(np.uint8), k[:, 2].astype(np.uint32),
               k[:, 3].astype(np.uint16), rng.integers(1, 10_000, keys).astype(np.uint64),
               rng.integers(60, 10_000_000, keys).astype(np.uint64),
               rng.integers(0, 50, keys).astype(np.uint64))
    assert len(c) == keys
    return c


def labels():
    return dict(watch_labels=[None] + [f"watch-{i}" for i in range(1, 200)],
                peer_labels=[None] + [f"AS{i}" for i in range(1, 60_000)],
                tags=["unknown"] + [f"tag-{i}" for i in range(1, 300)],
                categories=["unknown"] + ["other"] * 299)


@pytest.fixture(scope="module", params=list(SIZES))
def counters(request):
    keys, cap = SIZES[request.param]
    return keys, filled(keys, cap)


def test_counters_snapshot_copy(benchmark, counters):
    keys, c = counters
    snap = benchmark(c.snapshot, reset=False)
    assert len(snap["columns"]["watch"]) == keys
    benchmark.extra_info["keys"] = keys


def test_snapshot_write(benchmark, counters, tmp_path):
    keys, c = counters
    snap = Snapshot.from_counters(c.snapshot(reset=False), start_ns=T0, end_ns=T0 + 60 * 10**9,
                                  flows=True, **labels())
    path = tmp_path / "snap.msgpack"
    benchmark(snap.write, path)
    benchmark.extra_info["keys"] = keys
    benchmark.extra_info["file_bytes"] = path.stat().st_size


def test_snapshot_load(benchmark, counters, tmp_path):
    keys, c = counters
    path = tmp_path / "snap.msgpack"
    Snapshot.from_counters(c.snapshot(reset=False), start_ns=T0, end_ns=T0 + 60 * 10**9,
                           flows=True, **labels()).write(path)
    s = benchmark(load_snapshot, path)
    assert s.totals is not None
    benchmark.extra_info["keys"] = keys


def test_snapshot_to_pandas(benchmark, counters, tmp_path):
    pytest.importorskip("pandas")
    keys, c = counters
    path = tmp_path / "snap.msgpack"
    Snapshot.from_counters(c.snapshot(reset=False), start_ns=T0, end_ns=T0 + 60 * 10**9,
                           flows=True, **labels()).write(path)
    s = load_snapshot(path)
    df = benchmark(s.to_pandas)
    assert len(df) == keys
    benchmark.extra_info["keys"] = keys
