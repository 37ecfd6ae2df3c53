# L2 -> L4 packet decoder (the native hot path), in the manner of Suricata's decode-*.c:
# every read is preceded by a length check against the bytes we may read, the number
# of stacked headers is capped, and a packet that cannot be decoded fully is not an
# exception but a named reason in pkt_t.error (ERROR_NAMES) that the caller counts.
#
# Rules kept throughout this file:
# - `f` is the frame, `caplen` the captured bytes; every helper takes an absolute
#   offset into `f` and an `end` (<= caplen) it must not read at or past.
# - Big-endian fields are read with explicit byte shifts (no unaligned casts, no
#   bitfield structs), so the code is the same on every host byte order.
# - No allocation and no Python object: decode_packet() is `noexcept nogil`.
# - Decoding stops at the first error.  Fields decoded before the error stay valid
#   and are flagged in pkt_t.flags (e.g. PF_IP with `tcp.truncated`).
# See docs/decoder.md for what is decoded and when each reason fires.

# Error reasons.  Ids are stable: append only, never renumber (snapshots store ids
# beside this table's names), and keep them < 64 so a 64-bit mask can hold a set.
cdef enum:
    ERR_NONE = 0
    ERR_L2_TRUNCATED = 1
    ERR_L2_UNSUPPORTED_LINKTYPE = 2
    ERR_L2_NON_IP = 3
    ERR_L2_UNSUPPORTED_ETHERTYPE = 4
    ERR_VLAN_TOO_MANY_TAGS = 5
    ERR_IP_BAD_VERSION = 6
    ERR_IPV4_TRUNCATED = 7
    ERR_IPV4_BAD_VERSION = 8
    ERR_IPV4_BAD_IHL = 9
    ERR_IPV4_BAD_TOTAL_LENGTH = 10
    ERR_IPV6_TRUNCATED = 11
    ERR_IPV6_BAD_VERSION = 12
    ERR_IPV6_EXT_CHAIN_TOO_LONG = 13
    ERR_IPV6_EXT_TRUNCATED = 14
    ERR_TCP_TRUNCATED = 15
    ERR_TCP_BAD_OFFSET = 16
    ERR_UDP_TRUNCATED = 17
    ERR_SCTP_TRUNCATED = 18
    ERR_ICMP_TRUNCATED = 19
    ERR_GRE_TRUNCATED = 20
    ERR_GRE_BAD_VERSION = 21
    ERR_GRE_BAD_V1_HEADER = 22
    ERR_ESP_TRUNCATED = 23
    ERR_AH_TRUNCATED = 24
    ERR_AH_BAD_LENGTH = 25
    ERR_COUNT = 26

ERROR_NAMES = (
    None,                          # 0: fully decoded
    "l2.truncated",                # 1
    "l2.unsupported_linktype",     # 2
    "l2.non_ip",                   # 3: a valid frame that does not carry IP (ARP, LLDP...)
    "l2.unsupported_ethertype",    # 4: may carry IP inside an encapsulation we do not decode (MPLS...)
    "vlan.too_many_tags",          # 5
    "ip.bad_version",              # 6: raw-IP link type, version nibble neither 4 nor 6
    "ipv4.truncated",              # 7
    "ipv4.bad_version",            # 8
    "ipv4.bad_ihl",                # 9
    "ipv4.bad_total_length",       # 10
    "ipv6.truncated",              # 11
    "ipv6.bad_version",            # 12
    "ipv6.ext_chain_too_long",     # 13
    "ipv6.ext_truncated",          # 14
    "tcp.truncated",               # 15
    "tcp.bad_offset",              # 16
    "udp.truncated",               # 17
    "sctp.truncated",              # 18
    "icmp.truncated",              # 19
    "gre.truncated",               # 20
    "gre.bad_version",             # 21
    "gre.bad_v1_header",           # 22
    "esp.truncated",               # 23
    "ah.truncated",                # 24
    "ah.bad_length",               # 25
)
assert len(ERROR_NAMES) == ERR_COUNT and ERR_COUNT < 64

# Link types decoded here beyond the ones every subsystem needs (types.pxi).
cdef enum:
    LT_PPP = 9             # PPP; some captures carry Cisco HDLC framing under it
    LT_PPP_HDLC = 50
    LT_C_HDLC = 104        # Cisco HDLC: address, control, ethertype
    LT_PPI = 192           # Per-Packet Information header, then a frame of pph_dlt
    LT_NFLOG = 239         # Linux NFLOG: nfgenmsg + TLVs, NFULA_PAYLOAD holds the IP packet

# Caps on stacked headers (each one bounds the work per packet).
cdef enum:
    MAX_VLAN_TAGS = 8      # 802.1Q/802.1ad tags in one frame; the 9th is vlan.too_many_tags
    MAX_IPV6_EXT = 8       # IPv6 extension headers; the 9th is ipv6.ext_chain_too_long
    MAX_NFLOG_TLVS = 64
    MAX_GRE_SRES = 16      # RFC 1701 source route entries
    MAX_DECODE_LEN = 0x40000000  # bytes of a frame the decoder considers (1 GiB)

# EtherTypes (IEEE registry) and PPP protocol numbers (RFC 1661, RFC 5072).
cdef enum:
    ET_IPV4 = 0x0800
    ET_IPV6 = 0x86DD
    ET_VLAN = 0x8100       # 802.1Q C-tag
    ET_QINQ = 0x88A8       # 802.1ad S-tag
    ET_QINQ_OLD = 0x9100   # pre-standard QinQ S-tag
    ET_QINQ_OLD2 = 0x9200
    ET_PPPOE_SESS = 0x8864 # RFC 2516 session stage
    PPP_IPV4 = 0x0021
    PPP_IPV6 = 0x0057


