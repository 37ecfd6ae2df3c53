"""The AF_PACKET block walker (native) against the pure-Python reference built from
the kernel's struct layouts, on generated TPACKET_V3 blocks, intact and damaged.
No root needed: blocks are built here byte by byte as the kernel lays them out
(net/packet/af_packet.c: headers TPACKET_ALIGN'd, the frame at tp_mac)."""
import struct

import numpy as np
from hypothesis import given, settings, strategies as st

from nkstream import _core
from nkstream.reference_afpacket import BLOCK_DESC, TPACKET3_HDR, walk_block as ref_walk

ALIGN = 16
SOCKADDR_LL = 20
HDRLEN = ((TPACKET3_HDR.size + ALIGN - 1) & ~(ALIGN - 1)) + SOCKADDR_LL   # TPACKET3_HDRLEN


def _align(x):
    return (x + ALIGN - 1) & ~(ALIGN - 1)


def build_block(packets, size=8192, first=48):
    """packets: [(frame bytes, wirelen, status, tci, tpid, sec, nsec)]."""
    blk = bytearray(size)
    off = first
    offsets = []
    for frame, wirelen, status, tci, tpid, sec, nsec in packets:
        mac = _align(HDRLEN + 2) - 2        # the kernel aligns the network header
        need = _align(mac + len(frame))
        if off + need > size:
            break
        offsets.append((off, mac, frame, wirelen, status, tci, tpid, sec, nsec, need))
        off += need
    for i, (o, mac, frame, wirelen, status, tci, tpid, sec, nsec, need) in enumerate(offsets):
        nxt = need if i + 1 < len(offsets) else 0
        TPACKET3_HDR.pack_into(blk, o, nxt, sec, nsec, len(frame), wirelen, status | 1, mac,
                               mac + 14, 0, tci, tpid, 0)
        blk[o + mac:o + mac + len(frame)] = frame
    BLOCK_DESC.pack_into(blk, 0, 3, 0, 1, len(offsets), first, off, 7)
    return blk, len(offsets)


def native(block, linktype=1, iface=0):
    recs, bad = _core.walk_block(np.frombuffer(bytes(block), np.uint8), linktype, iface)
    return [tuple(int(x) for x in r) for r in recs.tolist()], bad


packet = st.tuples(
    st.binary(min_size=0, max_size=300),
    st.integers(0, 2000),                                   # extra wire bytes
    st.sampled_from([0, 1 << 4, (1 << 4) | (1 << 6), 1 << 6]),
    st.integers(0, 0xFFFF), st.sampled_from([0, 0x8100, 0x88A8]),
    st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))


@settings(max_examples=300, deadline=None)
@given(st.lists(packet, max_size=25), st.integers(1, 9))
def test_walker_matches_reference_on_intact_blocks(pkts, iface):
    pkts = [(f, len(f) + extra, s, tci, tpid, sec, ns) for f, extra, s, tci, tpid, sec, ns in pkts]
    block, n = build_block(pkts)
    got, bad = native(block, iface=iface)
    assert (got, bad) == ref_walk(bytes(block), iface=iface)
    assert bad == 0 and len(got) == n
    for (frame, wirelen, status, tci, tpid, sec, nsec), r in zip(pkts, got):
        ts, off, caplen, wire, lt, v_tci, v_tpid, ifc = r
        assert bytes(block[off:off + caplen]) == frame and ts == sec * 10**9 + nsec
        assert (lt, ifc) == (1, iface)
        if status & (1 << 4):
            assert (wire, v_tci) == (wirelen + 4, tci)
            assert v_tpid == (tpid if status & (1 << 6) else 0x8100)
        else:
            assert (wire, v_tci, v_tpid) == (wirelen, 0, 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(packet, min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)), min_size=1, max_size=6),
       st.sampled_from([1024, 4096, 8192]))
def test_walker_matches_reference_on_damaged_blocks(pkts, damage, size):
    """Any bytes at all (a corrupt header, offsets past the end, a truncated block):
    the native walker never reads outside the block and agrees with the reference
    on what it keeps and what it counts as bad."""
    pkts = [(f, len(f) + extra, s, tci, tpid, sec, ns) for f, extra, s, tci, tpid, sec, ns in pkts]
    block, _ = build_block(pkts)
    for pos, val in damage:
        block[pos] = val
    block = block[:size]
    got, bad = native(block)
    assert (got, bad) == ref_walk(bytes(block))
    for ts, off, caplen, wire, *_ in got:
        assert off + caplen <= size


def test_walker_counts_num_pkts_beyond_the_chain():
    block, n = build_block([(b"\x00" * 60, 60, 0, 0, 0, 1, 2)] * 3)
    struct.pack_into("<I", block, 12, n + 5)                 # num_pkts says 8, chain has 3
    got, bad = native(block)
    assert len(got) == 3 and bad == 5
    assert (got, bad) == ref_walk(bytes(block))


def test_walker_rejects_tiny_buffer():
    import pytest
    with pytest.raises(ValueError, match="at least"):
        _core.walk_block(np.zeros(10, np.uint8))
