"""Signature tagger throughput: the native tag_packet (via tag_columns, one C call
per packet, no Python per packet) on every public-corpus packet repeated, against
the pure-Python reference tagger on the same packets, in the same process.

    NKSTREAM_SHARED=/work/shared python3 -m pytest bench/bench_signatures.py \
        --benchmark-only -q -p no:cacheprovider
"""
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import corpus_captures  # noqa: E402
from label_table import LabelTable  # noqa: E402
from tshark_packets import packets  # noqa: E402

from nkstream._core import tag_columns  # noqa: E402
from nkstream.rules import Rules  # noqa: E402
from nkstream.signatures_reference import ReferenceTagger  # noqa: E402

PF_PROTO, PF_PORTS, PF_GRE, PF_PAYLOAD = 0x02, 0x04, 0x20, 0x80
REPEAT = 40


@pytest.fixture(scope="module")
def workload():
    rules = Rules.load()
    peers = LabelTable()
    core = rules.compile(peers)
    pk = [d for p in corpus_captures() for d in packets(p) if d["gre_ver"] is None]
    data = bytearray()
    cols = {k: [] for k in ("flags", "proto", "sport", "dport", "off", "len", "peer")}
    for i, d in enumerate(pk):
        f = 0
        if d["proto"] is not None:
            f |= PF_PROTO
        if d["sport"] is not None:
            f |= PF_PORTS
        pay = d["payload"]
        if pay is not None:
            f |= PF_PAYLOAD
        cols["flags"].append(f)
        cols["proto"].append(d["proto"] or 0)
        cols["sport"].append(d["sport"] or 0)
        cols["dport"].append(d["dport"] or 0)
        cols["off"].append(len(data))
        cols["len"].append(len(pay or b""))
        cols["peer"].append(i % len(peers.labels))   # spread over real hint labels too
        data += pay or b""
    arrays = dict(
        flags=np.array(cols["flags"] * REPEAT, np.uint16), proto=np.array(cols["proto"] * REPEAT, np.uint8),
        sport=np.array(cols["sport"] * REPEAT, np.uint16), dport=np.array(cols["dport"] * REPEAT, np.uint16),
        pay_off=np.array(cols["off"] * REPEAT, np.uint32), pay_len=np.array(cols["len"] * REPEAT, np.uint32),
        peer_label=np.array(cols["peer"] * REPEAT, np.uint32))
    return rules, peers, core, np.frombuffer(bytes(data), np.uint8), arrays, pk


def test_native_tagger(benchmark, workload):
    rules, peers, core, data, arrays, pk = workload
    n = len(arrays["flags"])
    tags, _ = benchmark(tag_columns, core, data, **arrays)
    assert len(tags) == n
    ns = benchmark.stats.stats.min / n * 1e9
    benchmark.extra_info["packets"] = n
    benchmark.extra_info["ns_per_packet_min"] = round(ns, 2)

    # same-process baseline: the pure-Python reference on the corpus once
    ref = ReferenceTagger(rules, peers)
    t0 = time.perf_counter()
    for i, d in enumerate(pk):
        ref.tag(proto=d["proto"], sport=d["sport"], dport=d["dport"], payload=d["payload"],
                peer_label=int(arrays["peer_label"][i]))
    ref_ns = (time.perf_counter() - t0) / len(pk) * 1e9
    benchmark.extra_info["reference_ns_per_packet"] = round(ref_ns, 1)
    benchmark.extra_info["speedup_vs_reference"] = round(ref_ns / ns, 1)
    print(f"\nnative tag_packet: {ns:.1f} ns/packet ({n} packets); "
          f"Python reference: {ref_ns:.0f} ns/packet; ratio {ref_ns / ns:.0f}x")
