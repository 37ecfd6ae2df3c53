"""Slow, obviously correct pure-Python reference of the native decoder (decode.pxi).

Written from the same rules (docs/decoder.md) but in a different style: each layer
slices its bytes, `struct` reads fields, a missing byte raises `Cut(reason)`.  Tests
hold nkstream._core.decode_one() against decode() field by field on random and real
packets (tests/test_decode_fuzz.py).  Not used at run time.
"""
import ipaddress
import struct

PF_IP, PF_PROTO, PF_PORTS, PF_FRAG = 0x01, 0x02, 0x04, 0x08
PF_FRAG_FIRST, PF_GRE, PF_SPI, PF_PAYLOAD = 0x10, 0x20, 0x40, 0x80
MAX_VLANS = 4
MAX_VLAN_TAGS = 8
MAX_IPV6_EXT = 8

VLAN_TPIDS = {0x8100, 0x88A8, 0x9100, 0x9200}
IP_HIDING_ETHERTYPES = {0x8847, 0x8848, 0x88E7, 0x88E5, 0x6558, 0x894F, 0x880B}
IPV6_EXT_GENERIC = {0, 43, 60, 135, 139, 140}
BSD_AF_INET6 = {24, 28, 30}


class Cut(Exception):
    """Decoding stops with this reason."""


class _Pkt:
    def __init__(self):
        self.r = dict(error=None, ipver=0, proto=0, flags=0, vlan=[], nvlan=0, sport=0,
                      dport=0, src=None, dst=None, tcp_flags=0, gre_ver=0, gre_ptype=0,
                      gre_key=0, spi=0, l3_off=0, l4_off=0, l4_len=0)

    def __getitem__(self, k):
        return self.r[k]

    def __setitem__(self, k, v):
        self.r[k] = v

    def flag(self, f):
        self.r["flags"] |= f


def _need(buf, start, n, reason):
    if start + n > len(buf):
        raise Cut(reason)
    return buf[start:start + n]


def decode(frame, linktype):
    """A dict with the keys of nkstream._core.decode_one() that describe the packet."""
    p = _Pkt()
    try:
        _link(bytes(frame), 0, linktype, p, top=True)
    except Cut as c:
        p["error"] = c.args[0]
    return p.r


def _link(f, off, lt, p, top):
    if lt == 1:
        et, = struct.unpack("!H", _need(f, off + 12, 2, "l2.truncated"))
        return _ethertype(f, off + 14, et, p)
    if lt in (12, 14, 101):
        v = _need(f, off, 1, "l2.truncated")[0] >> 4
        if v == 4:
            return _ipv4(f, off, p)
        if v == 6:
            return _ipv6(f, off, p)
        raise Cut("ip.bad_version")
    if lt == 228:
        return _ipv4(f, off, p)
    if lt == 229:
        return _ipv6(f, off, p)
    if lt == 113:
        et, = struct.unpack("!H", _need(f, off + 14, 2, "l2.truncated"))
        return _ethertype(f, off + 16, et, p)
    if lt == 276:
        _need(f, off, 20, "l2.truncated")
        return _ethertype(f, off + 20, struct.unpack("!H", f[off:off + 2])[0], p)
    if lt in (0, 108):
        raw = _need(f, off, 4, "l2.truncated")
        if lt == 108:
            af = struct.unpack("!I", raw)[0]
        else:
            af = struct.unpack("<I", raw)[0]
            if af & 0xFFFF == 0:
                af = struct.unpack(">I", raw)[0]
        if af == 2:
            return _ipv4(f, off + 4, p)
        if af in BSD_AF_INET6:
            return _ipv6(f, off + 4, p)
        raise Cut("l2.non_ip")
    if lt in (9, 50, 104):
        a, c = _need(f, off, 2, "l2.truncated")
        if a in (0x0F, 0x8F) and c == 0:
            et, = struct.unpack("!H", _need(f, off + 2, 2, "l2.truncated"))
            return _ethertype(f, off + 4, et, p)
        if lt == 104:
            raise Cut("l2.non_ip")
        if (a, c) == (0xFF, 0x03):
            off += 2
        return _ppp(f, off, p)
    if lt == 239:
        return _nflog(f, off, p)
    if lt == 192 and top:
        _v, _fl, hl, dlt = struct.unpack("<BBHI", _need(f, off, 8, "l2.truncated"))
        if hl < 8 or off + hl > len(f):
            raise Cut("l2.truncated")
        return _link(f, off + hl, dlt, p, top=False)
    raise Cut("l2.unsupported_linktype")


