# Signature tables and the per-packet tagger.
#
# nkstream/rules.py validates the TOML rules (docs/signatures.md) and hands plain
# Python lists to RuleCore, which compiles them into the flat tables below.  The
# pipeline reads RuleCore.r once per batch and calls tag_packet() per packet: a few
# array loads for ports / IP protocol / peer-label hints, one bucket of payload
# signatures selected by the first payload byte, and, for a TCP payload that starts
# like a TLS handshake record, a bounded ClientHello walk and a suffix-hash lookup of
# the SNI.  Nothing is allocated and no Python object is touched per packet.
#
# Every candidate verdict is a packed uint32 `prio << 16 | tag`; the highest priority
# wins, ties go to the candidate found first (payload, SNI, GRE, port, IP protocol,
# peer-label hint).  rules.py gives each rule class a default priority (payload 200,
# port/protocol/GRE 100, peer-label hint 50) so that, unless a rule says otherwise,
# payload signature > port/protocol > peer-label hint > unknown.

cdef enum:
    SIG_PAT_MAX = 64          # bytes a payload pattern may span (offset excluded)
    SNI_NAME_MAX = 255        # RFC 1035 limit on a domain name; RFC 6066 HostName
    GRE_RULES_MAX = 16        # GRE rules are looked at only when PF_GRE is set
    NEEDLE_WINDOW_MAX = 4096  # largest `within` a `contains` condition may scan

cdef enum:
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_SCTP = 132

# Payload signatures are bucketed per transport as well as per first byte: a TCP
# payload never walks past the UDP-only signatures (DNS, QUIC, WireGuard...) and the
# other way round.  Everything else (SCTP, a payload without a known protocol) shares
# the third class, whose signatures still check their protocol.
cdef enum:
    SIG_CLASS_TCP = 0
    SIG_CLASS_UDP = 1
    SIG_CLASS_OTHER = 2

# One compiled payload signature.  Byte i of the pattern matches payload byte
# (off + i) when lo[i] <= (byte & mask[i]) <= hi[i]: an exact byte is mask 0xff,
# lo == hi; a masked byte lo == hi == value & mask; a range mask 0xff, lo < hi; a
# wildcard mask 0.
ctypedef struct paysig_t:
    uint8_t  qfull            # its quick-reject word (sigref_t) is the whole pattern
    uint8_t  proto            # 0: any transport; else the IP protocol number
    uint8_t  has_ports        # restricted to packets with either port in [port_lo, port_hi]
    uint8_t  length_prefix    # big-endian uint16 at payload[0] == l4_len - 2 (TCP framing)
    uint32_t verdict          # prio << 16 | tag
    uint16_t off              # offset of the pattern in the L4 payload
    uint16_t patlen
    uint16_t port_lo, port_hi
    uint16_t len_mod          # l4_len % len_mod == 0 (0: no condition)
    uint16_t needle_len       # 0: no `contains` condition
    uint32_t min_len, max_len # bounds on l4_len (captured payload bytes)
    uint32_t needle_off       # into rules_t.needles
    uint32_t within           # `contains` searches payload[0 : min(l4_len, within)]
    uint8_t  mask[SIG_PAT_MAX]
    uint8_t  lo[SIG_PAT_MAX]
    uint8_t  hi[SIG_PAT_MAX]

# A signature's entry in a bucket: what the walk reads before the signature itself.
# Quick reject (one 8-byte load per payload): payload bytes [0, 8) masked by qmask
# must equal qval, a necessary condition of the pattern (its exact bits, and the high
# bits a range's ends share, at off + j < 8), checked when l4_len >= 8.
# When that word is the whole pattern (off + patlen <= 8, every byte exact or a
# wildcard: paysig_t.qfull) the byte loop is skipped once it passed.
ctypedef struct sigref_t:
    uint64_t qmask, qval
    uint32_t verdict
    uint32_t sig              # index into rules_t.sigs

# The signatures a payload's transport class and first byte select: refs[start :
# start + count], highest priority first; `top` is the first one's priority (0: none),
# so a bucket whose best is below what the tables already gave is skipped unread.
ctypedef struct sigbucket_t:
    uint32_t start
    uint16_t count
    uint16_t top

ctypedef struct suffix_t:
    uint64_t hash             # sni_hash_rev() of the lower-case suffix
    uint32_t name_off         # into rules_t.names (lower case, no trailing dot)
    uint32_t name_len
    uint32_t label            # peer-label id the SNI selects (0: none)
    uint32_t verdict          # prio << 16 | tag override (0: none)

ctypedef struct gre_rule_t:
    uint32_t verdict
    uint16_t ptype
    uint8_t  ver
    uint8_t  any_ptype

