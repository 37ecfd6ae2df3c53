"""Byte builders for hand-made test frames (header layouts from the cited RFCs).

Checksums are left zero: the decoder does not verify them.
"""
import ipaddress
import struct

SRC4, DST4 = "192.0.2.1", "198.51.100.2"
SRC6, DST6 = "2001:db8::1", "2001:db8:ffff::2"
MAC = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02"


def eth(ethertype, payload, tags=()):
    """Ethernet II; tags = [(tpid, vlan id), ...] outermost first."""
    out = MAC
    for tpid, vid in tags:
        out += struct.pack("!H", tpid) + struct.pack("!H", (3 << 13) | vid)
    return out + struct.pack("!H", ethertype) + payload


def ipv4(proto, payload, src=SRC4, dst=DST4, options=b"", frag=0, tot=None, ihl=None,
         version=4):
    """RFC 791 header; `frag` is the 16-bit flags+fragment-offset field."""
    assert len(options) % 4 == 0
    hl = 20 + len(options)
    ihl = hl // 4 if ihl is None else ihl
    tot = hl + len(payload) if tot is None else tot
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tot, 0x1234, frag, 64,
                      proto, 0, ipaddress.IPv4Address(src).packed,
                      ipaddress.IPv4Address(dst).packed)
    return hdr + options + payload


def ipv6(nh, payload, src=SRC6, dst=DST6, plen=None):
    plen = len(payload) if plen is None else plen
    return (struct.pack("!IHBB", 6 << 28, plen, nh, 64) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + payload)


def ext(nh, body_len8=0):
    """Generic IPv6 extension header (hop-by-hop, routing, dstopts): (1+n)*8 bytes."""
    return struct.pack("!BB", nh, body_len8) + b"\x01" + b"\x00" * (5 + 8 * body_len8)


def frag6(nh, offset8=0, more=False, ident=7):
    return struct.pack("!BBHI", nh, 0, (offset8 << 3) | int(more), ident)


def ah(nh, spi, icv_len=12):
    """RFC 4302: payload length = header length in 4-byte words minus 2."""
    hl = 12 + icv_len
    return struct.pack("!BBHII", nh, hl // 4 - 2, 0, spi, 1) + b"\xaa" * icv_len


def tcp(sport, dport, flags=0x18, payload=b"", doff=5, options=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 2, doff << 4, flags, 1024, 0, 0) \
        + options + payload


def udp(sport, dport, payload=b""):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport, dport, payload=b""):
    return struct.pack("!HHII", sport, dport, 0xdeadbeef, 0) + payload


def icmp(t=8, code=0, payload=b"\x00\x01\x00\x01"):
    return struct.pack("!BBH", t, code, 0) + payload


def gre0(ptype, payload, key=None, seq=None, csum=False):
    """RFC 2784 / RFC 2890."""
    fl = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | \
        (0x1000 if seq is not None else 0)
    out = struct.pack("!HH", fl, ptype)
    if csum:
        out += b"\x00" * 4
    if key is not None:
        out += struct.pack("!I", key)
    if seq is not None:
        out += struct.pack("!I", seq)
    return out + payload


def gre1(call_id, payload, seq=None, ack=None):
    """RFC 2637 s4.1 enhanced GRE: K set, protocol 0x880B."""
    fl = 0x2000 | (0x1000 if seq is not None else 0) | (0x0080 if ack is not None else 0) | 1
    out = struct.pack("!HHHH", fl, 0x880B, len(payload), call_id)
    if seq is not None:
        out += struct.pack("!I", seq)
    if ack is not None:
        out += struct.pack("!I", ack)
    return out + payload


def esp(spi, payload=b"\x11" * 16):
    return struct.pack("!II", spi, 1) + payload


def sll(proto, payload):
    """Linux cooked v1: type, ARPHRD_ETHER, addr len 6, addr (8), protocol."""
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", proto) + payload


def sll2(proto, payload):
    """Linux cooked v2: protocol, reserved, ifindex, ARPHRD, type, addr len, addr."""
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02" * 6 + b"\0\0") + payload


def null(af, payload, byteorder="<"):
    return struct.pack(byteorder + "I", af) + payload


def pppoe(ppp_proto, payload):
    """RFC 2516 session header + PPP protocol field."""
    return struct.pack("!BBHH", 0x11, 0, 0x0001, len(payload) + 2) + \
        struct.pack("!H", ppp_proto) + payload