def _ethertype(f, off, et, p):
    tags = 0
    while et in VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            raise Cut("vlan.too_many_tags")
        tci, et = struct.unpack("!HH", _need(f, off, 4, "l2.truncated"))
        if len(p["vlan"]) < MAX_VLANS:
            p["vlan"].append(tci & 0x0FFF)
        p["nvlan"] += 1
        tags += 1
        off += 4
    if et == 0x0800:
        return _ipv4(f, off, p)
    if et == 0x86DD:
        return _ipv6(f, off, p)
    if et == 0x8864:
        _need(f, off, 6, "l2.truncated")
        return _ppp(f, off + 6, p)
    if et < 0x0600:
        snap = f[off:off + 8]
        if len(snap) == 8 and snap[:6] == b"\xaa\xaa\x03\x00\x00\x00":
            inner, = struct.unpack("!H", snap[6:])
            if inner == 0x0800:
                return _ipv4(f, off + 8, p)
            if inner == 0x86DD:
                return _ipv6(f, off + 8, p)
        raise Cut("l2.non_ip")
    if et in IP_HIDING_ETHERTYPES:
        raise Cut("l2.unsupported_ethertype")
    raise Cut("l2.non_ip")


def _ppp(f, off, p):
    first = _need(f, off, 1, "l2.truncated")[0]
    if first & 1:
        proto, off = first, off + 1
    else:
        proto, = struct.unpack("!H", _need(f, off, 2, "l2.truncated"))
        off += 2
    if proto == 0x0021:
        return _ipv4(f, off, p)
    if proto == 0x0057:
        return _ipv6(f, off, p)
    raise Cut("l2.non_ip")


def _nflog(f, off, p):
    family = _need(f, off, 4, "l2.truncated")[0]
    q = off + 4
    big = (len(f) >= q + 4 and struct.unpack("<H", f[q + 2:q + 4])[0] > 0xFF
           and struct.unpack(">H", f[q + 2:q + 4])[0] <= 0xFF)
    for _ in range(64):
        tlen, ttype = struct.unpack(">HH" if big else "<HH", _need(f, q, 4, "l2.truncated"))
        if tlen < 4 or q + tlen > len(f):
            raise Cut("l2.truncated")
        if ttype & 0x7FFF == 9:
            inner = f[:q + tlen]        # the payload TLV bounds the packet
            if family == 2:
                return _ipv4(inner, q + 4, p)
            if family == 10:
                return _ipv6(inner, q + 4, p)
            raise Cut("l2.non_ip")
        q += (tlen + 3) & ~3
    raise Cut("l2.truncated")


def _ipv4(f, off, p):
    b0 = _need(f, off, 1, "ipv4.truncated")[0]
    if b0 >> 4 != 4:
        raise Cut("ipv4.bad_version")
    hdr = _need(f, off, 20, "ipv4.truncated")
    ihl = (b0 & 15) * 4
    if ihl < 20:
        raise Cut("ipv4.bad_ihl")
    tot, = struct.unpack("!H", hdr[2:4])
    if tot == 0:
        tot = len(f) - off
    elif tot < ihl:
        raise Cut("ipv4.bad_total_length")
    p["ipver"], p["l3_off"], p["proto"] = 4, off, hdr[9]
    p["src"] = str(ipaddress.IPv4Address(hdr[12:16]))
    p["dst"] = str(ipaddress.IPv4Address(hdr[16:20]))
    p.flag(PF_IP | PF_PROTO)
    _need(f, off, ihl, "ipv4.truncated")
    pkt = f[:min(off + tot, len(f))]
    fragfield, = struct.unpack("!H", hdr[6:8])
    if fragfield & 0x1FFF:
        p.flag(PF_FRAG)
        p["l4_off"] = off + ihl
        p["l4_len"] = max(len(pkt) - (off + ihl), 0)
        return
    if fragfield & 0x2000:
        p.flag(PF_FRAG | PF_FRAG_FIRST)
    _l4(pkt, off + ihl, hdr[9], p)


