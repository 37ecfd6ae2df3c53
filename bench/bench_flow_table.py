"""Flow state (pytest-benchmark): the full path with the flow table on vs off.

    python -m pytest bench/bench_flow_table.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds

Batches already in memory (no read), each round from an empty flow table and counters:

- `synth`: the generated 1M-packet mix (bench/conftest.py), ~35k flows of 2-400
  packets -- the common case: a flow's first packets are inspected, the rest take the
  verdict;
- `churn`: the same packets with every IPv4 packet's source address rewritten to a
  distinct address inside the watch range -- every packet opens a new flow, the
  table fills up and evicts (the worst case for the flow table).

Plus the window close (`close_window`, an O(capacity) sweep of a table holding the
synth flows).  ns/packet and the flow table's memory are in extra_info; nothing is
asserted about speed.
"""
import numpy as np
import pytest

from nkstream import _core
from nkstream.bench import has_flows, reset
from nkstream.capture import open_capture

pytestmark = pytest.mark.skipif(not hasattr(_core, "FlowTable"),
                                reason="this build has no flow state")


@pytest.fixture(scope="module")
def batches(synth_capture):
    with open_capture(synth_capture) as cap:
        return [(np.array(b.data, copy=True), b.recs.copy()) for b in cap]


@pytest.fixture(scope="module")
def churn_batches(batches):
    """Every IPv4 packet from its own source address (174.x.y.z counting up)."""
    out = []
    nxt = 0xAE000000
    for data, recs in batches:
        data = data.copy()
        cols = _core.decode_columns(data, recs)
        v4 = np.flatnonzero((cols["ipver"] == 4) & (recs["linktype"] == 1))
        ipoff = recs["off"][v4].astype(np.int64) + 14 + 4 * cols["nvlan"][v4].astype(np.int64)
        addrs = (nxt + np.arange(len(v4), dtype=np.uint64)).astype(">u4")
        nxt += len(v4)
        data[ipoff[:, None] + 12 + np.arange(4)] = addrs.view(np.uint8).reshape(-1, 4)
        out.append((data, recs))
    return out


def _run(clf, batches):
    process = clf.process
    for data, recs in batches:
        process(data, recs)


def _record(benchmark, clf, batches):
    n = sum(len(r) for _, r in batches)
    st = benchmark.stats.stats
    benchmark.extra_info["packets"] = n
    benchmark.extra_info["ns_per_packet_median"] = round(st.median * 1e9 / n, 1)
    benchmark.extra_info["M_packets_per_s_best"] = round(n / st.min / 1e6, 2)
    if has_flows(clf):
        benchmark.extra_info["flow_table_bytes"] = int(clf.flow_table.memory_bytes)
        benchmark.extra_info["flows_in_table"] = len(clf.flow_table)


@pytest.mark.parametrize("flows", ["off", "on"])
@pytest.mark.parametrize("traffic", ["synth", "churn"])
def test_full_path(benchmark, classifiers, batches, churn_batches, flows, traffic):
    clf = classifiers[1] if flows == "on" else classifiers[0]
    if clf is None:
        pytest.skip("flow state is off in this configuration")
    b = batches if traffic == "synth" else churn_batches
    benchmark.pedantic(_run, args=(clf, b), rounds=5, warmup_rounds=1,
                       setup=lambda: reset(clf))
    _record(benchmark, clf, b)
    reset(clf)


def test_close_window(benchmark, classifiers, batches):
    clf = classifiers[1]
    if clf is None:
        pytest.skip("flow state is off in this configuration")
    reset(clf)
    _run(clf, batches)
    benchmark.extra_info["flows_in_table"] = len(clf.flow_table)
    benchmark.extra_info["capacity"] = int(clf.flow_table.capacity)
    benchmark.pedantic(clf.close_window, rounds=5, warmup_rounds=1)
    reset(clf)
