"""pytest-benchmark suite for the LPM (bench/lpm_rate.py prints the same as a table).

    NKSTREAM_SHARED=/work/shared python -m pytest bench/bench_lpm.py --benchmark-only \
        --benchmark-columns=min,mean,ops

Each native benchmark does one batch lookup of N addresses; `ops` x N = lookups/s.
pytricia (optional) is benchmarked in the same run on the same tables and addresses
when it is importable, one Python call per address; skipped otherwise.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lpm_rate  # noqa: E402

N = 1_000_000
N_PYTRICIA = 100_000


@pytest.fixture(scope="module")
def tables():
    return lpm_rate.tables()


CASES = [(t, k) for t in ("ipv4-20k", "ipv4-full-512k", "ipv6-27k") for k in ("random", "traffic")]


@pytest.mark.parametrize("name,kind", CASES)
def test_native_lookup_many(benchmark, tables, name, kind):
    table, fam = tables[name]
    core = table.core
    a = lpm_rate.addresses(table, fam, kind, N)
    out = np.empty(len(a), np.uint32)
    fn = core.lookup_many_v4 if fam == 4 else core.lookup_many_v6
    benchmark.extra_info["addresses_per_call"] = len(a)
    benchmark.extra_info["memory_bytes"] = core.nbytes_v4 if fam == 4 else core.nbytes_v6
    benchmark(fn, a, out)
    assert np.array_equal(out, table.lookup_many(a))


@pytest.mark.parametrize("name,kind", CASES)
def test_pytricia_lookup(benchmark, tables, name, kind):
    pytricia = pytest.importorskip("pytricia")
    import ipaddress
    import socket

    table, fam = tables[name]
    pt = pytricia.PyTricia(32 if fam == 4 else 128)
    for cidr, label in table.prefixes():
        pt[cidr] = label
    a = lpm_rate.addresses(table, fam, kind, N_PYTRICIA)
    if fam == 4:
        texts = [socket.inet_ntoa(int(x).to_bytes(4, "big")) for x in a]
    else:
        texts = [str(ipaddress.IPv6Address(bytes(r))) for r in a]
    get = pt.get
    benchmark.extra_info["addresses_per_call"] = len(texts)

    def run():
        for t in texts:
            get(t)
    benchmark(run)


def test_build_full_table(benchmark, tables):
    from nkstream._core import PrefixCore

    n4, l4, i4, n6, l6, i6 = tables["ipv4-full-512k"][0]._arrays()
    benchmark(PrefixCore, n4, l4, i4, n6, l6, i6)