cdef extern from *:
    """
    /* Hint the frame's first two cache lines into cache ahead of decoding it: a
       batch walk touches only each frame's headers, scattered over the buffer,
       which the hardware prefetcher does not follow. */
    #if defined(__GNUC__) || defined(__clang__)
    #define NKS_PREFETCH(p) do { __builtin_prefetch((const void*)(p), 0, 3); \
                                 __builtin_prefetch((const char*)(p) + 64, 0, 3); } while (0)
    #else
    #define NKS_PREFETCH(p) ((void)(p))
    #endif
    """
    void NKS_PREFETCH(const void* p) noexcept nogil

# How many records ahead a batch walk prefetches (decode_columns, the pipeline).
cdef enum:
    PREFETCH_AHEAD = 16


cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) |
            (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline uint16_t rd16le(const uint8_t* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[1] << 8) | p[0])


cdef inline uint32_t rd32le(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) |
            (<uint32_t>p[1] << 8) | <uint32_t>p[0])


cdef inline uint16_t fail(pkt_t* out, uint16_t reason) noexcept nogil:
    out.error = reason
    return reason


cdef inline void set_payload(pkt_t* out, uint32_t off, uint32_t end) noexcept nogil:
    # Callers have checked off <= end.
    out.l4_off = off
    out.l4_len = end - off
    out.flags |= PF_PAYLOAD


# ---------------------------------------------------------------------------- L4

cdef inline uint16_t set_ports(const uint8_t* f, uint32_t off, uint32_t end,
                               pkt_t* out) noexcept nogil:
    # TCP, UDP and SCTP all start with source and destination port (RFC 9293,
    # RFC 768, RFC 9260).  Returns 1 if both ports were within `end`.
    if off + 4 > end:
        return 0
    out.sport = rd16(f + off)
    out.dport = rd16(f + off + 2)
    out.flags |= PF_PORTS
    return 1


cdef inline uint16_t decode_tcp(const uint8_t* f, uint32_t off, uint32_t end,
                                pkt_t* out) noexcept nogil:
    cdef uint32_t doff
    set_ports(f, off, end, out)
    if off + 20 > end:
        return fail(out, ERR_TCP_TRUNCATED)
    out.tcp_flags = f[off + 13]
    doff = (<uint32_t>f[off + 12] >> 4) * 4
    if doff < 20:
        return fail(out, ERR_TCP_BAD_OFFSET)
    if off + doff > end:
        return fail(out, ERR_TCP_TRUNCATED)
    set_payload(out, off + doff, end)
    return ERR_NONE


cdef inline uint16_t decode_udp(const uint8_t* f, uint32_t off, uint32_t end,
                                pkt_t* out) noexcept nogil:
    # The UDP length field is not used: the IP length already bounds `end`.
    set_ports(f, off, end, out)
    if off + 8 > end:
        return fail(out, ERR_UDP_TRUNCATED)
    set_payload(out, off + 8, end)
    return ERR_NONE


cdef inline uint16_t decode_sctp(const uint8_t* f, uint32_t off, uint32_t end,
                                 pkt_t* out) noexcept nogil:
    # RFC 9260 s3.1: 12-byte common header (ports, verification tag, checksum).
    set_ports(f, off, end, out)
    if off + 12 > end:
        return fail(out, ERR_SCTP_TRUNCATED)
    set_payload(out, off + 12, end)
    return ERR_NONE


cdef inline uint16_t decode_gre(const uint8_t* f, uint32_t off, uint32_t end,
                                pkt_t* out) noexcept nogil:
    # GRE version 0: RFC 2784 + RFC 2890 (key, sequence), RFC 1701 routing.
    # GRE version 1 (enhanced GRE): RFC 2637 s4.1, used by PPTP.
    cdef uint16_t fl, sre_len
    cdef uint32_t p = off + 4
    cdef int i
    if off + 4 > end:
        return fail(out, ERR_GRE_TRUNCATED)
    fl = rd16(f + off)
    out.gre_ver = fl & 7
    out.gre_ptype = rd16(f + off + 2)
    if out.gre_ver == 0:
        out.flags |= PF_GRE
        if fl & 0xC000:            # C or R: checksum + offset (RFC 1701 s2.1)
            p += 4
        if fl & 0x2000:            # K: key
            if p + 4 > end:
                return fail(out, ERR_GRE_TRUNCATED)
            out.gre_key = rd32(f + p)
            p += 4
        if fl & 0x1000:            # S: sequence number
            p += 4
        if fl & 0x4000:            # R: source route entries until a NULL SRE
            for i in range(MAX_GRE_SRES + 1):
                if i == MAX_GRE_SRES or p + 4 > end:
                    return fail(out, ERR_GRE_TRUNCATED)
                sre_len = f[p + 3]
                p += 4
                if rd16(f + p - 4) == 0 and sre_len == 0:
                    break
                p += sre_len
        if p > end:
            return fail(out, ERR_GRE_TRUNCATED)
        set_payload(out, p, end)
        return ERR_NONE
    if out.gre_ver == 1:
        # Enhanced GRE: K is mandatory and the key field holds payload length (high
        # 16 bits) and call id (low 16).  We keep only the call id in gre_key: it
        # names the PPTP session, the length changes every packet.
        if (fl & 0x2000) == 0 or out.gre_ptype != 0x880B:
            return fail(out, ERR_GRE_BAD_V1_HEADER)
        if off + 8 > end:
            return fail(out, ERR_GRE_TRUNCATED)
        out.flags |= PF_GRE
        out.gre_key = rd16(f + off + 6)
        p = off + 8
        if fl & 0x1000:            # S: sequence number
            p += 4
        if fl & 0x0080:            # A: acknowledgment number
            p += 4
        if p > end:
            return fail(out, ERR_GRE_TRUNCATED)
        set_payload(out, p, end)
        return ERR_NONE
    return fail(out, ERR_GRE_BAD_VERSION)


