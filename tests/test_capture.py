"""Capture readers (nkstream.capture + core/source_pcap.pxi) against independent
readers: Wireshark's (tshark, capinfos, editcap), and the pure-Python reference
nkstream.capture_reference, on every public-corpus capture, on variants rewritten in
each byte order and timestamp resolution, on hand-built pcapng files, on damaged
copies of real files, and on random input (Hypothesis)."""
import decimal
import gzip
import os
import shutil
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nkstream import _core
from nkstream.capture import CaptureError, open_capture
from nkstream.capture_reference import RefRecord, read_reference

import capture_builders as cb
from conftest import ROOT, corpus_captures

CAPTURES = corpus_captures()
IDS = [p.name for p in CAPTURES]
PCAPS = [p for p in CAPTURES if p.read_bytes()[:4] != b"\x0a\x0d\x0d\x0a"]
PCAPNGS = [p for p in CAPTURES if p.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"]


def read_native(path, **kw):
    """(records as RefRecord list, outcome, capture) read with open_capture; the
    outcome uses the reference reader's vocabulary."""
    out = []
    outcome = None
    cap = open_capture(path, **kw)
    try:
        for data, recs in cap:
            assert data.dtype == np.uint8 and recs.dtype == _core.REC_DTYPE
            for r in recs:
                off, n = int(r["off"]), int(r["caplen"])
                assert off + n <= len(data)
                out.append(RefRecord(int(r["ts_ns"]), n, int(r["wirelen"]), int(r["linktype"]),
                                     int(r["iface"]), bytes(data[off:off + n])))
    except CaptureError as exc:
        outcome = ("error", exc.kind, exc.offset)
    else:
        if cap.warnings:
            assert len(cap.warnings) == 1
            outcome = ("truncated", cap.warnings[0].offset)
    cap.close()
    return out, outcome, cap


def read_bytes_native(tmp_path, data, name="cap", **kw):
    p = tmp_path / name
    p.write_bytes(data)
    return read_native(p, **kw)


def tshark_records(path):
    """(ts_ns, len, cap_len, interface id) per packet, from Wireshark's reader."""
    res = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
         "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.interface_id"],
        capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = []
    for line in res.stdout.splitlines():
        ts, wl, cl, ifid = line.split("\t")
        ts_ns = int(decimal.Decimal(ts) * 10**9) if ts else None      # SPBs have none
        rows.append((ts_ns, int(wl), int(cl), int(ifid or 0)))
    return rows


def capinfos_totals(path):
    """(packets, bytes) as capinfos counts them (bytes = sum of on-wire lengths)."""
    res = subprocess.run(["capinfos", "-M", "-T", "-r", "-c", "-d", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    fields = res.stdout.split("\t")
    return int(fields[1]), int(fields[2])


# --- every public-corpus capture ---------------------------------------------------

def test_corpus_present():
    assert len(CAPTURES) >= 80 and PCAPNGS and PCAPS


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_corpus_matches_reference_and_capinfos(path):
    native, outcome, cap = read_native(path)
    ref, ref_outcome = read_reference(path.read_bytes())
    assert outcome == ref_outcome
    assert native == ref            # ts, caplen, wirelen, linktype, iface, frame bytes
    assert cap.stats.packets == len(ref)
    assert cap.stats.bytes == sum(r.wirelen for r in ref)
    assert cap.stats.caplen_bytes == sum(r.caplen for r in ref)
    assert (cap.stats.packets, cap.stats.bytes) == capinfos_totals(path)


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_corpus_matches_tshark(path):
    native, outcome, cap = read_native(path)
    assert outcome is None
    want = tshark_records(path)
    got = [(r.ts_ns, r.wirelen, r.caplen, r.iface) for r in native]
    assert got == want


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.stat().st_size > 100_000][:4],
                         ids=lambda p: p.name)
def test_small_batches_equal_one_batch(path):
    one, _, _ = read_native(path, batch_packets=1 << 20)
    seven, _, cap = read_native(path, batch_packets=7)
    assert seven == one and len(one) > 7
    # and the batches really are 7 records (except the last)
    sizes = [len(r) for _, r in open_capture(path, batch_packets=7)]
    assert set(sizes[:-1]) == {7} and 1 <= sizes[-1] <= 7


