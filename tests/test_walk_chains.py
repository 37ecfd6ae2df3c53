"""The classic-pcap walker's chains (nkr_mc_window, source_pcap.pxi) against the
sequential walk, record for record.

A mapped file's records may be walked ahead by chains over regions of the file whose
first records are guessed; a guess counts only when the chain before lands exactly
on it, and anything else goes back to the sequential walk.  So every walk below must
give the sequential walk's records, statuses, error offsets and totals exactly --
over files built so that the guesses go wrong: payloads full of header look-alikes,
records too long for a region's scan, a damaged length in a later region, a cut
file -- and the chains must really have run (RecordWalker.chained), or the test
proves nothing.  The files are a few windows long (a window is 4 MiB).
"""
import mmap
import random
import struct

import numpy as np
import pytest

from nkstream import _core
from nkstream.capture import open_capture

PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
T0 = 1_767_225_600


def _frame(rng, size, fill):
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size - 14, 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([192, 0, 2, rng.randrange(256)]))
    udp = struct.pack("!HHHH", 40000, 443, size - 34, 0)
    body = fill(size - 42)
    return (eth + ip + udp + body)[:size]


def write_pcap(path, sizes, fill=None, seed=0, damage_at=None, cut=0):
    """A pcap of len(sizes) records of those frame sizes; `fill(n)` gives payload
    bytes (default random); the record at index damage_at gets an impossible
    captured length; `cut` bytes are dropped from the end.  Returns the records'
    header offsets."""
    rng = random.Random(seed)
    fill = fill or (lambda n: rng.randbytes(n))
    parts, offs, pos = [PCAP_HDR], [], 24
    for i, size in enumerate(sizes):
        frame = _frame(rng, size, fill)
        caplen = 300000 if i == damage_at else len(frame)
        parts.append(struct.pack("<IIII", T0 + i // 1000, (i * 997) % 1000000, caplen,
                                 len(frame)))
        parts.append(frame)
        offs.append(pos)
        pos += 16 + len(frame)
    blob = b"".join(parts)
    if cut:
        blob = blob[:-cut]
    path.write_bytes(blob)
    return offs


def walk(path, chains, batch):
    """Every walk() result over the mapped file: (records, [(n, status, pos)],
    err_off, err_val, totals, chained)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            w = _core.RecordWalker()
            w.set_pcap(False, False, 16, 1, 262144)
            w.chains = chains
            recs = np.zeros(batch, _core.REC_DTYPE)
            got, calls, pos = [], [], 24
            while True:
                n, status = w.walk(buf, pos, recs, pos, True)
                r = recs[:n].copy()
                r["off"] += pos                 # absolute, to compare across batches
                got.append(r)
                calls.append((n, status, w.pos))
                pos = w.pos
                if status != _core.WALK_STATUS["full"]:
                    break
            return (np.concatenate(got), calls, w.err_off, w.err_val,
                    (w.packets, w.wirebytes, w.capbytes), w.chained)
        finally:
            buf.release()


def same_as_sequential(path, batch=16384):
    seq = walk(path, False, batch)
    chn = walk(path, True, batch)
    assert seq[5] == 0
    assert np.array_equal(seq[0], chn[0])
    assert seq[1:5] == chn[1:5]
    return seq, chn[5]


def mixed_sizes(n, seed=0):
    rng = random.Random(seed)
    return [rng.choice([64, 90, 576, 1200, 1514, 1514, 1514]) for _ in range(n)]


@pytest.mark.parametrize("batch", [1024, 16384])
def test_chains_give_the_sequential_records(tmp_path, batch):
    p = tmp_path / "mixed.pcap"
    write_pcap(p, mixed_sizes(30000))                 # ~28 MB: several windows
    seq, chained = same_as_sequential(p, batch)
    assert len(seq[0]) == 30000
    assert chained > 20000                            # the chains did the walking


def test_payloads_of_header_look_alikes(tmp_path):
    # Every payload is made of plausible record headers (the file's own time, sane
    # lengths): region starts are guessed wrong, and must be caught.
    def lookalikes(n):
        one = struct.pack("<IIII", T0 + 5, 1234, 100, 100)
        return (one * (n // 16 + 1))[:n]
    p = tmp_path / "lookalike.pcap"
    write_pcap(p, mixed_sizes(20000, seed=1), fill=lookalikes)
    seq, chained = same_as_sequential(p)
    assert len(seq[0]) == 20000
    assert chained > 0


def test_records_longer_than_a_region_scan(tmp_path):
    # jumbo frames: many regions have no record start in their first 2 KiB
    rng = random.Random(2)
    sizes = [rng.choice([9000, 9000, 1514, 64]) for _ in range(6000)]
    p = tmp_path / "jumbo.pcap"
    write_pcap(p, sizes)
    seq, chained = same_as_sequential(p)
    assert len(seq[0]) == 6000
    assert chained > 0


def test_damaged_length_in_a_later_region(tmp_path):
    p = tmp_path / "damaged.pcap"
    offs = write_pcap(p, mixed_sizes(20000, seed=3), damage_at=15000)
    seq, chained = same_as_sequential(p)
    assert len(seq[0]) == 15000
    assert seq[1][-1][1] == _core.WALK_STATUS["caplen_too_big"]
    assert seq[2] == offs[15000]                      # err_off: the damaged header
    assert chained > 0


def test_cut_file(tmp_path):
    p = tmp_path / "cut.pcap"
    write_pcap(p, mixed_sizes(20000, seed=4), cut=700)
    seq, chained = same_as_sequential(p)
    assert seq[1][-1][1] == _core.WALK_STATUS["truncated"]
    assert chained > 0


def test_small_records_stay_sequential(tmp_path):
    # 100-byte records: every line holds headers, the chains would not pay
    p = tmp_path / "small.pcap"
    write_pcap(p, [84] * 60000)
    seq, chained = same_as_sequential(p)
    assert len(seq[0]) == 60000
    assert chained == 0


def test_reader_uses_chains_and_reads_every_record(tmp_path):
    p = tmp_path / "reader.pcap"
    sizes = mixed_sizes(30000, seed=5)
    write_pcap(p, sizes)
    seq = walk(p, False, 16384)[0]
    with open_capture(str(p)) as cap:
        got = [b.recs[["ts_ns", "caplen", "wirelen"]].copy() for b in cap]
        assert cap._walker.chained > 20000
    got = np.concatenate(got)
    assert np.array_equal(got, seq[["ts_ns", "caplen", "wirelen"]])