cdef inline uint16_t decode_esp(const uint8_t* f, uint32_t off, uint32_t end,
                                pkt_t* out) noexcept nogil:
    # RFC 4303 s2: SPI, sequence number, then encrypted payload.
    if off + 8 > end:
        return fail(out, ERR_ESP_TRUNCATED)
    out.spi = rd32(f + off)
    out.flags |= PF_SPI
    set_payload(out, off + 8, end)
    return ERR_NONE


cdef inline uint16_t decode_ah(const uint8_t* f, uint32_t off, uint32_t end,
                               pkt_t* out) noexcept nogil:
    # RFC 4302 s2: next header, payload length in 32-bit words minus 2, reserved,
    # SPI, sequence number, ICV.  AH is kept as the final protocol (proto 51): see
    # docs/decoder.md; l4_off points at the protected next header.
    cdef uint32_t hl
    if off + 12 > end:
        return fail(out, ERR_AH_TRUNCATED)
    out.spi = rd32(f + off + 4)
    out.flags |= PF_SPI
    hl = (<uint32_t>f[off + 1] + 2) * 4
    if hl < 12:
        return fail(out, ERR_AH_BAD_LENGTH)
    if off + hl > end:
        return fail(out, ERR_AH_TRUNCATED)
    set_payload(out, off + hl, end)
    return ERR_NONE


cdef inline uint16_t decode_l4(const uint8_t* f, uint32_t off, uint32_t end,
                               uint8_t proto, pkt_t* out) noexcept nogil:
    # `off` is where the transport header starts, `end` the end of the IP payload
    # within the captured bytes.
    out.l4_off = off
    out.l4_len = end - off
    if proto == 6:
        return decode_tcp(f, off, end, out)
    if proto == 17 or proto == 136:     # UDP, UDP-Lite (RFC 3828: same port layout)
        return decode_udp(f, off, end, out)
    if proto == 132:
        return decode_sctp(f, off, end, out)
    if proto == 1 or proto == 58:       # ICMP, ICMPv6: type, code, checksum
        if off + 4 > end:
            return fail(out, ERR_ICMP_TRUNCATED)
        return ERR_NONE
    if proto == 47:
        return decode_gre(f, off, end, out)
    if proto == 50:
        return decode_esp(f, off, end, out)
    if proto == 51:
        return decode_ah(f, off, end, out)
    if proto == 4 or proto == 41:
        # IP-in-IP / 6in4 (RFC 2003, RFC 4213): the OUTER header stays the packet's
        # identity (addresses, proto 4/41, as tshark reports the outer header);
        # PF_PAYLOAD with l4_off at the inner IP header lets the tagger look one
        # header deeper (e.g. PPTP's GRE inside IPv4-in-IPv6).
        if off <= end:
            set_payload(out, off, end)
        return ERR_NONE
    # Everything else: the outer header is the packet's identity; l4_off/l4_len
    # locate the bytes after it without PF_PAYLOAD.
    return ERR_NONE


# ---------------------------------------------------------------------------- L3

cdef inline uint16_t decode_ipv4(const uint8_t* f, uint32_t off, uint32_t caplen,
                                 pkt_t* out) noexcept nogil:
    # RFC 791 s3.1.
    cdef uint32_t ihl, tot, end
    cdef uint16_t frag
    if off >= caplen:
        return fail(out, ERR_IPV4_TRUNCATED)
    if (f[off] >> 4) != 4:
        return fail(out, ERR_IPV4_BAD_VERSION)
    if off + 20 > caplen:
        return fail(out, ERR_IPV4_TRUNCATED)
    ihl = (<uint32_t>f[off] & 0x0F) * 4
    if ihl < 20:
        return fail(out, ERR_IPV4_BAD_IHL)
    tot = rd16(f + off + 2)
    if tot == 0:
        # Captured on a host with TCP segmentation offload: the kernel hands the
        # capture a super-packet whose length field is 0 (Wireshark's ip.tso_support
        # does the same).  The captured bytes are the packet.
        tot = caplen - off
    elif tot < ihl:
        return fail(out, ERR_IPV4_BAD_TOTAL_LENGTH)
    # Addresses only after the header checks: a header that fails them is not one.
    out.ipver = 4
    out.l3_off = off
    out.src4 = rd32(f + off + 12)
    out.dst4 = rd32(f + off + 16)
    memcpy(out.src, f + off + 12, 4)
    memcpy(out.dst, f + off + 16, 4)
    out.proto = f[off + 9]
    out.flags |= PF_IP | PF_PROTO
    if off + ihl > caplen:
        return fail(out, ERR_IPV4_TRUNCATED)
    # Trust the IP length over the frame length (Ethernet pads short frames); an
    # IP length beyond the captured bytes is a snaplen cut, not an error by itself.
    end = off + tot
    if end > caplen:
        end = caplen
    frag = rd16(f + off + 6)
    if frag & 0x3FFF:
        # RFC 791 Identification: with src, dst and protocol it names the datagram
        # the fragment belongs to (the flow table follows first fragments by it).
        out.frag_id = rd16(f + off + 4)
    if frag & 0x1FFF:
        # Non-first fragment: its payload starts mid-datagram, no transport header.
        out.flags |= PF_FRAG
        out.l4_off = off + ihl
        out.l4_len = end - out.l4_off if end > out.l4_off else 0
        return ERR_NONE
    if frag & 0x2000:
        out.flags |= PF_FRAG | PF_FRAG_FIRST
    return decode_l4(f, off + ihl, end, out.proto, out)