def test_mmap_batches_are_zero_copy_views():
    path = next(p for p in PCAPS if p.stat().st_size > 100_000)
    cap = open_capture(path, batch_packets=100)
    batches = list(cap)
    assert cap._mm is not None
    for data, recs in batches:
        assert not data.flags.owndata and not data.flags.writeable
    # records of a batch start at the batch's first byte (offsets rebased per batch)
    assert all(int(recs["off"][0]) in (16, 24) for _, recs in batches)
    del batches
    cap.close()


# --- byte orders and timestamp resolutions ------------------------------------------

def _editcap(src, dst, fmt):
    subprocess.run(["editcap", "-F", fmt, str(src), str(dst)], check=True, capture_output=True)


@pytest.mark.parametrize("name", ["ndpi__quic.pcap", "zeek__linux_dlt_sll2.pcap",
                                  "arkime__bigendian.pcap", "ndpi__pptp.pcap"])
def test_pcap_us_ns_both_byte_orders(tmp_path, corpus_dir, name):
    src = corpus_dir / name
    want = tshark_records(src)
    ref, _ = read_reference(src.read_bytes())
    variants = {}
    _editcap(src, tmp_path / "le_us.pcap", "pcap")          # Wireshark's own writer
    _editcap(src, tmp_path / "le_ns.pcap", "nsecpcap")
    for tag in ("us", "ns"):
        le = (tmp_path / f"le_{tag}.pcap").read_bytes()
        assert le[:4] == (b"\xd4\xc3\xb2\xa1" if tag == "us" else b"\x4d\x3c\xb2\xa1")
        variants[("le", tag)] = le
        variants[("be", tag)] = cb.swap_pcap(le)
        assert variants[("be", tag)][:4] == (b"\xa1\xb2\xc3\xd4" if tag == "us" else b"\xa1\xb2\x3c\x4d")
    for (order, tag), data in variants.items():
        path = tmp_path / f"{order}_{tag}.pcap"
        path.write_bytes(data)
        native, outcome, cap = read_native(path)
        assert outcome is None and cap.format == "pcap"
        # Wireshark reads the rewritten file the same way
        assert [(r.ts_ns, r.wirelen, r.caplen, r.iface) for r in native] == tshark_records(path)
        got = [(r.ts_ns, r.wirelen, r.caplen) for r in native]
        exp = [(ts if tag == "ns" else ts // 1000 * 1000, wl, cl) for ts, wl, cl, _ in want]
        assert got == exp
        assert [r.frame for r in native] == [r.frame for r in ref]


def test_pcap_linktype_upper_bits_masked(tmp_path, corpus_dir):
    data = bytearray((corpus_dir / "ndpi__quic.pcap").read_bytes())
    # FCS present (P bit, 0x04000000) with 4 16-bit words (0x40000000): link type 1 stays 1
    struct.pack_into("<I", data, 20, 0x44000001)
    native, outcome, cap = read_bytes_native(tmp_path, bytes(data))
    assert outcome is None and cap.linktypes == [1] and cap.fcs_bits == 64
    assert {r.linktype for r in native} == {1}


@pytest.mark.parametrize("name", ["zeek__pcapng-multi-interface.pcapng", "ndpi__quic-v2.pcapng",
                                  "ndpi__hls.pcapng", "ndpi__alexa-app.pcapng"])
def test_pcapng_big_endian(tmp_path, corpus_dir, name):
    src = corpus_dir / name
    be = cb.swap_pcapng(src.read_bytes())
    assert be[8:12] == b"\x1a\x2b\x3c\x4d"
    path = tmp_path / ("be-" + name)
    path.write_bytes(be)
    native, outcome, cap = read_native(path)
    assert outcome is None
    assert [(r.ts_ns, r.wirelen, r.caplen, r.iface) for r in native] == tshark_records(src)
    assert tshark_records(path) == tshark_records(src)       # Wireshark agrees on the BE copy
    ref, _ = read_reference(src.read_bytes())
    assert native == ref


def test_pcapng_multi_interface_resolutions(corpus_dir):
    path = corpus_dir / "zeek__pcapng-multi-interface.pcapng"
    native, outcome, cap = read_native(path)
    assert outcome is None and cap.format == "pcapng"
    assert len(cap.interfaces) >= 2
    assert {i["tsresol"] for i in cap.interfaces} == {6, 9}   # us and ns interfaces
    assert sorted({r.iface for r in native}) == [0, 1]
    assert [(r.ts_ns, r.wirelen, r.caplen, r.iface) for r in native] == tshark_records(path)


def test_pcapng_sections_change_byte_order_and_interfaces(tmp_path, corpus_dir):
    a = (corpus_dir / "ndpi__quic-v2.pcapng").read_bytes()            # SLL, 1 iface
    b = (corpus_dir / "zeek__pcapng-multi-interface.pcapng").read_bytes()   # Ethernet, 2
    data = a + cb.swap_pcapng(b) + a
    native, outcome, cap = read_bytes_native(tmp_path, data)
    ra = read_reference(a)[0]
    rb = read_reference(b)[0]
    assert outcome is None
    assert [(r.ts_ns, r.caplen, r.wirelen, r.linktype, r.frame) for r in native] == \
        [(r.ts_ns, r.caplen, r.wirelen, r.linktype, r.frame) for r in ra + rb + ra]
    # interface ids are global: the second section's interfaces follow the first's
    ifa = len({r.iface for r in ra})
    assert {r.iface for r in native[len(ra):len(ra) + len(rb)]} == {ifa, ifa + 1}
    assert cap.linktypes == [113] * ifa + [1, 1] + [113] * ifa
    assert cap.interfaces[ifa]["section"] == 1


def test_pcapng_hand_built(tmp_path):
    """SPB (caplen from snaplen and block space), obsolete PB, unknown blocks skipped,
    if_tsresol as a power of 10 and of 2, if_tsoffset, each checked by hand."""
    f1 = bytes(range(60))
    f2 = bytes(range(100, 200))
    blocks = [
        cb.shb(),
        cb.block(0x00000BAD, b"custom block, skipped"),          # custom
        cb.idb(linktype=1, snaplen=64),                           # iface 0: us (default)
        cb.idb(linktype=101, snaplen=0, tsresol=3, tsoffset=-10),  # iface 1: ms, -10 s
        cb.idb(linktype=228, snaplen=0, tsresol=0x80 | 10),        # iface 2: 1/1024 s
        cb.block(4, struct.pack("<HH4s4sHH", 1, 8, b"\x0a\0\0\x01", b"x.y\0", 0, 0)),  # NRB
        cb.epb(0, 1_700_000_000_123_456, f1),
        cb.spb(f2[:64], origlen=100),                             # snaplen 64 -> caplen 64
        cb.spb(f1[:40], origlen=1500),                            # block space 40 (< snaplen:
                                                                  # not what the spec says a
                                                                  # writer does; still read)
        cb.epb(1, 1_700_000_000_123, f2, wirelen=1000),
        cb.block(5, struct.pack("<IIII", 0, 0, 0, 0)),           # ISB
        cb.epb(2, (1_700_000_000 << 10) | 512, f1),               # .5 s
        cb.old_pb(1, 1_700_000_000_005, f1[:7]),
        cb.block(0x0A, struct.pack("<II", 0x544C534B, 4) + b"k\n\0\0"),  # DSB (TLS key log)
    ]
    data = b"".join(blocks)
    native, outcome, cap = read_bytes_native(tmp_path, data)
    assert outcome is None
    got = [(r.ts_ns, r.caplen, r.wirelen, r.linktype, r.iface, r.frame) for r in native]
    assert got == [
        (1_700_000_000_123_456_000, 60, 60, 1, 0, f1),
        (0, 64, 100, 1, 0, f2[:64]),
        (0, 40, 1500, 1, 0, f1[:40]),
        (1_700_000_000_123_000_000 - 10 * 10**9, 100, 1000, 101, 1, f2),
        (1_700_000_000_500_000_000, 60, 60, 228, 2, f1),
        (1_700_000_000_005_000_000 - 10 * 10**9, 7, 7, 101, 1, f1[:7]),
    ]
    assert cap.linktypes == [1, 101, 228]
    assert cap._walker.blocks_skipped == 4    # custom, NRB, ISB, DSB
    # Wireshark agrees (timestamps, lengths, interfaces; SPBs have no timestamp) on the
    # file without the out-of-spec SPB and the custom block (which tshark lists as a frame)
    p = tmp_path / "for-tshark"
    p.write_bytes(b"".join(blocks[:1] + blocks[2:8] + blocks[9:]))
    want = [(None if r.ts_ns == 0 else r.ts_ns, r.wirelen, r.caplen, r.iface)
            for r in native[:2] + native[3:]]
    assert tshark_records(p) == want
    assert read_reference(data)[0] == native


# --- compressed, piped and streamed input --------------------------------------------

@pytest.mark.parametrize("name", ["ndpi__alexa-app.pcapng", "suricata-verify__tor_bl.pcap"])
def test_gzip_detected_by_magic_and_streamed(tmp_path, corpus_dir, name):
    src = corpus_dir / name
    plain, _, _ = read_native(src)
    z = tmp_path / "capture.bin"            # no .gz in the name: detected by magic
    raw = src.read_bytes()
    half = len(raw) // 2
    z.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))   # two members
    for chunk in (64, 5000, 1 << 16, 8 << 20):
        native, outcome, cap = read_native(z, chunk_size=chunk, batch_packets=1000)
        assert cap.compressed and cap._mm is None
        assert outcome is None and native == plain


