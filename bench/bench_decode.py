"""Decoder micro benchmark: decode_columns() over ~1M real packets.

    NKSTREAM_SHARED=/work/shared python3 -m pytest bench/bench_decode.py --benchmark-only -s

The batch is every packet of several public-corpus captures (Ethernet, VLAN/QinQ,
IPv6, Linux cooked, raw IP, PPPoE, ESP, tunnels) repeated to about one million
records in one buffer, as a capture reader would hand it over.  ns/packet is printed
and stored in the benchmark's extra_info; the baseline beside it is dpkt (what a
Python user writes) on a slice of the same packets, when dpkt is installed.
Speed is reported, never asserted.
"""
import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import CORPUS  # noqa: E402
from pcapfile import batch, read_packets  # noqa: E402

from nkstream._core import decode_columns, decode_error_counts  # noqa: E402

CAPTURES = ["ndpi__teams.pcap", "ndpi__gnutella.pcap", "ndpi__alexa-app.pcapng",
            "ndpi__quickplay.pcap", "ndpi__6in4tunnel.pcap", "arkime__wireshark-esp.pcap",
            "zeek__http-qinq-0.pcap", "arkime__pppoe.pcap", "ndpi__tencent_games.pcap",
            "suricata-verify__tor_bl.pcap", "peafowl__ipv6_hdr_hopbyhop.pcap"]
TARGET = 1_000_000
RESULTS = {}


@pytest.fixture(scope="module")
def packets():
    if CORPUS is None:
        pytest.fail("public corpus not found: set NKSTREAM_SHARED")
    pkts = []
    for name in CAPTURES:
        pkts += read_packets(CORPUS / name)
    return pkts


@pytest.fixture(scope="module")
def big_batch(packets):
    data, recs = batch(packets)
    reps = -(-TARGET // len(recs))
    offs = recs["off"].copy()
    big = np.tile(recs, reps)
    big["off"] = (np.arange(reps, dtype=np.uint64)[:, None] * np.uint64(len(data))
                  + offs[None, :]).ravel()
    return np.tile(data, reps), big


def test_decode_columns(benchmark, big_batch):
    data, recs = big_batch
    benchmark.pedantic(decode_columns, args=(data, recs), rounds=5, iterations=1,
                       warmup_rounds=1)
    ns = benchmark.stats.stats.min * 1e9 / len(recs)
    benchmark.extra_info.update(packets=len(recs), ns_per_packet=round(ns, 1),
                                mpps=round(1e3 / ns, 2))
    print("\ndecode_columns: %d packets, %.1f ns/packet (best of 5), %.1f M packets/s"
          % (len(recs), ns, 1e3 / ns))


def test_decode_only(benchmark, big_batch):
    """decode_packet() per record, counting reasons only (no column stores)."""
    data, recs = big_batch
    counts = benchmark.pedantic(decode_error_counts, args=(data, recs), rounds=5,
                                iterations=1, warmup_rounds=1)
    assert int(counts.sum()) == len(recs)
    ns = benchmark.stats.stats.min * 1e9 / len(recs)
    benchmark.extra_info.update(packets=len(recs), ns_per_packet=round(ns, 1),
                                mpps=round(1e3 / ns, 2))
    RESULTS["decode_only"] = ns
    print("\ndecode only: %d packets, %.1f ns/packet (best of 5), %.1f M packets/s"
          % (len(recs), ns, 1e3 / ns))


def test_dpkt_baseline(benchmark, packets):
    """What a Python user writes: dpkt, per packet, Ethernet frames only."""
    dpkt = pytest.importorskip("dpkt")
    frames = [f for _ts, lt, _wl, f in packets if lt == 1][:20000]

    def run():
        n = 0
        for f in frames:
            try:
                eth = dpkt.ethernet.Ethernet(f)
            except (dpkt.UnpackError, AttributeError):
                continue
            ip = eth.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                l4 = ip.data
                if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                    n += l4.sport
        return n

    benchmark.pedantic(run, rounds=3, iterations=1)
    ns = benchmark.stats.stats.min * 1e9 / len(frames)
    benchmark.extra_info.update(packets=len(frames), ns_per_packet=round(ns, 1))
    print("\ndpkt baseline: %d packets, %.0f ns/packet" % (len(frames), ns))
    if "decode_only" in RESULTS:
        ratio = ns / RESULTS["decode_only"]
        benchmark.extra_info["nkstream_decode_speedup"] = round(ratio, 1)
        print("nkstream decode is %.0fx dpkt's per-packet cost (same process)" % ratio)