cdef inline uint16_t decode_ipv6(const uint8_t* f, uint32_t off, uint32_t caplen,
                                 pkt_t* out) noexcept nogil:
    # RFC 8200 s3 (fixed header) and s4 (extension headers), RFC 4302 (AH).
    cdef uint32_t end, plen, p, hl
    cdef uint8_t nh
    cdef uint16_t fo
    cdef int n = 0
    if off >= caplen:
        return fail(out, ERR_IPV6_TRUNCATED)
    if (f[off] >> 4) != 6:
        return fail(out, ERR_IPV6_BAD_VERSION)
    if off + 40 > caplen:
        return fail(out, ERR_IPV6_TRUNCATED)
    out.ipver = 6
    out.l3_off = off
    memcpy(out.src, f + off + 8, 16)
    memcpy(out.dst, f + off + 24, 16)
    out.flags |= PF_IP
    plen = rd16(f + off + 4)
    if plen == 0:
        # Jumbogram (RFC 2675) or a TSO super-packet: the captured bytes are the packet.
        end = caplen
    else:
        end = off + 40 + plen
        if end > caplen:
            end = caplen
    nh = f[off + 6]
    p = off + 40
    while True:
        if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
            # Hop-by-hop, routing, destination options, mobility (RFC 6275),
            # HIP (RFC 7401), shim6 (RFC 5533): length in 8-octet units, not
            # counting the first 8 (RFC 8200 s4.3-4.6).
            if n == MAX_IPV6_EXT:
                return fail(out, ERR_IPV6_EXT_CHAIN_TOO_LONG)
            if p + 2 > end:
                return fail(out, ERR_IPV6_EXT_TRUNCATED)
            hl = (<uint32_t>f[p + 1] + 1) * 8
            if p + hl > end:
                return fail(out, ERR_IPV6_EXT_TRUNCATED)
            nh = f[p]
            p += hl
            n += 1
        elif nh == 44:
            # Fragment header (RFC 8200 s4.5): 8 bytes, offset in 8-octet units.
            if n == MAX_IPV6_EXT:
                return fail(out, ERR_IPV6_EXT_CHAIN_TOO_LONG)
            if p + 8 > end:
                return fail(out, ERR_IPV6_EXT_TRUNCATED)
            nh = f[p]
            fo = rd16(f + p + 2)
            out.frag_id = rd32(f + p + 4)    # RFC 8200 s4.5 Identification
            p += 8
            n += 1
            if fo & 0xFFF8:
                out.proto = nh
                out.flags |= PF_PROTO | PF_FRAG
                out.l4_off = p
                out.l4_len = end - p
                return ERR_NONE
            if fo & 1:
                out.flags |= PF_FRAG | PF_FRAG_FIRST
            # Offset 0 and M clear: an atomic fragment (RFC 6946), a whole packet.
        else:
            break
    out.proto = nh
    out.flags |= PF_PROTO
    return decode_l4(f, p, end, nh, out)


cdef inline uint16_t decode_ip_any(const uint8_t* f, uint32_t off, uint32_t caplen,
                                   pkt_t* out) noexcept nogil:
    # Raw IP link types without a version hint: the version nibble decides.
    cdef uint8_t v
    if off >= caplen:
        return fail(out, ERR_L2_TRUNCATED)
    v = f[off] >> 4
    if v == 4:
        return decode_ipv4(f, off, caplen, out)
    if v == 6:
        return decode_ipv6(f, off, caplen, out)
    return fail(out, ERR_IP_BAD_VERSION)


# ---------------------------------------------------------------------------- L2

cdef inline bint ethertype_may_carry_ip(uint16_t et) noexcept nogil:
    # Encapsulations that can hide IP traffic and that this decoder does not open:
    # counted as l2.unsupported_ethertype (not l2.non_ip) so the loss is visible.
    return (et == 0x8847 or et == 0x8848 or   # MPLS unicast / multicast (RFC 3032)
            et == 0x88E7 or                   # 802.1ah provider backbone bridging
            et == 0x88E5 or                   # 802.1AE MACsec
            et == 0x6558 or                   # transparent Ethernet bridging
            et == 0x894F or                   # NSH (RFC 8300)
            et == 0x880B)                     # PPP


cdef inline uint16_t decode_ppp_proto(const uint8_t* f, uint32_t off, uint32_t caplen,
                                      pkt_t* out) noexcept nogil:
    # PPP protocol field (RFC 1661 s2), 1 byte when protocol-field compressed
    # (the low bit of the first byte is set).
    cdef uint16_t proto
    if off >= caplen:
        return fail(out, ERR_L2_TRUNCATED)
    if f[off] & 1:
        proto = f[off]
        off += 1
    else:
        if off + 2 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        proto = rd16(f + off)
        off += 2
    if proto == PPP_IPV4:
        return decode_ipv4(f, off, caplen, out)
    if proto == PPP_IPV6:
        return decode_ipv6(f, off, caplen, out)
    return fail(out, ERR_L2_NON_IP)


