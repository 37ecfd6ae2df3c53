"""Hypothesis: the decoder never crashes, its counts add up, a cut packet never
reports a field it could not have read, and it agrees with the pure-Python reference
(nkstream/reference_decode.py) on random and real packets."""
import ctypes
import functools
import mmap
import pathlib
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_captures
from frames import eth, ipv4, ipv6, tcp, udp
from nkstream import _core, reference_decode
from nkstream._core import ERROR_NAMES, REC_DTYPE, decode_columns, decode_one
from pcapfile import read_packets
from test_decode_fixtures import CASES

LINKTYPES = [0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 192, 228, 229, 239, 276, 147]
KEYS = ["error", "ipver", "proto", "flags", "vlan", "nvlan", "sport", "dport", "src", "dst",
        "tcp_flags", "gre_ver", "gre_ptype", "gre_key", "spi", "l3_off", "l4_off", "l4_len"]
PF = _core.DECODE_FLAGS
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=1)
def corpus_packets():
    """(linktype, frame) of a fixed random sample of every corpus capture's packets."""
    rng = random.Random(1)
    out = []
    for path in corpus_captures():
        pkts = read_packets(path)
        for _ts, lt, _wl, frame in rng.sample(pkts, min(len(pkts), 40)):
            out.append((lt, frame))
    assert len(out) > 1000
    return out


def native(frame, lt):
    d = decode_one(bytes(frame), lt)
    return {k: d[k] for k in KEYS}


def reference(frame, lt):
    d = reference_decode.decode(frame, lt)
    return {k: d[k] for k in KEYS}


# Frames that start with a plausible header stack, then random bytes: random data
# alone rarely gets past L2, these reach the IP and transport decoders.
PREFIXES = [
    (1, eth(0x0800, b"")), (1, eth(0x86DD, b"")), (1, eth(0x8100, b"")), (1, eth(0x8864, b"")),
    (1, eth(0x0800, ipv4(6, b"", tot=0)[:20])), (1, eth(0x0800, ipv4(17, b"", tot=0)[:20])),
    (101, ipv4(47, b"", tot=0)[:20]), (101, ipv4(50, b"", tot=0)[:20]),
    (101, ipv4(51, b"", tot=0)[:20]), (1, eth(0x8100, b"", [(0x8100, 1)] * 6)),
    (1, eth(0x8100, b"", [(0x88a8, 1)] * 7)), (229, ipv6(60, b"\x3c\x00" + b"\x00" * 6 * 6, plen=0)),
    (229, ipv6(0, b"", plen=0)), (229, ipv6(44, b"", plen=0)), (229, ipv6(51, b"", plen=0)),
    (229, ipv6(43, b"", plen=0)), (101, b"\x45"), (101, b"\x60"), (113, b"\x00" * 14 + b"\x08\x00"),
    (276, b"\x86\xdd" + b"\x00" * 18), (0, b"\x02\x00\x00\x00"), (0, b"\x00\x00\x00\x18"),
    (192, b"\x00\x00\x08\x00\x01\x00\x00\x00"), (239, b"\x02\x00\x00\x00"),
]


@SETTINGS
@given(lt=st.sampled_from(LINKTYPES), data=st.binary(max_size=200))
def test_random_bytes_match_reference(lt, data):
    assert native(data, lt) == reference(data, lt)


@SETTINGS
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=120))
def test_random_headers_match_reference(prefix, tail):
    lt, head = prefix
    got = native(head + tail, lt)
    assert got == reference(head + tail, lt)
    # the flow loop reads tcp_flags without testing the protocol (pipeline.pxi)
    assert got["tcp_flags"] == 0 or got["proto"] == 6


FIXTURES = sorted((name, lt, frame) for name, (lt, frame, _w) in CASES.items())


@SETTINGS
@given(case=st.sampled_from(FIXTURES),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       cut=st.floats(0, 1))
def test_mutated_fixtures_match_reference(case, edits, cut):
    """Every hand-built header case with a few bytes overwritten, then cut."""
    _name, lt, frame = case
    frame = bytearray(frame)
    for pos, val in edits:
        frame[pos % len(frame)] = val
    frame = bytes(frame[:int(len(frame) * cut) + 1])
    assert native(frame, lt) == reference(frame, lt)