ctypedef struct rules_t:
    uint32_t* port_tab[3]     # TCP, UDP, SCTP: 65536 verdicts each (0: no rule)
    uint32_t* port_by_proto[256]  # IP protocol -> its port_tab, NULL: no ports (a load, not a branch per protocol)
    uint32_t  proto_tab[256]  # by IP protocol number
    gre_rule_t gre[GRE_RULES_MAX]
    uint32_t  n_gre
    paysig_t* sigs            # sorted by priority, highest first
    uint32_t  n_sigs
    # Signatures a payload can match, by transport class (SIG_CLASS_*) and first
    # payload byte b: buckets[c][b]
    sigbucket_t buckets[3][256]
    sigref_t* refs
    uint8_t   sig_class[256]  # IP protocol -> SIG_CLASS_*
    uint32_t* hints           # by peer-label id
    uint32_t  n_hints
    suffix_t* suffixes
    uint32_t  n_suffixes
    uint32_t* sfx_slots       # open addressing, suffix index + 1 (0: empty)
    uint32_t  sfx_mask        # slots - 1 (power of two, at most half full)
    char*     names
    uint8_t*  needles


# ---------------------------------------------------------------------------
# Payload signatures

cdef inline bint _contains(const uint8_t* h, uint32_t hn, const uint8_t* nd,
                           uint32_t nn) noexcept nogil:
    # Bounded memmem: the window is capped at compile time (NEEDLE_WINDOW_MAX).
    cdef uint32_t i
    cdef uint8_t first
    if nn == 0:
        return True
    if nn > hn:
        return False
    first = nd[0]
    for i in range(hn - nn + 1):
        if h[i] == first and memcmp(h + i, nd, nn) == 0:
            return True
    return False


cdef inline bint _sig_match(const rules_t* r, const paysig_t* s, const pkt_t* p,
                            const uint8_t* pl, uint32_t n, bint quick) noexcept nogil:
    # `quick`: the payload passed the signature's quick-reject word
    cdef uint32_t i, end
    cdef uint8_t b
    if s.proto != 0 and ((p.flags & PF_PROTO) == 0 or p.proto != s.proto):
        return False
    if n < s.min_len or n > s.max_len:
        return False
    if s.len_mod != 0 and n % s.len_mod != 0:
        return False
    if s.has_ports:
        if (p.flags & PF_PORTS) == 0:
            return False
        if not ((s.port_lo <= p.sport <= s.port_hi) or (s.port_lo <= p.dport <= s.port_hi)):
            return False
    end = <uint32_t>s.off + s.patlen
    if end > n:
        return False
    if not (quick and s.qfull):
        for i in range(s.patlen):
            b = pl[s.off + i] & s.mask[i]
            if b < s.lo[i] or b > s.hi[i]:
                return False
    if s.length_prefix:
        if n < 2 or ((<uint32_t>pl[0] << 8) | pl[1]) + 2 != n:
            return False
    if s.needle_len != 0:
        end = n if n < s.within else s.within
        if not _contains(pl, end, r.needles + s.needle_off, s.needle_len):
            return False
    return True


cdef inline uint32_t _match_payload(const rules_t* r, const pkt_t* p, const uint8_t* pl,
                                    uint32_t n, uint32_t floor) noexcept nogil:
    # Only the signatures whose pattern admits this first byte are looked at, highest
    # priority first; the walk stops as soon as the rest are below `floor` (the
    # priority the port / protocol / hint tables already gave: a payload signature
    # wins a tie, so one of equal priority is still tried).  0: no match.
    cdef const sigbucket_t* b = &r.buckets[r.sig_class[p.proto] if (p.flags & PF_PROTO)
                                           else SIG_CLASS_OTHER][pl[0]]
    cdef const sigref_t* e
    cdef const sigref_t* end
    cdef uint64_t q
    if b.top < floor:
        return 0
    e = r.refs + b.start
    end = e + b.count
    # Two loops, not one testing `n >= 8` per signature: the merged loop measured
    # ~1 ns a packet slower on the benchmark capture.
    if n >= 8:
        memcpy(&q, pl, 8)
        while e < end:
            if (e.verdict >> 16) < floor:
                break
            if (q & e.qmask) == e.qval and _sig_match(r, &r.sigs[e.sig], p, pl, n, True):
                return e.verdict
            e += 1
    else:
        while e < end:
            if (e.verdict >> 16) < floor:
                break
            if _sig_match(r, &r.sigs[e.sig], p, pl, n, False):
                return e.verdict
            e += 1
    return 0


# ---------------------------------------------------------------------------
# TLS ClientHello server_name (RFC 8446 §4.1.2, RFC 6066 §3)