@pytest.mark.parametrize("chunk", [64, 777, 65536])
def test_stream_chunks_carry_records(tmp_path, corpus_dir, chunk):
    """A FIFO is not mmap'able: the chunked reader must give the same records
    whatever the chunk size, records cut by chunk boundaries being carried."""
    for name in ("ndpi__alexa-app.pcapng", "ndpi__teams.pcap"):
        src = corpus_dir / name
        plain, _, _ = read_native(src)
        fifo = tmp_path / f"fifo-{chunk}-{name}"
        os.mkfifo(fifo)

        def feed():
            with open(fifo, "wb") as f:
                f.write(src.read_bytes())

        t = threading.Thread(target=feed)
        t.start()
        try:
            native, outcome, cap = read_native(fifo, chunk_size=chunk)
        finally:
            t.join(10)
        assert cap._mm is None and outcome is None and native == plain


@pytest.mark.parametrize("name", ["ndpi__alexa-app.pcapng", "suricata-verify__tor_bl.pcap"])
def test_chunked_read_of_regular_file_equals_mmap(corpus_dir, name):
    """use_mmap=False reads a regular file in chunks (retired chunks reused once no
    batch refers to them): same records, and batches kept by the caller stay intact."""
    src = corpus_dir / name
    plain, _, _ = read_native(src)
    for chunk in (64, 4096, 1 << 16):
        native, outcome, cap = read_native(src, chunk_size=chunk, use_mmap=False)
        assert cap._mm is None and outcome is None and native == plain
    # keep every batch, then check them all after the whole file was read
    kept = list(open_capture(src, chunk_size=4096, use_mmap=False, batch_packets=50))
    again = [RefRecord(int(r["ts_ns"]), int(r["caplen"]), int(r["wirelen"]), int(r["linktype"]),
                       int(r["iface"]), bytes(d[int(r["off"]):int(r["off"]) + int(r["caplen"])]))
             for d, recs in kept for r in recs]
    assert again == plain