@SETTINGS
@given(idx=st.integers(0, 10**9), cut=st.floats(0, 1))
def test_real_packets_match_reference_and_cuts_stay_in_bounds(idx, cut):
    pkts = corpus_packets()
    lt, frame = pkts[idx % len(pkts)]
    full = native(frame, lt)
    assert full == reference(frame, lt)
    keep = int(len(frame) * cut)
    part = native(frame[:keep], lt)
    assert part == reference(frame[:keep], lt)
    # A field reported valid in the cut packet was read from bytes the cut kept,
    # so it equals the full packet's value.
    fl = part["flags"]
    if fl & PF["PF_IP"]:
        assert (part["src"], part["dst"], part["ipver"]) == (full["src"], full["dst"],
                                                            full["ipver"])
        assert part["l3_off"] + (20 if part["ipver"] == 4 else 40) <= keep
    if fl & PF["PF_PROTO"]:
        assert part["proto"] == full["proto"]
    if fl & PF["PF_PORTS"]:
        assert (part["sport"], part["dport"]) == (full["sport"], full["dport"])
    if fl & PF["PF_SPI"]:
        assert part["spi"] == full["spi"]
    if fl & PF["PF_GRE"]:
        assert (part["gre_ver"], part["gre_ptype"]) == (full["gre_ver"], full["gre_ptype"])
    if fl & PF["PF_PAYLOAD"]:
        assert part["l4_off"] + part["l4_len"] <= keep
    assert part["vlan"] == full["vlan"][:len(part["vlan"])]


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=120)),
                       max_size=60),
       real=st.lists(st.integers(0, 10**9), max_size=40))
def test_batch_counts_add_up(frames, real):
    pkts = corpus_packets()
    frames = frames + [pkts[i % len(pkts)] for i in real]
    data = b"".join(f for _lt, f in frames)
    recs = np.zeros(len(frames), REC_DTYPE)
    off = 0
    for i, (lt, f) in enumerate(frames):
        recs[i]["off"], recs[i]["caplen"], recs[i]["linktype"] = off, len(f), lt
        off += len(f)
    cols = decode_columns(np.frombuffer(data, np.uint8), recs)
    counts = _core.error_counts(cols["error"])
    assert sum(counts.values()) == len(frames)
    assert all(name in ERROR_NAMES for name in counts)
    for i, (lt, f) in enumerate(frames):
        assert ERROR_NAMES[cols["error"][i]] == reference(f, lt)["error"]


def test_whole_corpus_counts_add_up():
    """decoded + every named reason = packets, for every capture in the corpus."""
    total = 0
    for path in corpus_captures():
        pkts = read_packets(path)
        data = b"".join(f for *_x, f in pkts)
        recs = np.zeros(len(pkts), REC_DTYPE)
        off = 0
        for i, (_ts, lt, _wl, f) in enumerate(pkts):
            recs[i]["off"], recs[i]["caplen"], recs[i]["linktype"] = off, len(f), lt
            off += len(f)
        counts = _core.error_counts(decode_columns(np.frombuffer(data, np.uint8),
                                                   recs)["error"])
        assert sum(counts.values()) == len(pkts), path.name
        total += len(pkts)
    assert total > 20000


class GuardedFrame:
    """A page whose end touches a PROT_NONE page: a frame copied to the end of the
    first page makes any read past its caplen a SIGSEGV, not a silent overread."""

    def __init__(self):
        page = 1 << 18                 # room for the largest capture record (256 KiB)
        self.page = page
        self.m = mmap.mmap(-1, page + mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.m))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(addr + page, mmap.PAGESIZE, 0) != 0:       # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")
        self.view = np.frombuffer(self.m, np.uint8, count=page)

    def decode(self, frame, lt):
        off = self.page - len(frame)
        self.m[off:self.page] = frame
        recs = np.zeros(1, REC_DTYPE)
        recs[0]["off"], recs[0]["caplen"], recs[0]["linktype"] = off, len(frame), lt
        return decode_columns(self.view, recs)


@functools.lru_cache(maxsize=1)
def guard():
    return GuardedFrame()


def test_no_read_past_caplen_fixtures():
    g = guard()
    n = 0
    for _name, lt, frame in FIXTURES:
        for keep in range(len(frame) + 1):
            cols = g.decode(frame[:keep], lt)
            assert ERROR_NAMES[cols["error"][0]] == reference(frame[:keep], lt)["error"]
            n += 1
    assert n > 4000