cdef inline uint32_t _be16(const uint8_t* b) noexcept nogil:
    return (<uint32_t>b[0] << 8) | b[1]


cdef int sni_find(const uint8_t* p, uint32_t n, uint32_t* name_off,
                  uint32_t* name_len) noexcept nogil:
    """Locate the host_name in a ClientHello at the start of a TCP payload.

    Returns 1 and the name's offset/length in `p` when found within the captured
    bytes, else 0.  Every length field is checked against the end of the enclosing
    structure and against the captured bytes, so a truncated or hostile hello yields
    0, never a read past `n`.  A hello whose server_name extension lies beyond this
    segment (large hellos span TCP segments) is not found: there is no reassembly.
    """
    cdef uint32_t end, pos, hs_end, ext_end, ext_type, ext_len, list_end, nlen
    if n < 9 or p[0] != 0x16 or p[1] != 0x03 or p[5] != 0x01:
        return 0
    # record: type(1) version(2) length(2); the handshake fills the record.
    end = 5 + _be16(p + 3)
    if end > n:
        end = n
    # handshake: msg_type(1) length(3)
    hs_end = 9 + ((<uint32_t>p[6] << 16) | (<uint32_t>p[7] << 8) | p[8])
    if hs_end < end:
        end = hs_end
    pos = 9 + 2 + 32                  # legacy_version, random
    if pos + 1 > end:
        return 0
    pos += 1 + p[pos]                 # legacy_session_id <0..32>
    if pos + 2 > end:
        return 0
    pos += 2 + _be16(p + pos)         # cipher_suites <2..2^16-2>
    if pos + 1 > end:
        return 0
    pos += 1 + p[pos]                 # legacy_compression_methods <1..2^8-1>
    if pos + 2 > end:
        return 0
    ext_end = pos + 2 + _be16(p + pos)
    pos += 2
    if ext_end > end:
        ext_end = end
    while pos + 4 <= ext_end:
        ext_type = _be16(p + pos)
        ext_len = _be16(p + pos + 2)
        pos += 4
        if ext_type == 0:             # server_name
            if pos + 2 > ext_end or ext_len < 2:
                return 0
            list_end = pos + 2 + _be16(p + pos)
            if list_end > pos + ext_len:
                return 0
            if list_end > ext_end:
                list_end = ext_end
            pos += 2
            while pos + 3 <= list_end:
                nlen = _be16(p + pos + 1)
                if p[pos] == 0:       # NameType host_name
                    if nlen == 0 or nlen > SNI_NAME_MAX or pos + 3 + nlen > list_end:
                        return 0
                    name_off[0] = pos + 3
                    name_len[0] = nlen
                    return 1
                pos += 3 + nlen
            return 0
        pos += ext_len
    return 0


