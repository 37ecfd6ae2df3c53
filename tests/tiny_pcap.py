"""A tiny pcap / pcapng frame reader for tests (the project's readers are another
subsystem; signature tests only need (linktype, frame bytes) of small captures)."""
import struct


def frames(path):
    """Yield (linktype, frame bytes) for every packet of a pcap or pcapng file."""
    data = open(path, "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
        off = 24
        while off + 16 <= len(data):
            caplen = struct.unpack(e + "I", data[off + 8:off + 12])[0]
            yield linktype, data[off + 16:off + 16 + caplen]
            off += 16 + caplen
    elif magic == b"\x0a\x0d\x0d\x0a":
        off, e, ifaces = 0, "<", []
        while off + 12 <= len(data):
            btype = struct.unpack(e + "I", data[off:off + 4])[0]
            if btype == 0x0A0D0D0A:
                e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                btype = struct.unpack(e + "I", data[off:off + 4])[0]
                ifaces = []
            blen = struct.unpack(e + "I", data[off + 4:off + 8])[0]
            body = data[off + 8:off + blen - 4]
            if btype == 1:
                ifaces.append(struct.unpack(e + "H", body[:2])[0])
            elif btype == 6:
                iface, _, _, caplen, _ = struct.unpack(e + "IIIII", body[:20])
                yield ifaces[iface], body[20:20 + caplen]
            elif btype == 3:
                yield ifaces[0], body[4:]
            off += blen
    else:
        raise ValueError(f"{path}: not a pcap or pcapng file")