def test_stdin_pipe(corpus_dir):
    src = corpus_dir / "ndpi__teams.pcap"
    code = ("import sys, hashlib; from nkstream.capture import open_capture\n"
            "c = open_capture('-'); h = hashlib.sha256(); n = 0\n"
            "for d, r in c:\n"
            "    n += len(r)\n"
            "    for o, l in zip(r['off'].tolist(), r['caplen'].tolist()): h.update(bytes(d[o:o+l]))\n"
            "print(n, c.stats.bytes, h.hexdigest(), c.format)\n")
    with open(src, "rb") as f:
        res = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    import hashlib
    ref, _ = read_reference(src.read_bytes())
    h = hashlib.sha256()
    for r in ref:
        h.update(r.frame)
    assert res.stdout.split() == [str(len(ref)), str(sum(r.wirelen for r in ref)),
                                  h.hexdigest(), "pcap"]


# --- damaged files --------------------------------------------------------------------

def _record_offsets_pcap(data, hdrlen=16):
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offs = []
    pos = 24
    while pos < len(data):
        offs.append(pos)
        pos += hdrlen + struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
    return offs


def _both_ways(tmp_path, data):
    """Read via mmap and via the streaming gzip path (small chunks): outcomes equal."""
    a = read_bytes_native(tmp_path, data, "damaged")
    b = read_bytes_native(tmp_path, gzip.compress(data), "damaged.gz", chunk_size=999)
    assert a[0] == b[0] and a[1] == b[1]
    return a


