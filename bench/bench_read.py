"""Capture-reader benchmarks (pytest-benchmark): native walkers through open_capture
on a generated capture as pcap (mmap), pcapng (mmap) and gzip (streamed), beside the
pure-Python reference reader on the same records.

    python -m pytest bench/bench_read.py --benchmark-only
"""
import gzip
import shutil
import subprocess

import numpy as np
import pytest

from nkstream import _core, synth
from nkstream.capture import open_capture
from nkstream.capture_reference import read_reference

N = 200_000


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "synth.pcap"
    synth.write_pcap(path, N, seed=0)
    return path


@pytest.fixture(scope="module")
def pcapng(pcap):
    if not shutil.which("editcap"):
        pytest.skip("editcap (wireshark-common) not installed")
    out = pcap.with_suffix(".pcapng")
    subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def pcap_gz(pcap):
    out = pcap.with_suffix(".pcap.gz")
    out.write_bytes(gzip.compress(pcap.read_bytes(), 1))
    return out


def read_all(path, **kw):
    n = 0
    with open_capture(path, **kw) as cap:
        for _data, recs in cap:
            n += len(recs)
    return n


@pytest.mark.benchmark(group="read")
def test_read_pcap_mmap(benchmark, pcap):
    assert benchmark(read_all, pcap) == N


@pytest.mark.benchmark(group="read")
def test_read_pcap_mmap_small_batches(benchmark, pcap):
    assert benchmark(read_all, pcap, batch_packets=4096) == N


@pytest.mark.benchmark(group="read")
def test_read_pcapng_mmap(benchmark, pcapng):
    assert benchmark(read_all, pcapng) == N


@pytest.mark.benchmark(group="read")
def test_read_pcap_gzip_stream(benchmark, pcap_gz):
    assert benchmark.pedantic(read_all, args=(pcap_gz,), rounds=3) == N


@pytest.mark.benchmark(group="read")
def test_read_python_reference(benchmark, pcap):
    """The baseline: the same records read one by one in Python (struct)."""
    data = pcap.read_bytes()
    recs, outcome = benchmark.pedantic(read_reference, args=(data,), rounds=1, iterations=1)
    assert outcome is None and len(recs) == N


@pytest.mark.benchmark(group="walker")
def test_walker_in_cache(benchmark, pcap):
    """Records per second of the walk itself, on a 1 MiB buffer that stays in cache."""
    buf = np.fromfile(pcap, dtype=np.uint8, count=1 << 20)
    w = _core.RecordWalker()
    w.set_pcap(False, False, 16, 1, 262144)
    recs = np.empty(N, _core.REC_DTYPE)
    n, _status = benchmark(w.walk, buf, 24, recs, 24, True)
    assert n > 1000