@SETTINGS
@given(idx=st.integers(0, 10**9), cut=st.floats(0, 1))
def test_no_read_past_caplen_real_packets(idx, cut):
    pkts = corpus_packets()
    lt, frame = pkts[idx % len(pkts)]
    frame = frame[:int(len(frame) * cut)]
    cols = guard().decode(frame, lt)
    assert ERROR_NAMES[cols["error"][0]] == reference(frame, lt)["error"]


def test_guard_page_is_armed():
    """The guard really faults: read its first byte in a child process."""
    import os
    import subprocess
    import sys
    code = ("import ctypes, test_decode_fuzz as t; g = t.guard();"
            "ctypes.string_at(ctypes.addressof(ctypes.c_char.from_buffer(g.m)) + g.page, 1)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                         cwd=str(pathlib.Path(__file__).parent), env=env)
    assert res.returncode == -11, res.stderr.decode()[-500:]


def test_common_frames_every_header_byte_and_cut_match_reference():
    """The frames most traffic is made of (Ethernet, at most one 802.1Q tag, IPv4,
    TCP or UDP) against the reference, with every header byte set to values that
    cross each check on the way (EtherType, a second tag, version, IHL, total
    length, fragment bits, protocol, TCP data offset) and the frame cut at every
    length."""
    bases = []
    for tags in ((), ((0x8100, 5),)):
        bases.append(eth(0x0800, ipv4(6, tcp(443, 51000, payload=b"\x16\x03\x01" + b"x" * 20)), list(tags)))
        bases.append(eth(0x0800, ipv4(17, udp(53, 40000, payload=b"q" * 12)), list(tags)))
        bases.append(eth(0x0800, ipv4(6, tcp(80, 1234, doff=6, options=b"\x01" * 4)), list(tags)))
    values = (0x00, 0x01, 0x06, 0x11, 0x20, 0x3F, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x81, 0x88,
              0xA8, 0xF0, 0xFF)
    checked = 0
    tried = []
    for frame in bases:
        for pos in range(min(len(frame), 64)):
            for v in values:
                f = bytearray(frame)
                f[pos] = v
                f = bytes(f)
                assert native(f, 1) == reference(f, 1), (frame.hex(), pos, v)
                tried.append(f)
                checked += 1
        for cut in range(len(frame) + 1):
            assert native(frame[:cut], 1) == reference(frame[:cut], 1), (frame.hex(), cut)
            tried.append(frame[:cut])
    assert checked > 5000
    _batch_equals_one_by_one(tried)


def _batch_equals_one_by_one(frames):
    """decode_columns() -- decode_record(), the pipeline's entry, which takes the
    common frame straight through without decode_packet() -- gives every field
    decode_one() gives, with a corpus packet (GRE, ESP, IPv6, fragments...) decoded
    before each frame into the same struct, so a field the straight path forgot to
    clear would show the previous packet's value."""
    pkts = [f for lt, f in corpus_packets() if lt == 1]
    seq = []
    for i, f in enumerate(frames):
        seq.append(pkts[i % len(pkts)])
        seq.append(f)
    data = b"".join(seq)
    recs = np.zeros(len(seq), REC_DTYPE)
    off = 0
    for i, f in enumerate(seq):
        recs[i]["off"], recs[i]["caplen"], recs[i]["linktype"] = off, len(f), 1
        off += len(f)
    cols = decode_columns(np.frombuffer(data, np.uint8), recs)
    for i, f in enumerate(seq):
        d = decode_one(f, 1)
        got = {k: int(cols[k][i]) for k in ("ipver", "proto", "flags", "nvlan", "sport", "dport",
                                             "tcp_flags", "gre_ver", "gre_ptype", "gre_key",
                                             "spi", "l4_off", "l4_len", "frag_id")}
        got["error_id"] = int(cols["error"][i])
        got["src_bytes"], got["dst_bytes"] = bytes(cols["src"][i]), bytes(cols["dst"][i])
        vl = [int(v) for v in cols["vlan"][i]]
        assert vl[len(d["vlan"]):] == [0] * (len(vl) - len(d["vlan"])), (f.hex(), vl)
        got["vlan"] = vl[:len(d["vlan"])]
        assert got == {k: d[k] for k in got}, f.hex()