def test_bad_magic(tmp_path, corpus_dir):
    data = b"\x00\x01\x02\x03" + (corpus_dir / "ndpi__quic.pcap").read_bytes()[4:]
    p = tmp_path / "bad.pcap"
    p.write_bytes(data)
    with pytest.raises(CaptureError) as ei:
        open_capture(p)
    assert str(ei.value) == f"{p}: offset 0: bad magic 0x00010203: not a pcap or pcapng file"
    assert ei.value.kind == "bad_file_magic"


def test_empty_and_short_files(tmp_path):
    for data, kind in ((b"", "empty"), (b"\xd4\xc3\xb2\xa1\x02\x00", "short_header")):
        p = tmp_path / "f"
        p.write_bytes(data)
        with pytest.raises(CaptureError) as ei:
            list(open_capture(p))
        assert ei.value.kind == kind and str(ei.value).startswith(f"{p}: offset 0: ")


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError) as ei:
        open_capture(tmp_path / "nope.pcap")
    assert "nope.pcap" in str(ei.value) and ei.value.kind == "open"


def test_record_over_256k(tmp_path, corpus_dir):
    data = bytearray((corpus_dir / "ndpi__teams.pcap").read_bytes())
    offs = _record_offsets_pcap(data)
    struct.pack_into("<I", data, offs[5] + 8, 300000)
    native, outcome, _ = _both_ways(tmp_path, bytes(data))
    assert outcome == ("error", "caplen_too_big", offs[5])
    assert native == read_reference(bytes(data))[0] and len(native) == 5
    cap = open_capture(tmp_path / "damaged")
    with pytest.raises(CaptureError) as ei:
        for _ in cap:
            pass
    assert str(ei.value) == f"{tmp_path / 'damaged'}: offset {offs[5]}: record length 300000 exceeds 256 KiB"


def test_record_length_beyond_file(tmp_path, corpus_dir):
    data = bytearray((corpus_dir / "ndpi__quic.pcap").read_bytes())
    offs = _record_offsets_pcap(data)
    k = len(offs) - 3                       # the third record from the end
    bogus = len(data) - offs[k] + 1000      # past the end, but under 256 KiB
    assert bogus <= 262144
    struct.pack_into("<I", data, offs[k] + 8, bogus)
    native, outcome, _ = _both_ways(tmp_path, bytes(data))
    assert outcome == ("error", "beyond_eof", offs[k]) and len(native) == k
    with pytest.raises(CaptureError, match=rf"offset {offs[k]}: record length {bogus} runs beyond the end"):
        list(open_capture(tmp_path / "damaged"))


def test_truncated_last_record_keeps_packets(tmp_path, corpus_dir):
    full = (corpus_dir / "ndpi__quic.pcap").read_bytes()
    offs = _record_offsets_pcap(full)
    ref, _ = read_reference(full)
    for cut in (offs[-1] + 16 + 10, offs[-1] + 7):     # inside the data; inside the header
        data = full[:cut]
        native, outcome, cap = _both_ways(tmp_path, data)
        assert outcome == ("truncated", offs[-1])
        assert native == ref[:-1]
        assert cap.stats.packets == len(ref) - 1
        w = str(cap.warnings[0])
        assert w.startswith(f"{tmp_path / 'damaged'}: offset {offs[-1]}: truncated last record")
        assert f"the {len(ref) - 1} packets before it are kept" in w


def test_pcapng_damage(tmp_path, corpus_dir):
    full = (corpus_dir / "zeek__pcapng-multi-interface.pcapng").read_bytes()
    blocks = cb.pcapng_blocks(full)
    offs = []
    pos = 0
    for btype, big, body in blocks:
        offs.append(pos)
        pos += len(body) + 12
    epbs = [i for i, b in enumerate(blocks) if b[0] == 6]
    k = epbs[2]
    cases = {}
    d = bytearray(full)
    struct.pack_into("<I", d, offs[k] + 4, len(blocks[k][2]) + 12 + 2)      # not a multiple of 4
    cases["block_align"] = d
    d = bytearray(full)
    struct.pack_into("<I", d, offs[k] + 8, 7)                               # interface 7
    cases["bad_iface"] = d
    d = bytearray(full)
    struct.pack_into("<I", d, offs[k] + 20, 300000)
    cases["caplen_too_big"] = d
    d = bytearray(full)
    struct.pack_into("<I", d, offs[k] + 20, len(blocks[k][2]))              # caplen > block
    cases["caplen_block"] = d
    d = bytearray(full)
    struct.pack_into("<I", d, offs[k] + 4, len(blocks[k][2]) + 12 + 8)      # trailer differs
    cases["block_trailer"] = d
    d = bytearray(full)
    d[offs[0] + 8:offs[0] + 12] = b"\x11\x22\x33\x44"
    cases["bad_magic"] = d
    for kind, data in cases.items():
        native, outcome, _ = _both_ways(tmp_path, bytes(data))
        at = offs[0] if kind == "bad_magic" else offs[k]
        assert outcome == ("error", kind, at), kind
        assert len(native) == (0 if kind == "bad_magic" else 2)
        assert (native, outcome) == read_reference(bytes(data))
    # truncated last block
    native, outcome, cap = _both_ways(tmp_path, full[:offs[epbs[-1]] + 40])
    assert outcome == ("truncated", offs[epbs[-1]]) and len(native) == len(epbs) - 1
    assert "truncated last block" in str(cap.warnings[0])
    # a packet before any interface is defined
    data = cb.shb() + cb.epb(0, 0, b"x" * 20)
    assert read_bytes_native(tmp_path, data)[1] == ("error", "bad_iface", len(cb.shb()))