cdef inline uint8_t _lower(uint8_t c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline uint64_t _fnv_step(uint64_t h, uint8_t c) noexcept nogil:
    return (h ^ c) * <uint64_t>1099511628211ULL


cdef uint64_t sni_hash_rev(const uint8_t* s, uint32_t n) noexcept nogil:
    """FNV-1a over the lower-cased name read from its last byte to its first, so the
    lookup can hash every label-boundary suffix of a name in one right-to-left pass."""
    cdef uint64_t h = <uint64_t>14695981039346656037ULL
    cdef uint32_t i = n
    while i > 0:
        i -= 1
        h = _fnv_step(h, _lower(s[i]))
    return h


cdef inline bint _sfx_equal(const rules_t* r, const suffix_t* e, const uint8_t* s,
                            uint32_t n) noexcept nogil:
    cdef uint32_t i
    cdef const char* t = r.names + e.name_off
    if e.name_len != n:
        return False
    for i in range(n):
        if _lower(s[i]) != <uint8_t>t[i]:
            return False
    return True


cdef int sni_lookup(const rules_t* r, const uint8_t* name, uint32_t n) noexcept nogil:
    """Index of the longest suffix rule matching `name` at a label boundary, or -1.

    `fbcdn.net` matches `fbcdn.net` and `x.fbcdn.net`, never `xfbcdn.net`; case is
    ignored; one trailing dot (a fully qualified name) is ignored.
    """
    cdef uint64_t h = <uint64_t>14695981039346656037ULL
    cdef uint32_t i, slot, idx
    cdef int best = -1
    if r.n_suffixes == 0 or n == 0:
        return -1
    if name[n - 1] == 46:             # '.'
        n -= 1
    i = n
    while i > 0:
        i -= 1
        h = _fnv_step(h, _lower(name[i]))
        if i == 0 or name[i - 1] == 46:
            slot = <uint32_t>(h & r.sfx_mask)
            while True:
                idx = r.sfx_slots[slot]
                if idx == 0:
                    break
                if r.suffixes[idx - 1].hash == h and _sfx_equal(
                        r, &r.suffixes[idx - 1], name + i, n - i):
                    best = <int>(idx - 1)   # later (longer) matches replace shorter
                    break
                slot = (slot + 1) & r.sfx_mask
    return best


# ---------------------------------------------------------------------------
# Ports

cdef inline uint32_t _port_pick(const uint32_t* tab, uint16_t sport,
                                uint16_t dport) noexcept nogil:
    # Server-side preference: when both ports carry a rule, the rule with the higher
    # priority wins; at equal priority the lower port number (the well-known / server
    # side; clients use ephemeral ports, RFC 6335 §6) wins.
    # Written as one comparison of scores (priority, then the lower-port bit; an
    # empty entry scores 0) rather than a branch per case: on a traffic mix every one
    # of those branches is a coin toss the CPU mispredicts.
    cdef uint32_t es = tab[sport], ed = tab[dport]
    cdef uint32_t ss = ((es >> 16) << 1) | (sport <= dport)
    cdef uint32_t sd = ((ed >> 16) << 1) | (dport < sport)
    ss = ss if es != 0 else 0
    sd = sd if ed != 0 else 0
    return es if ss >= sd else ed


cdef inline uint32_t _better(uint32_t cand, uint32_t best) noexcept nogil:
    # cand's priority above best's: cand above every verdict of best's priority
    return cand if cand > (best | 0xFFFFu) else best


cdef inline uint32_t _inner_verdict(const rules_t* r, const uint8_t* pl,
                                   uint32_t n) noexcept nogil:
    # The table verdict of the IP header inside an IP-in-IP / 6in4 packet (one level,
    # no extension headers): GRE version + protocol type (PPTP's data channel rides in
    # IPv4-in-IPv6 in zeek__tunnels_gre-pptp.pcap), else the inner ports and protocol.
    # `pl`/`n` are the captured bytes after the outer header; 0 = no verdict.
    cdef uint32_t hl, v = 0
    cdef uint8_t proto
    cdef int k
    cdef const uint32_t* tab = NULL
    if n < 20:
        return 0
    if (pl[0] >> 4) == 4:
        hl = (pl[0] & 0x0F) * 4                     # RFC 791: IHL in 32-bit words
        if hl < 20 or hl > n:
            return 0
        proto = pl[9]
        if ((pl[6] & 0x1F) << 8 | pl[7]) != 0:      # a non-first fragment: no L4 header
            return r.proto_tab[proto]
    elif (pl[0] >> 4) == 6:
        hl = 40                                      # RFC 8200 fixed header
        if n < hl:
            return 0
        proto = pl[6]
    else:
        return 0
    if proto == 47:
        if hl + 4 <= n:
            for k in range(<int>r.n_gre):
                if (r.gre[k].ver == (pl[hl + 1] & 0x07) and
                        (r.gre[k].any_ptype or
                         r.gre[k].ptype == ((<uint16_t>pl[hl + 2] << 8) | pl[hl + 3]))):
                    v = r.gre[k].verdict
                    break
    elif proto == PROTO_TCP or proto == PROTO_UDP or proto == PROTO_SCTP:
        if hl + 4 <= n:
            tab = r.port_by_proto[proto]
            v = _port_pick(tab, (<uint16_t>pl[hl] << 8) | pl[hl + 1],
                           (<uint16_t>pl[hl + 2] << 8) | pl[hl + 3])
    return _better(r.proto_tab[proto], v)


cdef uint16_t tag_packet(const rules_t* r, const pkt_t* p, const uint8_t* frame,
                         uint32_t peer_label, uint32_t* sni_label) noexcept nogil:
    """Tag id of one decoded packet (0 = unknown); see docs/signatures.md.

    `*sni_label` is set to the service label of a matched ClientHello SNI, else left
    as the caller set it (0).
    """
    cdef uint8_t strong = 0
    return tag_packet_ex(r, p, frame, peer_label, sni_label, &strong)


cdef inline uint16_t tag_packet_ex(const rules_t* r, const pkt_t* p, const uint8_t* frame,
                                   uint32_t peer_label, uint32_t* sni_label,
                                   uint8_t* strong) noexcept nogil:
    """tag_packet() that also says where the verdict came from: `*strong` is set to 1
    when the winning verdict is a payload signature or a ClientHello SNI, or an SNI
    named a service label (the flow table fixes a flow's verdict on such a packet),
    and left as the caller set it (0) when it came from the port / protocol / GRE /
    peer-label tables or nothing matched."""
    cdef uint32_t best = 0, tb = 0, sb = 0, n, off, nlen
    cdef uint16_t f = p.flags
    cdef int k
    cdef const uint8_t* pl
    cdef const suffix_t* sx
    cdef const uint32_t* tab
    # Table verdicts first (a few loads): they set the floor below which no payload
    # signature needs to be tried.  More specific before less specific, so that at
    # equal priority the GRE rule beats the IP protocol 47 rule and a port rule
    # beats its transport's protocol rule.
    if f & PF_GRE:
        for k in range(<int>r.n_gre):
            if r.gre[k].ver == p.gre_ver and (r.gre[k].any_ptype or r.gre[k].ptype == p.gre_ptype):
                tb = r.gre[k].verdict
                break
    if f & PF_PROTO:
        if f & PF_PORTS:
            tab = r.port_by_proto[p.proto]
            if tab != NULL:
                tb = _better(_port_pick(tab, p.sport, p.dport), tb)
        if (p.proto == 4 or p.proto == 41) and (f & PF_PAYLOAD):
            # IP-in-IP: what the inner header says, when the rules say anything about
            # it, is what the tunnel carries; else the outer protocol (ip-in-ip).
            tb = _inner_verdict(r, frame + p.l4_off, p.l4_len)
            if tb == 0:
                tb = r.proto_tab[p.proto]
            f = f & ~PF_PAYLOAD        # an IP header, not an L4 payload to match
        else:
            tb = _better(r.proto_tab[p.proto], tb)
    if peer_label < r.n_hints:
        tb = _better(r.hints[peer_label], tb)
    if (f & PF_PAYLOAD) and p.l4_len != 0:
        pl = frame + p.l4_off
        n = p.l4_len
        if r.n_sigs != 0:
            best = _match_payload(r, p, pl, n, tb >> 16)
        if (r.n_suffixes != 0 and pl[0] == 0x16 and (f & PF_PROTO) and p.proto == PROTO_TCP
                and sni_find(pl, n, &off, &nlen)):
            k = sni_lookup(r, pl + off, nlen)
            if k >= 0:
                sx = &r.suffixes[k]
                sb = sx.verdict
                if sx.label != 0:
                    sni_label[0] = sx.label
                    # The SNI names the service more precisely than the address:
                    # its hint (e.g. youtube -> video) applies to this packet.
                    if sx.label < r.n_hints:
                        sb = _better(r.hints[sx.label], sb)
    # ties: payload, then SNI, then the tables
    best = _better(sb, best)
    if best != 0 and (tb >> 16) <= (best >> 16):
        strong[0] = 1
    elif sni_label[0] != 0:
        strong[0] = 1
    best = _better(tb, best)
    return <uint16_t>(best & 0xFFFF)


# ---------------------------------------------------------------------------
# Python side: compiled tables, inspection and test entries

_PORT_PROTOS = {6: 0, 17: 1, 132: 2}


cdef tuple _sig_quick(paysig_t* s, list pat):
    # The quick-reject word of a signature (sigref_t.qmask/qval, returned), over
    # payload bytes [0, 8): for each pattern byte that falls there, the bits any
    # matching byte must have -- all of a masked exact byte, the high bits the two
    # ends of a range share -- and whether that word alone decides the pattern
    # (s.qfull).
    cdef int j, at
    qm = bytearray(8)
    qv = bytearray(8)
    full = s.off + len(pat) <= 8
    for j, (m, lo, hi) in enumerate(pat):
        at = s.off + j
        if at >= 8:
            break
        low = (1 << (lo ^ hi).bit_length()) - 1
        qm[at] = m & ~low & 0xFF
        qv[at] = lo & qm[at]
        exact = ((m == 0 and lo == 0) or (lo == hi and (lo & ~m) == 0)
                 or (m == 0xFF and (lo & low) == 0 and hi == (lo | low)))
        full = full and exact
    s.qfull = full
    return int.from_bytes(qm, sys.byteorder), int.from_bytes(qv, sys.byteorder)


cdef class RuleCore:
    """Compiled signature tables (`rules_t`), built by `nkstream.rules.Rules.compile`.

    The pipeline takes `.r` once per batch.  Memory: 3 x 256 KiB port tables, plus
    about 140 bytes per payload signature (x up to 256 bucket entries of 4 bytes),
    40 bytes + the name per SNI suffix, 4 bytes per peer label.
    """
    cdef rules_t* r
    cdef readonly tuple tags

    def __cinit__(self):
        self.r = <rules_t*>calloc(1, sizeof(rules_t))
        if self.r == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef int i
        if self.r != NULL:
            for i in range(3):
                free(self.r.port_tab[i])
            free(self.r.sigs)
            free(self.r.refs)
            free(self.r.hints)
            free(self.r.suffixes)
            free(self.r.sfx_slots)
            free(self.r.names)
            free(self.r.needles)
            free(self.r)
            self.r = NULL

    def __init__(self, tags, ports=(), protocols=(), gre=(), payload=(), hints=(),
                 suffixes=(), n_labels=1):
        """Build from validated, priority-resolved lists (see nkstream/rules.py):

        ports:     (ipproto, lo, hi, tag, prio), applied in order (later overrides
                   an entry of equal or lower priority)
        protocols: (ipproto, tag, prio)
        gre:       (version, ptype or None, tag, prio)
        payload:   dicts with keys pattern (list of (mask, lo, hi)), offset, proto,
                   ports ((lo, hi) or None), min_len, max_len, len_mod,
                   length_prefix, needle (bytes or None), within, tag, prio
        hints:     (label_id, tag, prio)
        suffixes:  (suffix, label_id, tag, prio)
        """
        cdef rules_t* r = self.r
        cdef uint32_t v, i, j, nb, cnt, slot
        cdef paysig_t* s
        cdef uint8_t b
        cdef uint32_t* t
        self.tags = tuple(tags)
        ntags = len(self.tags)

        def verdict(tag, prio):
            if not (0 < tag < ntags) or not (1 <= prio <= 255):
                raise ValueError(f"bad tag id {tag} or priority {prio}")
            return (prio << 16) | tag

        for i in range(3):
            r.port_tab[i] = <uint32_t*>calloc(65536, sizeof(uint32_t))
            if r.port_tab[i] == NULL:
                raise MemoryError()
        r.port_by_proto[PROTO_TCP] = r.port_tab[0]
        r.port_by_proto[PROTO_UDP] = r.port_tab[1]
        r.port_by_proto[PROTO_SCTP] = r.port_tab[2]
        for proto, lo, hi, tag, prio in ports:
            v = verdict(tag, prio)
            t = r.port_tab[_PORT_PROTOS[proto]]
            for j in range(lo, hi + 1):
                if (t[j] >> 16) <= prio:
                    t[j] = v
        for proto, tag, prio in protocols:
            v = verdict(tag, prio)
            if (r.proto_tab[proto] >> 16) <= prio:
                r.proto_tab[proto] = v
        if len(gre) > GRE_RULES_MAX:
            raise ValueError(f"at most {GRE_RULES_MAX} GRE rules")
        # most specific (a protocol type given) first, then by priority
        gre = sorted(gre, key=lambda g: (g[1] is None, -g[3]))
        for i, (ver, ptype, tag, prio) in enumerate(gre):
            r.gre[i].verdict = verdict(tag, prio)
            r.gre[i].ver = ver
            r.gre[i].any_ptype = ptype is None
            r.gre[i].ptype = 0 if ptype is None else ptype
        r.n_gre = len(gre)

        # payload signatures, highest priority first (stable: file order within one)
        payload = sorted(payload, key=lambda d: -d["prio"])
        needles = bytearray()
        quick = []                  # (qmask, qval) per signature, for its bucket entries
        r.n_sigs = len(payload)
        if r.n_sigs:
            r.sigs = <paysig_t*>calloc(r.n_sigs, sizeof(paysig_t))
            if r.sigs == NULL:
                raise MemoryError()
        for i, d in enumerate(payload):
            s = &r.sigs[i]
            pat = d["pattern"]
            if len(pat) > SIG_PAT_MAX:
                raise ValueError(f"pattern longer than {SIG_PAT_MAX} bytes")
            for j, (m, lo, hi) in enumerate(pat):
                s.mask[j] = m
                s.lo[j] = lo
                s.hi[j] = hi
            s.patlen = len(pat)
            s.off = d["offset"]
            quick.append(_sig_quick(s, pat))
            s.verdict = verdict(d["tag"], d["prio"])
            s.proto = d["proto"] or 0
            if d["ports"] is not None:
                s.has_ports = 1
                s.port_lo, s.port_hi = d["ports"]
            s.length_prefix = bool(d["length_prefix"])
            s.len_mod = d["len_mod"] or 0
            s.min_len = d["min_len"] or 0
            s.max_len = 0xFFFFFFFF if d["max_len"] is None else d["max_len"]
            nd = d["needle"]
            if nd:
                s.needle_off = len(needles)
                s.needle_len = len(nd)
                s.within = min(d["within"], NEEDLE_WINDOW_MAX)
                needles += nd
        if needles:
            r.needles = <uint8_t*>malloc(len(needles))
            if r.needles == NULL:
                raise MemoryError()
            for i in range(len(needles)):
                r.needles[i] = needles[i]
        # Bucket by transport class and first payload byte: a signature is in
        # bucket (c, b) when its protocol is c's (or any) and its pattern admits b at
        # payload offset 0 (always, if its pattern starts later).  Priority order is
        # kept within a bucket (the walk stops below the tables' floor).
        for i in range(256):
            r.sig_class[i] = SIG_CLASS_OTHER
        r.sig_class[PROTO_TCP] = SIG_CLASS_TCP
        r.sig_class[PROTO_UDP] = SIG_CLASS_UDP
        buckets = [[[] for _ in range(256)] for _ in range(3)]
        for i in range(r.n_sigs):
            s = &r.sigs[i]
            for c in range(3):
                if s.proto != 0 and r.sig_class[s.proto] != c:
                    continue
                for nb in range(256):
                    b = <uint8_t>nb
                    if s.off != 0 or s.patlen == 0 or s.lo[0] <= (b & s.mask[0]) <= s.hi[0]:
                        buckets[c][nb].append(i)
        cnt = sum(len(x) for bc in buckets for x in bc)
        if max(len(x) for bc in buckets for x in bc) > 0xFFFF:
            raise ValueError("more than 65535 payload signatures admit the same first "
                             "byte (sigbucket_t.count)")
        r.refs = <sigref_t*>malloc(max(cnt, 1) * sizeof(sigref_t))
        if r.refs == NULL:
            raise MemoryError()
        j = 0
        for c in range(3):
            for nb in range(256):
                r.buckets[c][nb].start = j
                r.buckets[c][nb].count = len(buckets[c][nb])
                r.buckets[c][nb].top = (r.sigs[buckets[c][nb][0]].verdict >> 16) if buckets[c][nb] else 0
                for i in buckets[c][nb]:
                    r.refs[j].qmask, r.refs[j].qval = quick[i]
                    r.refs[j].verdict = r.sigs[i].verdict
                    r.refs[j].sig = i
                    j += 1

        r.n_hints = max(n_labels, 1)
        r.hints = <uint32_t*>calloc(r.n_hints, sizeof(uint32_t))
        if r.hints == NULL:
            raise MemoryError()
        for label, tag, prio in hints:
            if not (0 < label < r.n_hints):
                raise ValueError(f"bad peer label id {label}")
            if (r.hints[label] >> 16) <= prio:
                r.hints[label] = verdict(tag, prio)

        # SNI suffixes: open addressing, at most half full
        names = bytearray()
        r.n_suffixes = len(suffixes)
        nb = 8
        while nb < 2 * r.n_suffixes:
            nb *= 2
        r.sfx_mask = nb - 1
        r.sfx_slots = <uint32_t*>calloc(nb, sizeof(uint32_t))
        r.suffixes = <suffix_t*>calloc(max(r.n_suffixes, 1), sizeof(suffix_t))
        if r.sfx_slots == NULL or r.suffixes == NULL:
            raise MemoryError()
        for i, (name, label, tag, prio) in enumerate(suffixes):
            nm = name.lower().rstrip(".").encode("ascii")
            if not nm or len(nm) > SNI_NAME_MAX:
                raise ValueError(f"bad SNI suffix {name!r}")
            r.suffixes[i].name_off = len(names)
            r.suffixes[i].name_len = len(nm)
            r.suffixes[i].hash = sni_hash_rev(nm, len(nm))
            r.suffixes[i].label = label or 0
            r.suffixes[i].verdict = verdict(tag, prio) if tag else 0
            names += nm
            slot = <uint32_t>(r.suffixes[i].hash & r.sfx_mask)
            while r.sfx_slots[slot] != 0:
                if r.suffixes[r.sfx_slots[slot] - 1].hash == r.suffixes[i].hash and \
                        names[r.suffixes[r.sfx_slots[slot] - 1].name_off:][:len(nm)] == nm and \
                        r.suffixes[r.sfx_slots[slot] - 1].name_len == len(nm):
                    raise ValueError(f"duplicate SNI suffix {name!r}")
                slot = (slot + 1) & r.sfx_mask
            r.sfx_slots[slot] = i + 1
        r.names = <char*>malloc(max(len(names), 1))
        if r.names == NULL:
            raise MemoryError()
        for i in range(len(names)):
            r.names[i] = names[i]

    def sni_service(self, name):
        """(label id, tag id) that the SNI `name` selects, or None (longest suffix)."""
        b = name.encode("ascii", "surrogateescape") if isinstance(name, str) else bytes(name)
        cdef const uint8_t* p = b
        cdef int k = sni_lookup(self.r, p, len(b))
        if k < 0:
            return None
        return (self.r.suffixes[k].label, self.r.suffixes[k].verdict & 0xFFFF)

    def port_verdict(self, int proto, int port):
        """(tag id, priority) of the port rule for one port, or (0, 0)."""
        cdef uint32_t v = self.r.port_tab[_PORT_PROTOS[proto]][port]
        return (v & 0xFFFF, v >> 16)

    @property
    def n_signatures(self):
        return self.r.n_sigs

    @property
    def n_suffixes(self):
        return self.r.n_suffixes

    def bucket_sizes(self, proto=None):
        """Payload signatures looked at for each first payload byte (256 ints) of a
        payload of IP protocol `proto`; None: the most over the transport classes."""
        cdef int c
        if proto is not None:
            c = self.r.sig_class[int(proto) & 0xFF]
            return [self.r.buckets[c][i].count for i in range(256)]
        return [max(self.r.buckets[c][i].count for c in range(3)) for i in range(256)]


def extract_sni(payload):
    """The server_name host_name of a TLS ClientHello at the start of `payload`
    (a TCP segment's payload), as str (latin-1), or None."""
    cdef const uint8_t[::1] mv = memoryview(bytes(payload)).cast("B")
    cdef uint32_t off = 0, nlen = 0
    if mv.shape[0] == 0:
        return None
    if sni_find(&mv[0], <uint32_t>mv.shape[0], &off, &nlen):
        return bytes(mv[off:off + nlen]).decode("latin-1")
    return None


def tag_fields(RuleCore rules, proto=None, sport=None, dport=None, payload=None,
               peer_label=0, gre_ver=None, gre_ptype=None):
    """Tag one packet given as fields instead of a frame: `(tag id, sni label id)`.

    Fills a real pkt_t (flags set for what is given: PF_PROTO for proto, PF_PORTS for
    ports, PF_PAYLOAD for payload, PF_GRE for GRE fields) and calls tag_packet();
    the inspection and unit-test entry of the tagger.
    """
    cdef pkt_t pkt
    cdef uint32_t sni = 0, label = peer_label
    cdef uint16_t tag
    cdef bytes buf = bytes(payload) if payload is not None else b""
    cdef const uint8_t* frame = buf
    memset(&pkt, 0, sizeof(pkt))
    if proto is not None:
        pkt.flags |= PF_PROTO
        pkt.proto = proto
    if sport is not None or dport is not None:
        pkt.flags |= PF_PORTS
        pkt.sport = sport or 0
        pkt.dport = dport or 0
    if payload is not None:
        pkt.flags |= PF_PAYLOAD
        pkt.l4_off = 0
        pkt.l4_len = len(buf)
    if gre_ver is not None:
        pkt.flags |= PF_GRE
        pkt.gre_ver = gre_ver
        pkt.gre_ptype = gre_ptype or 0
    with nogil:
        tag = tag_packet(rules.r, &pkt, frame, label, &sni)
    return tag, sni


def tag_columns(RuleCore rules, const uint8_t[::1] data, const uint16_t[::1] flags,
                const uint8_t[::1] proto, const uint16_t[::1] sport,
                const uint16_t[::1] dport, const uint32_t[::1] pay_off,
                const uint32_t[::1] pay_len, const uint32_t[::1] peer_label):
    """Tag many packets given as columns (PF_* flags, fields, payload offset/length
    into `data`): `(tags uint16 array, sni labels uint32 array)`.

    One Python call for the whole set: the benchmark entry of the tagger (the same
    per-packet C call the pipeline makes), and a bulk inspection helper.
    """
    cdef Py_ssize_t i, n = flags.shape[0]
    cdef pkt_t pkt
    cdef uint32_t sni
    cdef const uint8_t* base
    if not (proto.shape[0] == sport.shape[0] == dport.shape[0] == pay_off.shape[0]
            == pay_len.shape[0] == peer_label.shape[0] == n):
        raise ValueError("all columns must have the same length")
    for i in range(n):
        if (flags[i] & PF_PAYLOAD) and <uint64_t>pay_off[i] + pay_len[i] > <uint64_t>data.shape[0]:
            raise ValueError(f"packet {i}: payload [{pay_off[i]}, +{pay_len[i]}) outside data")
    tags = np.zeros(n, dtype=np.uint16)
    snis = np.zeros(n, dtype=np.uint32)
    cdef uint16_t[::1] t = tags
    cdef uint32_t[::1] s = snis
    base = &data[0] if data.shape[0] else NULL
    memset(&pkt, 0, sizeof(pkt))
    with nogil:
        for i in range(n):
            pkt.flags = flags[i]
            pkt.proto = proto[i]
            pkt.sport = sport[i]
            pkt.dport = dport[i]
            pkt.l4_off = pay_off[i]
            pkt.l4_len = pay_len[i] if base != NULL else 0
            sni = 0
            t[i] = tag_packet(rules.r, &pkt, base, peer_label[i], &sni)
            s[i] = sni
    return tags, snis