cdef inline uint16_t decode_ethertype(const uint8_t* f, uint32_t off, uint32_t caplen,
                                      uint16_t et, pkt_t* out) noexcept nogil:
    # `et` is the EtherType that says what starts at `off`: VLAN tags (any number,
    # capped), then IPv4 / IPv6 / PPPoE session.
    cdef int ntags = 0
    while et == ET_VLAN or et == ET_QINQ or et == ET_QINQ_OLD or et == ET_QINQ_OLD2:
        if ntags == MAX_VLAN_TAGS:
            return fail(out, ERR_VLAN_TOO_MANY_TAGS)
        if off + 4 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        if out.nvlan < MAX_VLANS:
            out.vlan[out.nvlan] = rd16(f + off) & 0x0FFF
        out.nvlan += 1
        ntags += 1
        et = rd16(f + off + 2)
        off += 4
    if et == ET_IPV4:
        return decode_ipv4(f, off, caplen, out)
    if et == ET_IPV6:
        return decode_ipv6(f, off, caplen, out)
    if et == ET_PPPOE_SESS:
        # RFC 2516 s4: ver/type, code, session id, length, then the PPP protocol.
        if off + 6 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        return decode_ppp_proto(f, off + 6, caplen, out)
    if et < 0x0600:
        # 802.3 length field: LLC follows.  Only SNAP with OUI 0 carries an
        # EtherType (RFC 1042); anything else (STP, NetBIOS, ...) is not IP.
        if (off + 8 <= caplen and f[off] == 0xAA and f[off + 1] == 0xAA and
                f[off + 2] == 0x03 and f[off + 3] == 0 and f[off + 4] == 0 and
                f[off + 5] == 0):
            et = rd16(f + off + 6)
            if et == ET_IPV4:
                return decode_ipv4(f, off + 8, caplen, out)
            if et == ET_IPV6:
                return decode_ipv6(f, off + 8, caplen, out)
        return fail(out, ERR_L2_NON_IP)
    if ethertype_may_carry_ip(et):
        return fail(out, ERR_L2_UNSUPPORTED_ETHERTYPE)
    return fail(out, ERR_L2_NON_IP)


cdef inline uint16_t decode_bsd_af(const uint8_t* f, uint32_t off, uint32_t caplen,
                                   uint32_t af, pkt_t* out) noexcept nogil:
    # BSD address families: AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD,
    # OpenBSD, BSD/OS), 28 (FreeBSD, DragonFly), 30 (Darwin).  tcpdump's
    # print-null.c and libpcap's LINKTYPE_NULL description list the same values.
    if af == 2:
        return decode_ipv4(f, off, caplen, out)
    if af == 24 or af == 28 or af == 30:
        return decode_ipv6(f, off, caplen, out)
    return fail(out, ERR_L2_NON_IP)


cdef inline uint16_t decode_nflog(const uint8_t* f, uint32_t off, uint32_t caplen,
                                  pkt_t* out) noexcept nogil:
    # LINKTYPE_NFLOG (https://www.tcpdump.org/linktypes/LINKTYPE_NFLOG.html):
    # nfgenmsg (family, version, resource id) then TLVs whose length and type are
    # in the capturing host's byte order; the length covers the 4-byte TLV header,
    # TLVs are padded to 4 bytes; NFULA_PAYLOAD (type 9) holds the packet.
    cdef uint8_t family
    cdef uint32_t tlen, ttype, p
    cdef bint big = 0
    cdef int i
    if off + 4 > caplen:
        return fail(out, ERR_L2_TRUNCATED)
    family = f[off]
    p = off + 4
    if p + 4 <= caplen and rd16le(f + p + 2) > 0xFF and rd16(f + p + 2) <= 0xFF:
        big = 1                    # written on a big-endian host
    for i in range(MAX_NFLOG_TLVS):
        if p + 4 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        if big:
            tlen = rd16(f + p)
            ttype = rd16(f + p + 2) & 0x7FFF
        else:
            tlen = rd16le(f + p)
            ttype = rd16le(f + p + 2) & 0x7FFF
        if tlen < 4 or p + tlen > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        if ttype == 9:
            if family == 2:
                return decode_ipv4(f, p + 4, p + tlen, out)
            if family == 10:
                return decode_ipv6(f, p + 4, p + tlen, out)
            return fail(out, ERR_L2_NON_IP)
        p += (tlen + 3) & ~(<uint32_t>3)
    return fail(out, ERR_L2_TRUNCATED)


