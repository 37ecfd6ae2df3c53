"""Byte-level builders for capture-file tests: classic pcap and pcapng, written by
hand with struct so tests can make any variant (byte order, timestamp resolution,
damaged lengths) from real packets."""
import struct

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D


def pcap_header(big=False, nsec=False, snaplen=262144, linktype=1, major=2, minor=4):
    o = ">" if big else "<"
    return struct.pack(o + "IHHiIII", PCAP_MAGIC_NS if nsec else PCAP_MAGIC_US,
                       major, minor, 0, 0, snaplen, linktype)


def pcap_record(ts_ns, frame, wirelen=None, big=False, nsec=False, caplen=None):
    o = ">" if big else "<"
    sec, frac = divmod(ts_ns, 10**9)
    if not nsec:
        frac //= 1000
    caplen = len(frame) if caplen is None else caplen
    wirelen = len(frame) if wirelen is None else wirelen
    return struct.pack(o + "IIII", sec, frac, caplen, wirelen) + bytes(frame)


def write_pcap(records, big=False, nsec=False, snaplen=262144, linktype=1):
    """records: iterable of (ts_ns, frame bytes, wirelen)."""
    out = [pcap_header(big, nsec, snaplen, linktype)]
    for ts, frame, wirelen in records:
        out.append(pcap_record(ts, frame, wirelen, big, nsec))
    return b"".join(out)


def swap_pcap(data):
    """The same pcap file in the other byte order (header and record headers)."""
    magic = data[:4]
    src = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    dst = ">" if src == "<" else "<"
    fields = struct.unpack(src + "IHHiIII", data[:24])
    out = [struct.pack(dst + "IHHiIII", *fields)]
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack(src + "IIII", data[pos:pos + 16])
        out.append(struct.pack(dst + "IIII", sec, frac, caplen, wirelen))
        out.append(data[pos + 16:pos + 16 + caplen])
        pos += 16 + caplen
    out.append(data[pos:])
    return b"".join(out)


def pad4(b):
    return bytes(b) + b"\0" * (-len(b) % 4)


def block(btype, body, big=False):
    o = ">" if big else "<"
    body = pad4(body)
    n = len(body) + 12
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def option(code, value, big=False):
    o = ">" if big else "<"
    return struct.pack(o + "HH", code, len(value)) + pad4(value)


def shb(big=False, major=1, minor=0, options=b""):
    o = ">" if big else "<"
    body = struct.pack(o + "IHHq", 0x1A2B3C4D, major, minor, -1) + options
    return block(0x0A0D0D0A, body, big)


def idb(linktype=1, snaplen=0, tsresol=None, tsoffset=None, big=False, extra_options=b""):
    o = ">" if big else "<"
    opts = extra_options
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), big)
    if tsoffset is not None:
        opts += option(14, struct.pack(o + "q", tsoffset), big)
    if opts:
        opts += struct.pack(o + "HH", 0, 0)
    return block(1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts, big)


def epb(iface, ticks, frame, wirelen=None, big=False, options=b""):
    o = ">" if big else "<"
    wirelen = len(frame) if wirelen is None else wirelen
    body = struct.pack(o + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), wirelen)
    return block(6, body + pad4(frame) + options, big)


def old_pb(iface, ticks, frame, wirelen=None, big=False):
    o = ">" if big else "<"
    wirelen = len(frame) if wirelen is None else wirelen
    body = struct.pack(o + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), wirelen)
    return block(2, body + pad4(frame), big)


def spb(frame, origlen=None, big=False):
    o = ">" if big else "<"
    origlen = len(frame) if origlen is None else origlen
    return block(3, struct.pack(o + "I", origlen) + pad4(frame), big)


def pcapng_blocks(data):
    """Split a pcapng file into (btype, big, body) blocks (body without the length
    words), following each section's byte order."""
    pos = 0
    big = False
    out = []
    while pos < len(data):
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            big = data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d"
        o = ">" if big else "<"
        btype, blen = struct.unpack(o + "II", data[pos:pos + 8])
        out.append((btype, big, data[pos + 8:pos + blen - 4]))
        pos += blen
    return out


def swap_pcapng(data):
    """A pcapng file rewritten in the other byte order, section by section.  Keeps
    SHB, IDB (link type, snaplen, if_tsresol, if_tsoffset), EPB, SPB and obsolete PB
    (options of packet blocks dropped: their values' layout is option-specific),
    ISB and DSB with their fixed fields; any other block is dropped."""
    out = []
    for btype, big, body in pcapng_blocks(data):
        i = ">" if big else "<"
        nb = not big
        if btype == 0x0A0D0D0A:
            _bom, major, minor, seclen = struct.unpack(i + "IHHq", body[:16])
            out.append(shb(nb, major, minor))
        elif btype == 1:
            lt, _r, snap = struct.unpack(i + "HHI", body[:8])
            tsresol = tsoffset = None
            p = 8
            while p + 4 <= len(body):
                code, olen = struct.unpack(i + "HH", body[p:p + 4])
                if code == 0:
                    break
                if code == 9:
                    tsresol = body[p + 4]
                elif code == 14:
                    (tsoffset,) = struct.unpack(i + "q", body[p + 4:p + 12])
                p += 4 + olen + (-olen % 4)
            out.append(idb(lt, snap, tsresol, tsoffset, nb))
        elif btype == 6:
            ifid, th, tl, caplen, wl = struct.unpack(i + "IIIII", body[:20])
            out.append(epb(ifid, (th << 32) | tl, body[20:20 + caplen], wl, nb))
        elif btype == 2:
            ifid, _d, th, tl, caplen, wl = struct.unpack(i + "HHIIII", body[:20])
            out.append(old_pb(ifid, (th << 32) | tl, body[20:20 + caplen], wl, nb))
        elif btype == 3:
            (origlen,) = struct.unpack(i + "I", body[:4])
            out.append(block(3, struct.pack((">" if nb else "<") + "I", origlen) + body[4:], nb))
        elif btype == 5:                      # ISB: interface, timestamp; options dropped
            ifid, th, tl = struct.unpack(i + "III", body[:12])
            out.append(block(5, struct.pack((">" if nb else "<") + "III", ifid, th, tl), nb))
        elif btype == 0x0A:                   # DSB: secrets type, length, data
            stype, slen = struct.unpack(i + "II", body[:8])
            out.append(block(0x0A, struct.pack((">" if nb else "<") + "II", stype, slen)
                             + body[8:8 + slen], nb))
        # any other block (NRB, custom ...) is dropped: its layout is type-specific
    return b"".join(out)
