"""The full path and each stage of it (pytest-benchmark), as `nkstream bench` times them.

    python -m pytest bench/bench_pipeline.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds

Each benchmark is one pass over a generated 1M-packet capture (bench/conftest.py),
cumulative over the stages: read (the native record walker over the mmap'd file),
+decode, +LPM (watch and peer lookups), +tags, +aggregate (`Classifier.process`
without flow state), +flows (`Classifier.process` with flow state: the full path, where
the build has it); plus the full path over
batches already in memory (no read) and, as the baseline in the same run, the
dpkt + pytricia script doing the same work on the first 20,000 packets.  packets/s and
ns/packet are in extra_info; nothing is asserted about speed.
"""
import numpy as np
import pytest

from nkstream import _core
from nkstream.bench import STAGES, _stage_pass, reset
from nkstream.capture import open_capture

N = 1_000_000


def _record(benchmark, packets):
    st = benchmark.stats.stats if benchmark.stats else None
    if st is not None:
        benchmark.extra_info["packets"] = packets
        benchmark.extra_info["M_packets_per_s_best"] = round(packets / st.min / 1e6, 2)
        benchmark.extra_info["ns_per_packet_median"] = round(st.median * 1e9 / packets, 1)


@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark, synth_capture, classifiers, stage):
    clf = classifiers[1] if stage == "flows" else classifiers[0]
    if clf is None:
        pytest.skip("flow stage: flow state is off in this build or configuration")
    # each round starts from an empty flow table and counters, as a new capture would
    benchmark.pedantic(_stage_pass, args=(synth_capture, clf, stage), rounds=5,
                       warmup_rounds=1, setup=lambda: reset(clf))
    reset(clf)
    _record(benchmark, N)


def test_full_path_in_memory(benchmark, synth_capture, classifiers):
    """The full path as configured (flow state on where the build and the default
    config have it) over batches already read: what a worker pays per AF_PACKET block."""
    clf = classifiers[1] or classifiers[0]
    with open_capture(synth_capture) as cap:
        batches = [(np.array(b.data, copy=True), b.recs.copy()) for b in cap]
    process = clf.process

    def run():
        for data, recs in batches:
            process(data, recs)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1, setup=lambda: reset(clf))
    reset(clf)
    benchmark.extra_info["flow_state"] = clf is classifiers[1]
    _record(benchmark, N)


def test_flow_partition(benchmark, synth_capture):
    """The worker partition (`nkstream bench --workers`): one decode + hash per packet."""
    with open_capture(synth_capture) as cap:
        batches = [(np.array(b.data, copy=True), b.recs.copy()) for b in cap]

    def run():
        for data, recs in batches:
            _core.flow_partition(data, recs, 16)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    _record(benchmark, N)


def test_baseline_dpkt_pytricia(benchmark, synth_capture, classifier, tmp_path):
    """What a Python user writes (nkstream.bench_baseline), first 20,000 packets."""
    from nkstream import bench_baseline
    from nkstream.bench import write_prefix

    if bench_baseline.missing():
        pytest.skip(f"baseline needs {', '.join(bench_baseline.missing())}")
    sub = tmp_path / "first20k.pcap"
    n = write_prefix(synth_capture, sub, 20_000)
    w4, w6 = bench_baseline.tables_from(classifier.watch)
    p4, p6 = bench_baseline.tables_from(classifier.peers)
    got = benchmark.pedantic(bench_baseline.run, args=(str(sub), w4, w6, p4, p6), rounds=1,
                             iterations=1)
    assert got[0] == n
    _record(benchmark, n)