cdef uint16_t decode_link(const uint8_t* f, uint32_t off, uint32_t caplen,
                          uint32_t linktype, int depth, pkt_t* out) noexcept nogil:
    cdef uint32_t af, hl
    if linktype == LT_EN10MB:
        if off + 14 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        return decode_ethertype(f, off + 14, caplen, rd16(f + off + 12), out)
    if linktype == LT_RAW or linktype == LT_RAW_OLD12 or linktype == LT_RAW_OLD14:
        return decode_ip_any(f, off, caplen, out)
    if linktype == LT_IPV4:
        return decode_ipv4(f, off, caplen, out)
    if linktype == LT_IPV6:
        return decode_ipv6(f, off, caplen, out)
    if linktype == LT_LINUX_SLL:
        # 16 bytes: packet type, ARPHRD type, address length, 8 address bytes,
        # protocol (an EtherType; the kernel's 1 = 802.3, 4 = 802.2 LLC are not IP).
        if off + 16 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        return decode_ethertype(f, off + 16, caplen, rd16(f + off + 14), out)
    if linktype == LT_LINUX_SLL2:
        # 20 bytes: protocol first, then reserved, ifindex, ARPHRD, type, addr.
        if off + 20 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        return decode_ethertype(f, off + 20, caplen, rd16(f + off), out)
    if linktype == LT_NULL or linktype == LT_LOOP:
        if off + 4 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        if linktype == LT_LOOP:
            af = rd32(f + off)
        else:
            # Host byte order of the capturing machine, which the file does not
            # say: AF values are small, so a value with only high bytes set was
            # written in the other order.
            af = rd32le(f + off)
            if (af & 0xFFFF) == 0:
                af = rd32(f + off)
        return decode_bsd_af(f, off + 4, caplen, af, out)
    if linktype == LT_PPP or linktype == LT_PPP_HDLC or linktype == LT_C_HDLC:
        if off + 2 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        if (f[off] == 0x0F or f[off] == 0x8F) and f[off + 1] == 0:
            # Cisco HDLC framing (unicast / broadcast address), EtherType follows.
            if off + 4 > caplen:
                return fail(out, ERR_L2_TRUNCATED)
            return decode_ethertype(f, off + 4, caplen, rd16(f + off + 2), out)
        if linktype == LT_C_HDLC:
            return fail(out, ERR_L2_NON_IP)
        if f[off] == 0xFF and f[off + 1] == 0x03:   # HDLC address + control (RFC 1662)
            off += 2
        return decode_ppp_proto(f, off, caplen, out)
    if linktype == LT_NFLOG:
        return decode_nflog(f, off, caplen, out)
    if linktype == LT_PPI and depth == 0:
        # PPI header: version, flags, length (LE, whole header), DLT (LE) of the
        # frame that follows.
        if off + 8 > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        hl = rd16le(f + off + 2)
        if hl < 8 or off + hl > caplen:
            return fail(out, ERR_L2_TRUNCATED)
        return decode_link(f, off + hl, caplen, rd32le(f + off + 4), 1, out)
    return fail(out, ERR_L2_UNSUPPORTED_LINKTYPE)


cdef inline bint decode_common(const uint8_t* f, uint32_t caplen, pkt_t* out) noexcept nogil:
    # The frame most traffic is made of -- Ethernet, at most one 802.1Q tag, an IPv4
    # header that is not a fragment, a complete TCP or UDP header -- decoded straight
    # through, with exactly the result decode_link() gives it (tests/test_decode_fuzz.py
    # holds both against the reference decoder).  Returns False, with *out untouched
    # (all zero), for anything else, and decode_link() does it all: a second tag,
    # IPv6, fragments, a TSO length of 0, other transports, every error.
    cdef uint32_t off = 14, ihl, tot, end, l4, hl
    cdef uint16_t et, vid = 0
    cdef uint8_t nv = 0, proto, tcpf = 0
    if caplen < 14 + 20 + 8:
        return False
    et = rd16(f + 12)
    if et == ET_VLAN:
        vid = rd16(f + 14) & 0x0FFF
        et = rd16(f + 16)
        off = 18
        nv = 1
    if et != ET_IPV4 or off + 20 > caplen or (f[off] >> 4) != 4:
        return False
    ihl = (<uint32_t>f[off] & 0x0F) * 4
    tot = rd16(f + off + 2)
    # RFC 791: IHL >= 5 words; a total length below the header (0: TSO) or a
    # fragment (MF or an offset; DF is fine) is the general decoder's to handle
    if ihl < 20 or tot < ihl or off + ihl > caplen or (rd16(f + off + 6) & 0x3FFF) != 0:
        return False
    end = off + tot
    if end > caplen:
        end = caplen
    proto = f[off + 9]
    l4 = off + ihl
    if proto == 6:
        if l4 + 20 > end:
            return False
        hl = (<uint32_t>f[l4 + 12] >> 4) * 4
        if hl < 20 or l4 + hl > end:
            return False
        tcpf = f[l4 + 13]
    elif proto == 17:
        if l4 + 8 > end:
            return False
        hl = 8
    else:
        return False
    out.nvlan = nv
    out.vlan[0] = vid
    out.ipver = 4
    out.proto = proto
    out.flags = PF_IP | PF_PROTO | PF_PORTS | PF_PAYLOAD
    out.l3_off = off
    out.src4 = rd32(f + off + 12)
    out.dst4 = rd32(f + off + 16)
    memcpy(out.src, f + off + 12, 4)
    memcpy(out.dst, f + off + 16, 4)
    out.sport = rd16(f + l4)
    out.dport = rd16(f + l4 + 2)
    out.tcp_flags = tcpf
    out.l4_off = l4 + hl
    out.l4_len = end - (l4 + hl)
    return True


cdef uint16_t decode_general(const uint8_t* frame, uint32_t caplen, uint32_t linktype,
                             pkt_t* out) noexcept nogil:
    """The general decoder, layer by layer, into a zeroed *out (what decode_common()
    declined, or a link type it does not serve); returns out.error."""
    if caplen > MAX_DECODE_LEN:
        # Only headers are read; bounding the length keeps every `off + n` below
        # 2**32 (headers add at most a few hundred KiB to an offset).  decode_common()
        # needs no such bound: its offsets stay below 18 + 60 + 65535.
        caplen = MAX_DECODE_LEN
    return decode_link(frame, 0, caplen, linktype, 0, out)


cdef uint16_t decode_packet(const uint8_t* frame, uint32_t caplen, uint32_t linktype,
                            pkt_t* out) noexcept nogil:
    """Decode one frame into *out; returns (and stores) out.error, 0 = fully decoded."""
    NKS_ZERO(out)
    if linktype == LT_EN10MB and decode_common(frame, caplen, out):
        return ERR_NONE
    return decode_general(frame, caplen, linktype, out)


