"""Slow, obviously correct pure-Python capture reader (the tests' reference).

Reads a whole pcap / pcapng file held in memory with ``struct``, one record at a
time, following the same formats and the same damage policy as the native walkers
(nkstream/core/source_pcap.pxi and nkstream/capture.py), so the two can be compared
on real files and on random bytes.  Not for production use: it makes several Python
objects per packet.

``read_reference(data) -> (records, outcome)``: ``records`` is a list of
``RefRecord(ts_ns, caplen, wirelen, linktype, iface, frame)``; ``outcome`` is None
(clean end), ``("truncated", offset)`` or ``("error", kind, offset)`` with ``kind`` one
of the names in ``nkstream._core.WALK_STATUS``.
"""
import struct
from typing import NamedTuple

MAX_CAPLEN = 262144
MAX_BLOCK = 16 * 1024 * 1024
PCAPNG_OPT_SLACK = 65536
NONPKT_TRUNC_MAX = 1 << 20

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1000, 24),
    b"\xa1\xb2\xcd\x34": (">", 1000, 24),
}


class RefRecord(NamedTuple):
    ts_ns: int
    caplen: int
    wirelen: int
    linktype: int
    iface: int
    frame: bytes


class _Stop(Exception):
    def __init__(self, outcome):
        self.outcome = outcome


def _err(kind, off):
    raise _Stop(("error", kind, off))


def read_reference(data):
    data = bytes(data)
    recs = []
    try:
        if len(data) == 0:
            _err("empty", 0)
        magic = data[:4]
        if magic in PCAP_MAGICS:
            _read_pcap(data, recs)
        elif magic == b"\x0a\x0d\x0d\x0a":
            _read_pcapng(data, recs)
        else:
            _err("bad_file_magic", 0)
    except _Stop as stop:
        return recs, stop.outcome
    return recs, None


def _read_pcap(data, recs):
    order, tsmul, hdrlen = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        _err("short_header", 0)
    major, minor, zone, sigfigs, snaplen, network = struct.unpack(order + "HHiIII", data[4:24])
    if major != 2:
        _err("pcap_version", 4)
    linktype = network & 0xFFFF
    pos = 24
    while pos < len(data):
        left = len(data) - pos
        if left < hdrlen:
            raise _Stop(("truncated", pos))
        sec, frac, caplen, wirelen = struct.unpack(order + "IIII", data[pos:pos + 16])
        if caplen > MAX_CAPLEN:
            _err("caplen_too_big", pos)
        if left - hdrlen < caplen:
            consistent = caplen <= wirelen and (snaplen == 0 or snaplen > MAX_CAPLEN or caplen <= snaplen)
            if consistent:
                raise _Stop(("truncated", pos))
            _err("beyond_eof", pos)
        frame = data[pos + hdrlen:pos + hdrlen + caplen]
        recs.append(RefRecord(sec * 10**9 + frac * tsmul, caplen, wirelen, linktype, 0, frame))
        pos += hdrlen + caplen


def _tick_ns(tsresol, offset_s, ticks):
    if tsresol & 0x80:
        units = 2 ** (tsresol & 0x7F)
    else:
        units = 10 ** tsresol
    # Exact rational arithmetic for powers of 10 and small powers of 2; large powers of
    # 2 round the fraction the way the native code does (binary64).
    sec, frac = divmod(ticks, units)
    if tsresol & 0x80 and (tsresol & 0x7F) > 33:
        fns = int((float(frac) * 1e9) / float(units))
    else:
        fns = frac * 10**9 // units
    ns = sec * 10**9 + fns + offset_s * 10**9
    # int64 wrap, as the native code stores it
    ns &= (1 << 64) - 1
    return ns - (1 << 64) if ns >= 1 << 63 else ns


