"""A plain-Python pcap / pcapng reader for tests: builds a (data, recs) batch.

Deliberately independent of nkstream's native readers (written with `struct` from
the format specifications), so the decoder tests do not depend on them and the
reader tests can use this as a reference:
- pcap: https://www.tcpdump.org/manpages/pcap-savefile.5.html (both byte orders,
  microsecond magic 0xa1b2c3d4 and nanosecond magic 0xa1b23c4d);
- pcapng: draft-ietf-opsawg-pcapng (SHB in either byte order per section, IDB with
  per-interface link type and if_tsresol, EPB, SPB, obsolete PB; other blocks skipped).
"""
import struct

import numpy as np

from nkstream._core import REC_DTYPE

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = 0x0A0D0D0A


def read_packets(path):
    """[(ts_ns, linktype, wirelen, frame bytes)] of every packet in the file."""
    with open(path, "rb") as fh:
        blob = fh.read()
    if blob[:4] in PCAP_MAGICS:
        return list(_pcap(blob))
    if len(blob) >= 4 and struct.unpack("<I", blob[:4])[0] == PCAPNG_SHB:
        return list(_pcapng(blob))
    raise ValueError("%s: not a pcap or pcapng file (magic %s)" % (path, blob[:4].hex()))


def _pcap(blob):
    e, ns_per_frac = PCAP_MAGICS[blob[:4]]
    linktype = struct.unpack(e + "I", blob[20:24])[0] & 0x0FFFFFFF  # high bits: FCS info
    off = 24
    while off + 16 <= len(blob):
        sec, frac, incl, orig = struct.unpack(e + "IIII", blob[off:off + 16])
        off += 16
        if off + incl > len(blob):
            break                                   # truncated last record
        yield sec * 10**9 + frac * ns_per_frac, linktype, orig, blob[off:off + incl]
        off += incl


def _tsresol(value):
    v = value[0]
    return 10 ** -(v & 0x7F) if not v & 0x80 else 2 ** -(v & 0x7F)


def _pcapng(blob):
    off = 0
    e = "<"
    ifaces = []                                     # (linktype, seconds per ts unit)
    while off + 12 <= len(blob):
        btype = struct.unpack(e + "I", blob[off:off + 4])[0]
        if blob[off:off + 4] == b"\x0a\x0d\x0d\x0a":  # SHB: byte order from its magic
            bom = blob[off + 8:off + 12]
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            btype = PCAPNG_SHB
            ifaces = []
        blen = struct.unpack(e + "I", blob[off + 4:off + 8])[0]
        if blen < 12 or off + blen > len(blob):
            break
        body = blob[off + 8:off + blen - 4]
        if btype == 1:                              # IDB
            lt, _res, _snap = struct.unpack(e + "HHI", body[:8])
            resol = 1e-6
            o = 8
            while o + 4 <= len(body):
                code, olen = struct.unpack(e + "HH", body[o:o + 4])
                if code == 0:
                    break
                if code == 9:
                    resol = _tsresol(body[o + 4:o + 4 + olen])
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((lt, resol))
        elif btype == 6:                            # EPB
            iid, hi, lo, cap, orig = struct.unpack(e + "IIIII", body[:20])
            lt, resol = ifaces[iid]
            yield int(((hi << 32) | lo) * resol * 1e9), lt, orig, body[20:20 + cap]
        elif btype == 3:                            # SPB: interface 0, no timestamp
            orig = struct.unpack(e + "I", body[:4])[0]
            lt, _ = ifaces[0]
            yield 0, lt, orig, body[4:4 + min(orig, len(body) - 4)]
        elif btype == 2:                            # obsolete Packet Block
            iid, _drops, hi, lo, cap, orig = struct.unpack(e + "HHIIII", body[:20])
            lt, resol = ifaces[iid]
            yield int(((hi << 32) | lo) * resol * 1e9), lt, orig, body[20:20 + cap]
        off += blen


def batch(packets):
    """(data, recs) for a list of (ts_ns, linktype, wirelen, frame)."""
    recs = np.zeros(len(packets), dtype=REC_DTYPE)
    data = bytearray()
    for i, (ts, lt, orig, frame) in enumerate(packets):
        recs[i]["ts_ns"] = ts
        recs[i]["off"] = len(data)
        recs[i]["caplen"] = len(frame)
        recs[i]["wirelen"] = orig
        recs[i]["linktype"] = lt
        data += frame
    return np.frombuffer(bytes(data), dtype=np.uint8), recs


def read_batch(path):
    return batch(read_packets(path))