cdef inline void restore_vlan(const rec_t* r, pkt_t* p) noexcept nogil:
    # AF_PACKET strips the outermost 802.1Q/802.1ad tag and reports it in the
    # packet's auxdata (tp_vlan_tci / tp_vlan_tpid, linux/if_packet.h); put it
    # back as the outermost VLAN id.  Call after decode_packet().
    cdef int i
    if r.vlan_tpid == 0:
        return
    i = MAX_VLANS - 1
    while i > 0:
        p.vlan[i] = p.vlan[i - 1]
        i -= 1
    p.vlan[0] = r.vlan_tci & 0x0FFF
    if p.nvlan < 255:
        p.nvlan += 1


cdef inline uint16_t decode_record(const uint8_t* base, const rec_t* r,
                                   pkt_t* out) noexcept nogil:
    """decode_packet() of one batch record (its frame at base + r.off), with the VLAN
    tag AF_PACKET stripped put back; returns out.error."""
    # decode_packet() written out here, so that the common frame is decoded without
    # a call; only the general decoder is one.
    NKS_ZERO(out)
    if not (r.linktype == LT_EN10MB and decode_common(base + r.off, r.caplen, out)):
        decode_general(base + r.off, r.caplen, r.linktype, out)
    if r.vlan_tpid != 0:
        restore_vlan(r, out)
    return out.error


# ---------------------------------------------------------------- Python interface

cdef int check_recs(object recs, Py_ssize_t nbytes) except -1:
    """Check that `recs` is a 1-d C-contiguous REC_DTYPE array whose every record
    lies inside an `nbytes`-byte buffer; ValueError naming the record otherwise."""
    cdef cnp.ndarray arr
    cdef const rec_t* r
    cdef Py_ssize_t i
    if not isinstance(recs, np.ndarray):
        raise TypeError("recs must be a numpy array of REC_DTYPE, got %s" % type(recs).__name__)
    arr = <cnp.ndarray>recs
    if recs.dtype != REC_DTYPE or recs.ndim != 1 or not recs.flags.c_contiguous:
        raise ValueError("recs must be a 1-d C-contiguous array of REC_DTYPE, got %r %r"
                         % (recs.dtype, recs.shape))
    r = <const rec_t*>cnp.PyArray_DATA(arr)
    for i in range(arr.shape[0]):
        if r[i].off > <uint64_t>nbytes or r[i].caplen > <uint64_t>nbytes - r[i].off:
            raise ValueError("record %d: off %d + caplen %d is beyond the %d-byte buffer"
                             % (i, r[i].off, r[i].caplen, nbytes))
    return 0


def decode_columns(const uint8_t[::1] data, recs):
    """Decode every record of a batch; returns a dict of numpy columns.

    `data` is the batch buffer, `recs` a REC_DTYPE array locating frames in it.
    Columns: error (u2), ipver, proto (u1), flags (u2), nvlan (u1), vlan ((n, MAX_VLANS)
    u2), sport, dport (u2), src, dst ((n, 16) u1), gre_ver (u1), gre_ptype (u2),
    gre_key, spi (u4), tcp_flags (u1), l4_off, l4_len, frag_id (u4).  A stripped VLAN tag
    (rec.vlan_tpid != 0) is restored as the outermost VLAN id.
    """
    cdef Py_ssize_t nbytes = data.shape[0]
    check_recs(recs, nbytes)
    cdef const rec_t* r = <const rec_t*>cnp.PyArray_DATA(<cnp.ndarray>recs)
    cdef Py_ssize_t n = len(recs), i
    cdef const uint8_t* base = &data[0] if nbytes > 0 else NULL
    cdef pkt_t p
    cols = {
        "error": np.zeros(n, np.uint16), "ipver": np.zeros(n, np.uint8),
        "proto": np.zeros(n, np.uint8), "flags": np.zeros(n, np.uint16),
        "nvlan": np.zeros(n, np.uint8), "vlan": np.zeros((n, MAX_VLANS), np.uint16),
        "sport": np.zeros(n, np.uint16), "dport": np.zeros(n, np.uint16),
        "src": np.zeros((n, 16), np.uint8), "dst": np.zeros((n, 16), np.uint8),
        "gre_ver": np.zeros(n, np.uint8), "gre_ptype": np.zeros(n, np.uint16),
        "gre_key": np.zeros(n, np.uint32), "spi": np.zeros(n, np.uint32),
        "tcp_flags": np.zeros(n, np.uint8), "l4_off": np.zeros(n, np.uint32),
        "l4_len": np.zeros(n, np.uint32), "frag_id": np.zeros(n, np.uint32),
    }
    cdef uint16_t[::1] c_error = cols["error"]
    cdef uint8_t[::1] c_ipver = cols["ipver"]
    cdef uint8_t[::1] c_proto = cols["proto"]
    cdef uint16_t[::1] c_flags = cols["flags"]
    cdef uint8_t[::1] c_nvlan = cols["nvlan"]
    cdef uint16_t[:, ::1] c_vlan = cols["vlan"]
    cdef uint16_t[::1] c_sport = cols["sport"]
    cdef uint16_t[::1] c_dport = cols["dport"]
    cdef uint8_t[:, ::1] c_src = cols["src"]
    cdef uint8_t[:, ::1] c_dst = cols["dst"]
    cdef uint8_t[::1] c_gre_ver = cols["gre_ver"]
    cdef uint16_t[::1] c_gre_ptype = cols["gre_ptype"]
    cdef uint32_t[::1] c_gre_key = cols["gre_key"]
    cdef uint32_t[::1] c_spi = cols["spi"]
    cdef uint8_t[::1] c_tcp_flags = cols["tcp_flags"]
    cdef uint32_t[::1] c_l4_off = cols["l4_off"]
    cdef uint32_t[::1] c_l4_len = cols["l4_len"]
    cdef uint32_t[::1] c_frag_id = cols["frag_id"]
    cdef int k
    with nogil:
        for i in range(n):
            if i + PREFETCH_AHEAD < n:
                NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
            decode_record(base, &r[i], &p)
            c_error[i] = p.error
            c_ipver[i] = p.ipver
            c_proto[i] = p.proto
            c_flags[i] = p.flags
            c_nvlan[i] = p.nvlan
            for k in range(MAX_VLANS):
                c_vlan[i, k] = p.vlan[k]
            c_sport[i] = p.sport
            c_dport[i] = p.dport
            memcpy(&c_src[i, 0], p.src, 16)
            memcpy(&c_dst[i, 0], p.dst, 16)
            c_gre_ver[i] = p.gre_ver
            c_gre_ptype[i] = p.gre_ptype
            c_gre_key[i] = p.gre_key
            c_spi[i] = p.spi
            c_tcp_flags[i] = p.tcp_flags
            c_l4_off[i] = p.l4_off
            c_l4_len[i] = p.l4_len
            c_frag_id[i] = p.frag_id
    return cols