# --- random input (Hypothesis) ----------------------------------------------------------

HSET = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def pcap_files(draw):
    big = draw(st.booleans())
    nsec = draw(st.booleans())
    snaplen = draw(st.sampled_from([0, 96, 65535, 262144, 0xFFFFFFFF]))
    out = [cb.pcap_header(big, nsec, snaplen, draw(st.integers(0, 0xFFFFFFFF)))]
    o = ">" if big else "<"
    for _ in range(draw(st.integers(0, 12))):
        n = draw(st.integers(0, 300))
        how = draw(st.sampled_from(["good"] * 6 + ["any", "near"]))
        caplen = {"good": n, "any": draw(st.integers(0, 0xFFFFFFFF)),
                  "near": draw(st.integers(0, 400))}[how]
        wirelen = draw(st.one_of(st.just(n), st.integers(n, 0xFFFF), st.integers(0, 0xFFFFFFFF)))
        out.append(struct.pack(o + "IIII", draw(st.integers(0, 0xFFFFFFFF)),
                               draw(st.integers(0, 0xFFFFFFFF)), caplen, wirelen))
        out.append(draw(st.binary(min_size=n, max_size=n)))
    data = b"".join(out)
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


@st.composite
def pcapng_files(draw):
    big = draw(st.booleans())
    out = [cb.shb(big)]
    nif = 0
    kinds = ["shb", "idb", "idb", "epb", "epb", "epb", "epb", "spb", "pb", "other", "junk"]
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(kinds))
        if kind == "shb":
            big = draw(st.booleans())
            out.append(cb.shb(big))
            nif = 0
            continue
        if kind == "idb" or (nif == 0 and kind in ("epb", "pb", "spb") and draw(st.integers(0, 5))):
            tsresol = draw(st.sampled_from([None, 0, 3, 6, 9, 0x80 | 10, 0x80 | 40, "any"]))
            if tsresol == "any":
                tsresol = draw(st.integers(0, 255))
            out.append(cb.idb(draw(st.integers(0, 300)), draw(st.integers(0, 200)), tsresol,
                              draw(st.one_of(st.none(), st.integers(-2**40, 2**40))), big))
            nif += 1
            if kind == "idb":
                continue
        if kind in ("epb", "pb"):
            frame = draw(st.binary(max_size=120))
            fn = cb.epb if kind == "epb" else cb.old_pb
            ifid = draw(st.integers(0, nif - 1)) if nif and draw(st.integers(0, 5)) else nif
            out.append(fn(ifid, draw(st.integers(0, 2**64 - 1)), frame,
                          draw(st.integers(0, 2000)), big))
        elif kind == "spb":
            out.append(cb.spb(draw(st.binary(max_size=120)), draw(st.integers(0, 300)), big))
        elif kind == "other":
            out.append(cb.block(draw(st.sampled_from([4, 5, 10, 0xBAD, 0x40000BAD])),
                                draw(st.binary(max_size=40)), big))
        else:
            out.append(draw(st.binary(max_size=40)))
    data = bytearray(b"".join(out))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):          # flip some bytes
        if data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