def _read_pcapng(data, recs):
    pos = 0
    order = None
    ifaces = []         # current section: (linktype, snaplen, tsresol, offset_s, global index)
    nglobal = 0
    while pos < len(data):
        left = len(data) - pos
        if left < 12:
            raise _Stop(("truncated", pos))
        head = data[pos:pos + 4]
        if head == b"\x0a\x0d\x0d\x0a":
            bom = data[pos + 8:pos + 12]
            if bom == b"\x1a\x2b\x3c\x4d":
                sorder = ">"
            elif bom == b"\x4d\x3c\x2b\x1a":
                sorder = "<"
            else:
                _err("bad_magic", pos)
            (blen,) = struct.unpack(sorder + "I", data[pos + 4:pos + 8])
            _check_len(blen, 28, pos)
            if left < blen:
                _eof_nonpacket(blen, pos)
            _check_trailer(data, pos, blen, sorder)
            (major,) = struct.unpack(sorder + "H", data[pos + 12:pos + 14])
            if major != 1:
                _err("version", pos)
            order = sorder
            ifaces = []
            pos += blen
            continue
        if order is None:
            _err("not_shb", pos)
        btype, blen = struct.unpack(order + "II", data[pos:pos + 8])
        if btype in (6, 2):
            _check_len(blen, 32, pos)
            if left < 28:
                raise _Stop(("truncated", pos))
            if btype == 6:
                ifid, tsh, tsl, caplen, origlen = struct.unpack(order + "IIIII", data[pos + 8:pos + 28])
            else:
                ifid, _drops, tsh, tsl, caplen, origlen = struct.unpack(order + "HHIIII", data[pos + 8:pos + 28])
            if caplen > MAX_CAPLEN:
                _err("caplen_too_big", pos)
            if caplen > blen - 32:
                _err("caplen_block", pos)
            if ifid >= len(ifaces):
                _err("bad_iface", pos)
            if left < blen:
                if blen <= 32 + (caplen + 3) // 4 * 4 + PCAPNG_OPT_SLACK and caplen <= origlen:
                    raise _Stop(("truncated", pos))
                _err("beyond_eof", pos)
            _check_trailer(data, pos, blen, order)
            lt, snap, tsresol, off_s, gidx = ifaces[ifid]
            ts = _tick_ns(tsresol, off_s, (tsh << 32) | tsl)
            recs.append(RefRecord(ts, caplen, origlen, lt, gidx, data[pos + 28:pos + 28 + caplen]))
        elif btype == 3:
            _check_len(blen, 16, pos)
            if not ifaces:
                _err("bad_iface", pos)
            (origlen,) = struct.unpack(order + "I", data[pos + 8:pos + 12])
            lt, snap, tsresol, off_s, gidx = ifaces[0]
            caplen = min(origlen, blen - 16, snap if snap else origlen)
            if caplen > MAX_CAPLEN:
                _err("caplen_too_big", pos)
            if left < blen:
                raise _Stop(("truncated", pos))
            _check_trailer(data, pos, blen, order)
            recs.append(RefRecord(0, caplen, origlen, lt, gidx, data[pos + 12:pos + 12 + caplen]))
        else:
            _check_len(blen, 20 if btype == 1 else 12, pos)
            if left < blen:
                _eof_nonpacket(blen, pos)
            _check_trailer(data, pos, blen, order)
            if btype == 1:
                if nglobal >= 65535:
                    _err("too_many_ifaces", pos)
                lt, _res, snap = struct.unpack(order + "HHI", data[pos + 8:pos + 16])
                tsresol, off_s = 6, 0
                opt, end = pos + 16, pos + blen - 4
                while opt + 4 <= end:
                    code, olen = struct.unpack(order + "HH", data[opt:opt + 4])
                    if code == 0:
                        break
                    if opt + 4 + olen > end:
                        _err("option", pos)
                    if code == 9 and olen >= 1:
                        tsresol = data[opt + 4]
                    elif code == 14 and olen == 8:
                        (off_s,) = struct.unpack(order + "q", data[opt + 4:opt + 12])
                    opt += 4 + (olen + 3) // 4 * 4
                if (tsresol & 0x80 and tsresol & 0x7F >= 64) or (not tsresol & 0x80 and tsresol > 18):
                    _err("tsresol", pos)
                ifaces.append((lt, snap, tsresol, off_s, nglobal))
                nglobal += 1
        pos += blen


def _check_len(blen, minimum, pos):
    if blen % 4:
        _err("block_align", pos)
    if blen < minimum:
        _err("block_short", pos)
    if blen > MAX_BLOCK:
        _err("block_too_big", pos)


def _check_trailer(data, pos, blen, order):
    (trail,) = struct.unpack(order + "I", data[pos + blen - 4:pos + blen])
    if trail != blen:
        _err("block_trailer", pos)


def _eof_nonpacket(blen, pos):
    if blen <= NONPKT_TRUNC_MAX:
        raise _Stop(("truncated", pos))
    _err("beyond_eof", pos)