def decode_error_counts(const uint8_t[::1] data, recs):
    """Decode every record of a batch and only count reasons: a uint64 array indexed
    by error id (index 0 = decoded fully), summing to len(recs).  The decode cost
    without the column stores of decode_columns() (what the pipeline pays)."""
    cdef Py_ssize_t nbytes = data.shape[0]
    check_recs(recs, nbytes)
    cdef const rec_t* r = <const rec_t*>cnp.PyArray_DATA(<cnp.ndarray>recs)
    cdef Py_ssize_t n = len(recs), i
    cdef const uint8_t* base = &data[0] if nbytes > 0 else NULL
    cdef pkt_t p
    counts = np.zeros(ERR_COUNT, np.uint64)
    cdef uint64_t[::1] c = counts
    with nogil:
        for i in range(n):
            if i + PREFETCH_AHEAD < n:
                NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
            decode_packet(base + r[i].off, r[i].caplen, r[i].linktype, &p)
            c[p.error] += 1
    return counts


def _addr_text(int ipver, bytes raw):
    import ipaddress
    if ipver == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    if ipver == 6:
        return str(ipaddress.IPv6Address(raw))
    return None


def decode_one(bytes frame, int linktype, int vlan_tci=-1):
    """Decode one frame (for tests and debugging) into a dict of Python values.

    `vlan_tci` >= 0 restores a kernel-stripped tag as decode_columns does.
    Keys: error (reason name or None), error_id, ipver, proto, flags, vlan (list of
    the stored ids), nvlan, sport, dport, src, dst (text or None), src_bytes,
    dst_bytes, tcp_flags, gre_ver, gre_ptype, gre_key, spi, l3_off, l4_off, l4_len,
    frag_id (IP Identification of a fragment, else 0).
    """
    cdef pkt_t p
    cdef rec_t r
    cdef const uint8_t* buf = <const uint8_t*><const char*>frame
    if linktype < 0:
        raise ValueError("linktype must be >= 0")
    decode_packet(buf, <uint32_t>len(frame), <uint32_t>linktype, &p)
    if vlan_tci >= 0:
        memset(&r, 0, sizeof(rec_t))
        r.vlan_tpid = 0x8100
        r.vlan_tci = <uint16_t>vlan_tci
        restore_vlan(&r, &p)
    ip = p.flags & PF_IP
    src = (<char*>p.src)[:16]
    dst = (<char*>p.dst)[:16]
    return {
        "error": ERROR_NAMES[p.error], "error_id": p.error,
        "ipver": p.ipver, "proto": p.proto, "flags": p.flags,
        "vlan": [p.vlan[k] for k in range(min(p.nvlan, MAX_VLANS))], "nvlan": p.nvlan,
        "sport": p.sport, "dport": p.dport,
        "src": _addr_text(p.ipver, src) if ip else None,
        "dst": _addr_text(p.ipver, dst) if ip else None,
        "src_bytes": src, "dst_bytes": dst, "src4": p.src4, "dst4": p.dst4,
        "tcp_flags": p.tcp_flags, "gre_ver": p.gre_ver, "gre_ptype": p.gre_ptype,
        "gre_key": p.gre_key, "spi": p.spi,
        "l3_off": p.l3_off, "l4_off": p.l4_off, "l4_len": p.l4_len, "frag_id": p.frag_id,
    }


def error_counts(errors):
    """{reason name: packets} for an `error` column (reason None = decoded fully)."""
    counts = np.bincount(np.asarray(errors, dtype=np.uint16).astype(np.intp),
                         minlength=len(ERROR_NAMES))
    if len(counts) > len(ERROR_NAMES):
        raise ValueError("unknown error id %d" % (len(counts) - 1))
    return {ERROR_NAMES[i]: int(c) for i, c in enumerate(counts) if c}


DECODE_FLAGS = {"PF_IP": PF_IP, "PF_PROTO": PF_PROTO, "PF_PORTS": PF_PORTS,
                "PF_FRAG": PF_FRAG, "PF_FRAG_FIRST": PF_FRAG_FIRST, "PF_GRE": PF_GRE,
                "PF_SPI": PF_SPI, "PF_PAYLOAD": PF_PAYLOAD}
MAX_VLAN_IDS = MAX_VLANS