def _ipv6(f, off, p):
    b0 = _need(f, off, 1, "ipv6.truncated")[0]
    if b0 >> 4 != 6:
        raise Cut("ipv6.bad_version")
    hdr = _need(f, off, 40, "ipv6.truncated")
    p["ipver"], p["l3_off"] = 6, off
    p["src"] = str(ipaddress.IPv6Address(hdr[8:24]))
    p["dst"] = str(ipaddress.IPv6Address(hdr[24:40]))
    p.flag(PF_IP)
    plen, nh = struct.unpack("!HB", hdr[4:7])
    pkt = f if plen == 0 else f[:off + 40 + plen]
    q = off + 40
    n = 0
    while nh in IPV6_EXT_GENERIC or nh == 44:
        if n == MAX_IPV6_EXT:
            raise Cut("ipv6.ext_chain_too_long")
        n += 1
        if nh == 44:
            nxt, _r, fo, _id = struct.unpack("!BBHI", _need(pkt, q, 8, "ipv6.ext_truncated"))
            q += 8
            nh = nxt
            if fo >> 3:
                p["proto"] = nh
                p.flag(PF_PROTO | PF_FRAG)
                p["l4_off"], p["l4_len"] = q, len(pkt) - q
                return
            if fo & 1:
                p.flag(PF_FRAG | PF_FRAG_FIRST)
        else:
            nxt, hlen = _need(pkt, q, 2, "ipv6.ext_truncated")
            _need(pkt, q, (hlen + 1) * 8, "ipv6.ext_truncated")
            q += (hlen + 1) * 8
            nh = nxt
    p["proto"] = nh
    p.flag(PF_PROTO)
    _l4(pkt, q, nh, p)


def _l4(pkt, off, proto, p):
    p["l4_off"], p["l4_len"] = off, len(pkt) - off

    def payload(start):
        p["l4_off"], p["l4_len"] = start, len(pkt) - start
        p.flag(PF_PAYLOAD)

    if proto in (6, 17, 136, 132):
        if len(pkt) >= off + 4:
            p["sport"], p["dport"] = struct.unpack("!HH", pkt[off:off + 4])
            p.flag(PF_PORTS)
    if proto == 6:
        hdr = _need(pkt, off, 20, "tcp.truncated")
        p["tcp_flags"] = hdr[13]
        doff = (hdr[12] >> 4) * 4
        if doff < 20:
            raise Cut("tcp.bad_offset")
        _need(pkt, off, doff, "tcp.truncated")
        payload(off + doff)
    elif proto in (17, 136):
        _need(pkt, off, 8, "udp.truncated")
        payload(off + 8)
    elif proto == 132:
        _need(pkt, off, 12, "sctp.truncated")
        payload(off + 12)
    elif proto in (1, 58):
        _need(pkt, off, 4, "icmp.truncated")
    elif proto == 47:
        _gre(pkt, off, p, payload)
    elif proto in (4, 41):
        payload(off)            # the inner IP header (the tagger looks one level in)
    elif proto == 50:
        spi, _seq = struct.unpack("!II", _need(pkt, off, 8, "esp.truncated"))
        p["spi"] = spi
        p.flag(PF_SPI)
        payload(off + 8)
    elif proto == 51:
        hdr = _need(pkt, off, 12, "ah.truncated")
        p["spi"] = struct.unpack("!I", hdr[4:8])[0]
        p.flag(PF_SPI)
        hl = (hdr[1] + 2) * 4
        if hl < 12:
            raise Cut("ah.bad_length")
        _need(pkt, off, hl, "ah.truncated")
        payload(off + hl)


def _gre(pkt, off, p, payload):
    fl, ptype = struct.unpack("!HH", _need(pkt, off, 4, "gre.truncated"))
    p["gre_ver"], p["gre_ptype"] = fl & 7, ptype
    q = off + 4
    if fl & 7 == 0:
        p.flag(PF_GRE)
        if fl & 0xC000:
            q += 4
        if fl & 0x2000:
            p["gre_key"] = struct.unpack("!I", _need(pkt, q, 4, "gre.truncated"))[0]
            q += 4
        if fl & 0x1000:
            q += 4
        if fl & 0x4000:
            for i in range(17):
                if i == 16:
                    raise Cut("gre.truncated")
                af, _o, ln = struct.unpack("!HBB", _need(pkt, q, 4, "gre.truncated"))
                q += 4
                if af == 0 and ln == 0:
                    break
                q += ln
        if q > len(pkt):
            raise Cut("gre.truncated")
        return payload(q)
    if fl & 7 == 1:
        if not fl & 0x2000 or ptype != 0x880B:
            raise Cut("gre.bad_v1_header")
        _plen, call = struct.unpack("!HH", _need(pkt, off + 4, 4, "gre.truncated"))
        p.flag(PF_GRE)
        p["gre_key"] = call
        q = off + 8 + (4 if fl & 0x1000 else 0) + (4 if fl & 0x0080 else 0)
        if q > len(pkt):
            raise Cut("gre.truncated")
        return payload(q)
    raise Cut("gre.bad_version")