def _check_random(tmp_path, data, chunk, batch):
    ref, ref_outcome = read_reference(data)
    p = tmp_path / "h"
    p.write_bytes(data)
    try:
        native, outcome, _ = read_native(p, batch_packets=batch)
    except CaptureError as exc:      # raised by open_capture itself: header problems
        assert ref_outcome is not None and ref_outcome[0] == "error"
        assert (exc.kind, exc.offset) == ref_outcome[1:]
        return
    assert outcome == ref_outcome
    assert native == ref
    # the streaming path (gzip, tiny chunks) gives the same records and outcome
    g = tmp_path / "h.gz"
    g.write_bytes(gzip.compress(data, 1))
    native2, outcome2, _ = read_native(g, batch_packets=batch, chunk_size=chunk)
    assert (native2, outcome2) == (native, outcome)


@pytest.mark.timeout(120)
@HSET
@given(data=pcap_files(), chunk=st.integers(64, 600), batch=st.integers(1, 9))
def test_random_pcap_never_crashes_and_matches_reference(tmp_path, data, chunk, batch):
    _check_random(tmp_path, data, chunk, batch)


@pytest.mark.timeout(120)
@HSET
@given(data=pcapng_files(), chunk=st.integers(64, 600), batch=st.integers(1, 9))
def test_random_pcapng_never_crashes_and_matches_reference(tmp_path, data, chunk, batch):
    _check_random(tmp_path, data, chunk, batch)


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a", b""]))
def test_random_bytes_never_crash(tmp_path, tail, magic):
    data = magic + tail
    assume(data[:2] != b"\x1f\x8b")       # gzip: decompressed first (not the reference's job)
    ref, ref_outcome = read_reference(data)
    p = tmp_path / "r"
    p.write_bytes(data)
    try:
        native, outcome, _ = read_native(p)
    except CaptureError as exc:
        assert ref_outcome == ("error", exc.kind, exc.offset)
        return
    assert (native, outcome) == (ref, ref_outcome)


def test_walker_rejects_bad_arguments():
    w = _core.RecordWalker()
    with pytest.raises(ValueError):
        w.walk(b"\0" * 32, 0, np.empty(4, _core.REC_DTYPE))          # not configured
    w.set_pcap(False, False, 16, 1, 0)
    with pytest.raises(ValueError):
        w.walk(b"\0" * 32, 0, np.empty(4, np.uint8))
    with pytest.raises(ValueError):
        w.walk(b"\0" * 32, 40, np.empty(4, _core.REC_DTYPE))
    n, status = w.walk(b"", 0, np.empty(4, _core.REC_DTYPE))
    assert (n, status) == (0, _core.WALK_STATUS["end"])


# --- no read past the end of the buffer -----------------------------------------------

def _guarded(data):
    """A read-only numpy view of `data` whose last byte is followed by an unmapped
    (PROT_NONE) page: any read past the end faults."""
    import ctypes
    import mmap as _mmap
    page = _mmap.PAGESIZE
    npages = (len(data) + page - 1) // page + 1
    region = _mmap.mmap(-1, npages * page)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    start = (npages - 1) * page - len(data)
    region[start:start + len(data)] = data
    assert libc.mprotect(base + (npages - 1) * page, page, 0) == 0      # PROT_NONE
    arr = np.frombuffer(region, dtype=np.uint8)[start:start + len(data)]
    return arr, region


@pytest.mark.parametrize("name", ["zeek__pcapng-multi-interface.pcapng", "ndpi__quic-v2.pcapng",
                                  "ndpi__pptp.pcap", "arkime__bigendian.pcap"])
def test_walkers_never_read_past_the_buffer(corpus_dir, name):
    data = (corpus_dir / name).read_bytes()[:20000]
    ng = data[:4] == b"\x0a\x0d\x0d\x0a"
    recs = np.empty(64, _core.REC_DTYPE)
    keep = []
    for cut in sorted(set(range(0, min(len(data), 400))) | set(range(0, len(data), 97))):
        arr, region = _guarded(data[:cut])
        w = _core.RecordWalker()
        if ng:
            w.set_pcapng()
            pos = 0
        else:
            big = data[:4] == b"\xa1\xb2\xc3\xd4"
            w.set_pcap(big, False, 16, 1, 65535)
            pos = min(24, cut)
        for at_eof in (False, True):
            p = pos
            while True:
                n, status = w.walk(arr, p, recs, p, at_eof)
                p = w.pos
                if status != _core.WALK_STATUS["full"]:
                    break
        keep.append(region)          # unmapped at the end: views may still exist
    del keep
