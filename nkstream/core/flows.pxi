# Bounded flow table and flow verdicts (issue 6; docs/flows.md).
#
# A TLS ClientHello, a Bitcoin `version` message or a Stratum `mining.subscribe` is
# one packet, but the flow it opens carries the bytes an analyst wants attributed.
# The flow table remembers, per flow, the verdict reached on its first packets (a
# payload signature or a ClientHello SNI) and applies it to every later packet in
# both directions; packets seen before the verdict are held as per-flow pending
# counts and attributed to the verdict when it comes within the same window, or
# counted under their own per-packet (port / protocol / hint) tag and in the
# `pending_*` totals when the window closes or the flow ends first.
#
# Layout: open addressing with linear probing over `capacity` slots of one 64-byte
# cache line each, allocated once.  A key lives at most FLOW_PROBE_MAX - 1 slots past
# its home slot; a lookup stops at the first empty slot (deletion shifts entries
# back, Knuth TAOCP 6.4 Algorithm R, so a probe sequence never has a hole).
# Beside the slots, one byte per slot holds a fingerprint of its key's hash (0: the
# slot is empty), so the 32 slots of a probe window are 32 bytes, read with two
# vector compares: a lookup touches the one slot whose fingerprint matches (1 in
# 255 of the others match by chance) instead of walking slot lines, and the
# pipeline prefetches exactly that line (pipeline.pxi).  The bytes of slots 0..30
# are mirrored after the last slot, so a window that wraps is still one load.  When the
# FLOW_PROBE_MAX slots from the home slot are all taken by other flows, the flow in
# that window idle the longest is evicted (its pending counts are flushed first, the
# eviction is counted): the table never grows and no packet misses its flow silently.
#
# Time is the packets' capture time (rec_t.ts_ns), in units of 2**20 ns (~1.05 ms)
# kept in 32 bits and compared by signed difference: an offline file and a live
# capture age flows the same way, whatever the wall clock says.

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define NKS_PREFETCH_LINE(p) __builtin_prefetch((const void*)(p), 1, 3)
    #define NKS_CTZ32(x) ((uint32_t)__builtin_ctz(x))
    #else
    #define NKS_PREFETCH_LINE(p) ((void)(p))
    static inline uint32_t NKS_CTZ32(uint32_t x) { uint32_t n = 0; while (!(x & 1u)) { x >>= 1; n++; } return n; }
    #endif
    /* A prefetch the compiler must keep: gcc -O3 dropped the __builtin_prefetch of
       flow_prefetch(), whose address comes from the fingerprint scan. */
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define NKS_PREFETCH_KEEP(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char*)(p)))
    #else
    #define NKS_PREFETCH_KEEP(p) NKS_PREFETCH_LINE(p)
    #endif
    /* The 32 fingerprint bytes at w: bit j of the result is set when w[j] == v,
       bit j of *empty when w[j] == 0. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline uint32_t nks_fp_scan(const uint8_t* w, uint8_t v, uint32_t* empty) {
        const __m128i a = _mm_loadu_si128((const __m128i*)w);
        const __m128i b = _mm_loadu_si128((const __m128i*)(w + 16));
        const __m128i z = _mm_setzero_si128();
        const __m128i x = _mm_set1_epi8((char)v);
        *empty = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, z))
                 | ((uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, z)) << 16);
        return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, x))
               | ((uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, x)) << 16);
    }
    #else
    static inline uint32_t nks_fp_scan(const uint8_t* w, uint8_t v, uint32_t* empty) {
        uint32_t m = 0, e = 0;
        for (int j = 0; j < 32; j++) {
            m |= (uint32_t)(w[j] == v) << j;
            e |= (uint32_t)(w[j] == 0) << j;
        }
        *empty = e;
        return m;
    }
    #endif
    /* The 128-bit product of a and b folded to 64 bits (high half xor low half):
       every bit of either input moves most bits of the result (the mixing step of
       wyhash / MUM hashing), in one multiply. */
    #if defined(__SIZEOF_INT128__)
    static inline uint64_t nks_mum(uint64_t a, uint64_t b) {
        unsigned __int128 r = (unsigned __int128)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    }
    #else
    static inline uint64_t nks_mum(uint64_t a, uint64_t b) {
        uint64_t al = a & 0xFFFFFFFFu, ah = a >> 32, bl = b & 0xFFFFFFFFu, bh = b >> 32;
        uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
        uint64_t mid = (ll >> 32) + (lh & 0xFFFFFFFFu) + (hl & 0xFFFFFFFFu);
        uint64_t lo = (ll & 0xFFFFFFFFu) | (mid << 32);
        uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
        return lo ^ hi;
    }
    #endif
    """
    uint64_t nks_mum(uint64_t a, uint64_t b) noexcept nogil
    void NKS_PREFETCH_LINE(const void* p) noexcept nogil
    void NKS_PREFETCH_KEEP(const void* p) noexcept nogil
    uint32_t NKS_CTZ32(uint32_t x) noexcept nogil
    uint32_t nks_fp_scan(const uint8_t* w, uint8_t v, uint32_t* empty) noexcept nogil

cdef enum:
    FLOW_PROBE_MAX = 32       # slots a key may be displaced by (the eviction window)
    FLOW_TIME_SHIFT = 20      # time unit: 2**20 ns
    FRAG_SLOTS = 4096         # first-fragment memory (direct mapped)
    FLOW_BLOCK = 32           # packets decoded and prefetched a block ahead
    FP_PAD = 64               # fingerprint bytes after the last slot's: the mirror
                              # of slots 0..30 and room for a 32-byte load

# flow_t.state bits
cdef enum:
    FL_USED = 0x01
    FL_V6 = 0x02
    FL_STRONG = 0x04          # verdict fixed by a payload signature / SNI
    FL_GAVEUP = 0x08          # inspection budget spent without one: per-packet tags
    FL_FIN0 = 0x10            # FIN seen from the initiator
    FL_FIN1 = 0x20            # FIN seen from the responder
    FL_RST = 0x40
    FL_UNCOUNTED = 0x80       # the flow's start is not yet counted under a key

# Timeout classes (ftab_t.timeout)
cdef enum:
    FT_TCP = 0
    FT_TCP_CLOSED = 1
    FT_UDP = 2
    FT_OTHER = 3

cdef enum:
    TCPF_FIN = 0x01
    TCPF_SYN = 0x02
    TCPF_RST = 0x04
    TCPF_ACK = 0x10

# One flow: one cache line.  Addresses in the initiator's order (the first packet's
# src first); IPv4 in the first 4 bytes, the flow's cached lookups after (fside_t).  `ports` is the first packet's
# sport << 16 | dport for port protocols (TCP, UDP, UDP-Lite, SCTP), else the GRE
# key / call id or the ESP/AH SPI (0 when the protocol has none).  Index 0 of the
# per-direction arrays is the initiator's direction.
ctypedef struct flow_t:
    uint8_t  a[16]
    uint8_t  b[16]
    uint32_t ports
    uint32_t last             # last packet time, ts_ns >> FLOW_TIME_SHIFT (wraps)
    uint32_t sni              # service label the SNI gave (0: none)
    uint32_t pbytes[2]        # pending on-wire bytes per direction
    uint16_t tag              # the verdict (with FL_STRONG)
    uint16_t ftag[2]          # per-packet (fallback) tag of the pending packets
    uint8_t  pkts[2]          # pending packets per direction
    uint8_t  seen[2]          # packets inspected per direction (saturating)
    uint8_t  proto
    uint8_t  state            # FL_*; 0 = empty slot

# The prefix-table answers of a flow's addresses depend only on the addresses and
# the tables, so an IPv4 flow looks them up once (at its first packet, or the first
# after a table swap) and keeps, in the 24 bytes its addresses leave unused, the
# sides (DESIGN.md: watch label, peer label, direction) of a packet going either way,
# by direction d (0: the initiator's way), as byte offsets into the slot:
#     watch label  4 + 4d   (a[4:8], a[8:12])
#     peer label  12 + 8d   (a[12:16], b[4:8])
#     direction   24 + d    (b[8], b[9])
# (_fc_put, _fc_sides).  Every later packet reads its three with no table walk and
# no branch (the direction changes from packet to packet of a flow, and which side
# is watched with it: branches on them mispredict), without touching another cache
# line.  Watch label of direction 0 == SIDES_UNSET: not looked up yet.  IPv6 flows
# have no room and look their packets up as they come.

ctypedef struct fside_t:
    uint32_t ws
    uint32_t wd
    uint32_t ps
    uint32_t pd

cdef extern from *:
    """
    /* no label id reaches it: LPM entries keep bit 31 for LPM_EXT */
    #define NKS_SIDES_UNSET 0xFFFFFFFFu
    #define NKS_FLOW_NO_SLOT UINT64_MAX
    """
    const uint32_t SIDES_UNSET "NKS_SIDES_UNSET"
    const uint64_t FLOW_NO_SLOT "NKS_FLOW_NO_SLOT"


cdef inline uint32_t _ld32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline bint _fc_valid(const flow_t* f) noexcept nogil:
    # (IPv4 flows only) its sides are cached
    return _ld32(f.a + 4) != SIDES_UNSET


cdef inline void _fc_forget(flow_t* f) noexcept nogil:
    cdef uint32_t unset = SIDES_UNSET
    if f.state != 0 and (f.state & FL_V6) == 0:
        memcpy(f.a + 4, &unset, 4)


# A first fragment's ports, so later fragments of the same datagram (RFC 791: same
# src, dst, protocol and Identification) find the flow.
ctypedef struct fragent_t:
    uint8_t  src[16]
    uint8_t  dst[16]
    uint32_t id
    uint16_t sport, dport
    uint8_t  proto
    uint8_t  ipver
    uint8_t  _pad[6]

ctypedef struct ftab_t:
    flow_t*    slots
    uint8_t*   fp             # per slot: fingerprint of its key's hash, 0 = empty;
                              # capacity + FP_PAD bytes (slots 0..30 mirrored after)
    fragent_t* frags
    uint64_t   capacity       # power of two
    uint64_t   mask
    uint32_t   shift          # 64 - log2(capacity)
    uint64_t   used
    uint32_t   probe          # probe window: min(FLOW_PROBE_MAX, capacity)
    uint32_t   win            # its bits: (1 << probe) - 1
    uint32_t   deep_mode      # 0 / 1: deep prefetching off / on; 2: by deep_bytes
    uint32_t   deep_now       # the mode of the batch in hand (flow_deep)
    uint64_t   deep_bytes     # live flow bytes beyond which it is on (flow_deep)
    uint64_t   cursor         # next slot of the amortised expiry sweep
    uint32_t   now            # latest packet time seen
    uint32_t   has_now
    int32_t    timeout[4]     # per FT_* class, in time units
    int32_t    timeout_min    # the least of them: a flow seen more recently has not
                              # expired, whatever its class (the flow loop)
    uint32_t   inspect_packets    # per direction
    uint32_t   inspect_bytes      # on-wire bytes per direction
    uint64_t*  ids            # inspection only (NULL normally): a serial per flow, by slot
    uint64_t   next_id

# The key of one packet, in the packet's own orientation.
ctypedef struct fkey_t:
    const uint8_t* src
    const uint8_t* dst
    uint32_t fwd              # what flow_t.ports holds if this packet opened the flow
    uint32_t rev              # ... if the other side's packet opened it
    uint16_t sport, dport     # mixed into the hash (0 for id-keyed protocols)
    uint32_t id               # GRE key / SPI (0 for port protocols)
    uint8_t  proto
    uint8_t  v6               # FL_V6 or 0
    uint64_t h


# Direction and sides of a packet (DESIGN.md vocabulary), shared with pipeline.pxi.
cdef struct sides_t:
    uint32_t watch
    uint32_t peer
    uint8_t direction


cdef inline void _sides(const pkt_t* p, const lpm4_t* w4, const lpm6_t* w6,
                        const lpm4_t* p4, const lpm6_t* p6, sides_t* s) noexcept nogil:
    cdef uint32_t ws = 0, wd = 0, ps = 0, pd = 0
    if p.ipver == 4:
        ws = lpm4_lookup(w4, p.src4)
        wd = lpm4_lookup(w4, p.dst4)
    elif p.ipver == 6:
        ws = lpm6_lookup(w6, p.src)
        wd = lpm6_lookup(w6, p.dst)
    else:
        s.watch = 0
        s.peer = 0
        s.direction = DIR_TRANSIT
        return
    if ws != 0:
        s.watch = ws
        s.direction = DIR_INTERNAL if wd != 0 else DIR_OUTBOUND
        if p.ipver == 4:
            s.peer = lpm4_lookup(p4, p.dst4)
        else:
            s.peer = lpm6_lookup(p6, p.dst)
    elif wd != 0:
        s.watch = wd
        s.direction = DIR_INBOUND
        if p.ipver == 4:
            s.peer = lpm4_lookup(p4, p.src4)
        else:
            s.peer = lpm6_lookup(p6, p.src)
    else:
        s.watch = 0
        s.direction = DIR_TRANSIT
        if p.ipver == 4:
            pd = lpm4_lookup(p4, p.dst4)
            s.peer = pd if pd != 0 else lpm4_lookup(p4, p.src4)
        else:
            pd = lpm6_lookup(p6, p.dst)
            s.peer = pd if pd != 0 else lpm6_lookup(p6, p.src)


cdef inline void _lookups4(const pkt_t* p, const lpm4_t* w4, const lpm4_t* p4,
                           fside_t* o) noexcept nogil:
    # _lookups() of an IPv4 packet
    o.ws = lpm4_lookup(w4, p.src4)
    o.wd = lpm4_lookup(w4, p.dst4)
    o.ps = lpm4_lookup(p4, p.src4) if (o.ws == 0) | (o.wd != 0) else 0
    o.pd = lpm4_lookup(p4, p.dst4) if (o.wd == 0) | (o.ws != 0) else 0


cdef inline void _lookups(const pkt_t* p, const lpm4_t* w4, const lpm6_t* w6,
                          const lpm4_t* p4, const lpm6_t* p6, fside_t* o) noexcept nogil:
    # The answers _fc_put needs of an IP packet's addresses, in the packet's
    # orientation: both watch labels, and the peer labels _sides_of can pick in
    # either direction -- with exactly one side watched, only the other side's
    # (the peer of both directions); 0 stands for one not looked up.
    if p.ipver == 4:
        _lookups4(p, w4, p4, o)
    else:
        o.ws = lpm6_lookup(w6, p.src)
        o.wd = lpm6_lookup(w6, p.dst)
        o.ps = lpm6_lookup(p6, p.src)
        o.pd = lpm6_lookup(p6, p.dst)


cdef inline void _sides_of(const fside_t* l, int d, sides_t* s) noexcept nogil:
    # _sides() from answers `l` (initiator's order) for a packet going direction d
    # (0: the initiator's way): the same decisions, no table walk.  (Run twice per
    # flow, when its answers are cached: _fc_put.)
    cdef uint32_t ws, wd, ps, pd
    if d == 0:
        ws = l.ws
        wd = l.wd
        ps = l.ps
        pd = l.pd
    else:
        ws = l.wd
        wd = l.ws
        ps = l.pd
        pd = l.ps
    if ws != 0:
        s.watch = ws
        s.direction = DIR_INTERNAL if wd != 0 else DIR_OUTBOUND
        s.peer = pd
    elif wd != 0:
        s.watch = wd
        s.direction = DIR_INBOUND
        s.peer = ps
    else:
        s.watch = 0
        s.direction = DIR_TRANSIT
        s.peer = pd if pd != 0 else ps


cdef inline void _fc_put(flow_t* f, const fside_t* o, int d, sides_t* out) noexcept nogil:
    # Cache an IPv4 flow's sides both ways, from its four answers `o` in the
    # initiator's order (layout above); *out: those of direction d.
    cdef sides_t s0, s1
    cdef uint8_t* c = <uint8_t*>f
    _sides_of(o, 0, &s0)
    _sides_of(o, 1, &s1)
    memcpy(c + 4, &s0.watch, 4)
    memcpy(c + 8, &s1.watch, 4)
    memcpy(c + 12, &s0.peer, 4)
    memcpy(c + 20, &s1.peer, 4)
    c[24] = s0.direction
    c[25] = s1.direction
    out[0] = s1 if d else s0


cdef inline void _fc_sides(const flow_t* f, int d, sides_t* s) noexcept nogil:
    # The cached sides of a packet of IPv4 flow `f` going direction d (_fc_valid)
    cdef const uint8_t* c = <const uint8_t*>f
    cdef size_t u = <unsigned int>d      # (0 or 1: no sign extension)
    memcpy(&s.watch, c + 4 + 4 * u, 4)
    memcpy(&s.peer, c + 12 + 8 * u, 4)
    s.direction = c[24 + u]


# Per-packet output of Classifier.annotate_flows (inspection; NULL in normal runs).
ctypedef struct fann_t:
    uint16_t* tag             # the tag the packet was counted under (own tag if pending)
    uint32_t* peer
    uint32_t* watch
    uint8_t*  direction
    uint8_t*  pending         # 1: held pending; its final tag is its flow's verdict if
                              #    one comes (verdict_fid), else its own tag
    uint64_t* fid             # flow serial (0: no flow)
    uint64_t* verdict_fid     # serial of the flow whose verdict this packet fixed (0: none)
    uint32_t* verdict_sni     # ... and the service label of that verdict (0: none)


# Everything a flow's end or verdict needs to count its pending packets.
ctypedef struct fctx_t:
    ftab_t*        t
    agg_t*         a
    const lpm4_t*  w4
    const lpm6_t*  w6
    const lpm4_t*  p4
    const lpm6_t*  p6


# ---------------------------------------------------------------------------
# Keys and hashing

cdef inline uint64_t _fmix64(uint64_t k) noexcept nogil:
    # MurmurHash3's finaliser: every input bit affects every output bit.
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccdULL
    k ^= k >> 33
    k *= <uint64_t>0xc4ceb9fe1a85ec53ULL
    k ^= k >> 33
    return k


cdef inline uint64_t _ld64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline bint _eq16(const uint8_t* x, const uint8_t* y) noexcept nogil:
    return _ld64(x) == _ld64(y) and _ld64(x + 8) == _ld64(y + 8)


cdef inline uint64_t _side_hash(const uint8_t* addr, uint16_t port) noexcept nogil:
    return (_ld64(addr) * <uint64_t>0x9E3779B97F4A7C15ULL
            + _ld64(addr + 8) * <uint64_t>0xC2B2AE3D27D4EB4FULL
            + <uint64_t>port * <uint64_t>0x165667B19E3779F9ULL)


cdef inline uint64_t flow_hash(const uint8_t* a, uint16_t pa, const uint8_t* b,
                               uint16_t pb, uint32_t id, uint8_t proto,
                               uint8_t v6) noexcept nogil:
    # Symmetric in the two sides, so both directions of a flow hash to the same home
    # slot.  IPv4 (the common case, cheap): each side is 48 bits (address, port); the
    # pair is put in order and mixed by one 64x64->128-bit multiply (nks_mum; the
    # constants set bits above the 48, so neither factor is ever 0), the protocol in
    # the top bits of one side; an id (GRE key, SPI: those flows are rare) takes a
    # second multiply.  IPv6: a sum and a xor of the per-side hashes, MurmurHash3's
    # finaliser.  The fingerprint is the low byte, the home slot the high bits.
    cdef uint64_t x, y, m, h
    if v6 == 0:
        x = (<uint64_t>_ld32(a) << 16) | pa
        y = (<uint64_t>_ld32(b) << 16) | pb
        # put the pair in order with a mask: which side is larger is a coin toss
        # per packet, a branch on it mispredicts half the time
        m = (x ^ y) & (<uint64_t>0 - <uint64_t>(x > y))
        x ^= m
        y ^= m
        h = nks_mum(x ^ <uint64_t>0x9E3779B97F4A7C15ULL,
                    y ^ (<uint64_t>proto << 48) ^ <uint64_t>0xC2B2AE3D27D4EB4FULL)
        if id != 0:
            h = nks_mum(h ^ id, <uint64_t>0x165667B19E3779F9ULL)
        return h
    x = _side_hash(a, pa)
    y = _side_hash(b, pb)
    return _fmix64((x + y) ^ ((x ^ y) * <uint64_t>0xD6E8FEB86659FD93ULL)
                   ^ ((<uint64_t>id << 16) | (<uint64_t>proto << 8) | v6))


# IP protocols whose flows are keyed by ports: TCP 6, UDP 17, SCTP 132, UDP-Lite 136.
# A table load, not a chain of four compares and branches per packet.
cdef uint8_t PORT_PROTO[256]
PORT_PROTO[6] = PORT_PROTO[17] = PORT_PROTO[132] = PORT_PROTO[136] = 1


cdef inline bint _port_proto(uint8_t proto) noexcept nogil:
    return PORT_PROTO[proto] != 0


cdef inline uint64_t _flow_hash_of(const flow_t* f) noexcept nogil:
    # The hash of a stored flow's key (an IPv4 key hashes its first 4 address bytes
    # only: the rest of a[] and b[] holds the cached lookups)
    cdef const uint8_t* a = f.a
    cdef const uint8_t* b = f.b
    if _port_proto(f.proto):
        return flow_hash(a, <uint16_t>(f.ports >> 16), b, <uint16_t>(f.ports & 0xFFFF),
                         0, f.proto, f.state & FL_V6)
    return flow_hash(a, 0, b, 0, f.ports, f.proto, f.state & FL_V6)


cdef inline uint64_t _flow_home(const ftab_t* t, const flow_t* f) noexcept nogil:
    return _flow_hash_of(f) >> t.shift


cdef inline uint64_t _frag_slot(const pkt_t* p) noexcept nogil:
    return _fmix64(_ld64(p.src) ^ (_ld64(p.src + 8) * <uint64_t>0x9E3779B97F4A7C15ULL)
                   ^ (_ld64(p.dst) * <uint64_t>0xC2B2AE3D27D4EB4FULL) ^ _ld64(p.dst + 8)
                   ^ ((<uint64_t>p.frag_id << 8) | p.proto)) & (FRAG_SLOTS - 1)


cdef inline uint64_t flow_hash_pkt(const pkt_t* p) noexcept nogil:
    """The hash flow_key() gives a packet that is not a fragment (the pipeline
    computes it a few packets ahead to prefetch the slot, and flow_key reuses it)."""
    cdef uint16_t sp = 0, dp = 0
    cdef uint32_t id = 0
    if _port_proto(p.proto):
        if p.flags & PF_PORTS:
            sp = p.sport
            dp = p.dport
    elif p.flags & PF_SPI:
        id = p.spi
    elif p.flags & PF_GRE:
        id = p.gre_key
    return flow_hash(p.src, sp, p.dst, dp, id, p.proto, FL_V6 if p.ipver == 6 else 0)


cdef inline uint64_t flow_hash4(const pkt_t* p) noexcept nogil:
    # flow_hash_pkt() of a flow_fast4() packet (IPv4, a port protocol, ports, not a
    # fragment), without the tests that pick the key's fields
    return flow_hash(p.src, p.sport, p.dst, p.dport, 0, p.proto, 0)


cdef inline bint flow_key(ftab_t* t, pkt_t* p, fkey_t* k, uint64_t h) noexcept nogil:
    """Fill the flow key of a decoded packet; False when it has none (no IP header,
    a transport without ports, a later fragment whose first fragment was not seen):
    such a packet is counted on its own per-packet verdict.  `h`: flow_hash_pkt(p),
    used unless the packet is a fragment."""
    cdef fragent_t* fe
    cdef uint16_t fl = p.flags
    if (fl & PF_IP) == 0 or (fl & PF_PROTO) == 0:
        return False
    if _port_proto(p.proto):
        if fl & PF_FRAG:
            fe = &t.frags[_frag_slot(p)]
            if fl & PF_FRAG_FIRST:
                if (fl & PF_PORTS) == 0:
                    return False
                # remember the datagram's ports for its later fragments
                memcpy(fe.src, p.src, 16)
                memcpy(fe.dst, p.dst, 16)
                fe.id = p.frag_id
                fe.proto = p.proto
                fe.ipver = p.ipver
                fe.sport = p.sport
                fe.dport = p.dport
            else:
                if (fe.ipver != p.ipver or fe.id != p.frag_id or fe.proto != p.proto
                        or not _eq16(fe.src, p.src) or not _eq16(fe.dst, p.dst)):
                    return False
                # the datagram's ports: the per-packet fallback tag uses them too
                p.sport = fe.sport
                p.dport = fe.dport
                p.flags |= PF_PORTS
        elif (fl & PF_PORTS) == 0:
            return False
        k.sport = p.sport
        k.dport = p.dport
        k.id = 0
        k.fwd = (<uint32_t>p.sport << 16) | p.dport
        k.rev = (<uint32_t>p.dport << 16) | p.sport
    else:
        k.sport = 0
        k.dport = 0
        if fl & PF_SPI:
            k.id = p.spi
        elif fl & PF_GRE:
            k.id = p.gre_key
        else:
            k.id = 0
        k.fwd = k.id
        k.rev = k.id
    k.src = p.src
    k.dst = p.dst
    k.proto = p.proto
    k.v6 = FL_V6 if p.ipver == 6 else 0
    if fl & PF_FRAG:
        k.h = flow_hash(p.src, k.sport, p.dst, k.dport, k.id, k.proto, k.v6)
    else:
        k.h = h
    return True


cdef inline int _flow_match(const flow_t* f, const fkey_t* k) noexcept nogil:
    # 0: the packet goes the initiator's way, 1: the other way, -1: another flow.
    if f.proto != k.proto or (f.state & FL_V6) != k.v6:
        return -1
    if k.v6 == 0:
        # IPv4: the first 4 bytes are the address (the rest caches lookups)
        if f.ports == k.fwd and _ld32(f.a) == _ld32(k.src) and _ld32(f.b) == _ld32(k.dst):
            return 0
        if f.ports == k.rev and _ld32(f.a) == _ld32(k.dst) and _ld32(f.b) == _ld32(k.src):
            return 1
        return -1
    if f.ports == k.fwd and _eq16(f.a, k.src) and _eq16(f.b, k.dst):
        return 0
    if f.ports == k.rev and _eq16(f.a, k.dst) and _eq16(f.b, k.src):
        return 1
    return -1


cdef inline int _flow_class(const flow_t* f) noexcept nogil:
    if f.proto == 6:
        if (f.state & FL_RST) or (f.state & (FL_FIN0 | FL_FIN1)) == (FL_FIN0 | FL_FIN1):
            return FT_TCP_CLOSED
        return FT_TCP
    if f.proto == 17 or f.proto == 136:
        return FT_UDP
    return FT_OTHER


cdef inline bint _flow_expired(const ftab_t* t, const flow_t* f, uint32_t now) noexcept nogil:
    return <int32_t>(now - f.last) > t.timeout[_flow_class(f)]


# ---------------------------------------------------------------------------
# Counting a flow's pending packets

cdef inline uint32_t _be32(const uint8_t* b) noexcept nogil:
    return (<uint32_t>b[0] << 24) | (<uint32_t>b[1] << 16) | (<uint32_t>b[2] << 8) | b[3]


cdef void _flow_sides(const fctx_t* c, const flow_t* f, int d, sides_t* s) noexcept nogil:
    """The sides of a packet of flow `f` going direction `d` (0: initiator's way)."""
    cdef pkt_t q
    cdef const uint8_t* src
    cdef const uint8_t* dst
    if (f.state & FL_V6) == 0 and _fc_valid(f):
        _fc_sides(f, d, s)
        return
    if d == 0:
        src = f.a
        dst = f.b
    else:
        src = f.b
        dst = f.a
    q.ipver = 6 if (f.state & FL_V6) else 4
    memcpy(q.src, src, 16)
    memcpy(q.dst, dst, 16)
    q.src4 = _be32(src)
    q.dst4 = _be32(dst)
    _sides(&q, c.w4, c.w6, c.p4, c.p6, s)


cdef void _flow_emit(const fctx_t* c, flow_t* f, int d, uint16_t tag, uint32_t sni,
                     const sides_t* known, bint pending) noexcept nogil:
    """Count the pending packets of direction `d` under (sides, tag, sni or peer) and
    clear them; the flow's start rides on its initiator's direction.  `pending`:
    they never got a verdict (window closed or flow ended first)."""
    cdef sides_t s
    cdef uint64_t flows = 0
    if f.pkts[d] == 0:
        return
    if known != NULL:
        s = known[0]
    else:
        _flow_sides(c, f, d, &s)
    if d == 0 and (f.state & FL_UNCOUNTED):
        flows = 1
        f.state &= ~FL_UNCOUNTED
    agg_add(c.a, s.watch, s.direction, sni if sni != 0 else s.peer, tag,
            f.pkts[d], f.pbytes[d], flows)
    if pending:
        c.a.totals[TOT_PENDING_PACKETS] += f.pkts[d]
        c.a.totals[TOT_PENDING_BYTES] += f.pbytes[d]
    f.pkts[d] = 0
    f.pbytes[d] = 0


cdef inline void _flow_flush_pending(const fctx_t* c, flow_t* f) noexcept nogil:
    # Only an undecided flow holds pending packets: a verdict or a give-up flushes.
    _flow_emit(c, f, 0, f.ftag[0], 0, NULL, True)
    _flow_emit(c, f, 1, f.ftag[1], 0, NULL, True)


cdef inline void _flow_fill(ftab_t* t, agg_t* a, flow_t* f, const uint8_t* src,
                            const uint8_t* dst, uint32_t ports, uint8_t proto, uint8_t v6,
                            uint32_t now) noexcept nogil:
    # A flow started in slot f: src/dst 16 bytes each (IPv4: the address, then zeros),
    # `ports` what flow_t.ports holds, v6 FL_V6 or 0.
    NKS_ZERO(f)              # vector stores, not `rep stosq` (types.pxi)
    memcpy(f.a, src, 16)
    memcpy(f.b, dst, 16)
    f.ports = ports
    f.proto = proto
    f.last = now
    f.state = FL_USED | FL_UNCOUNTED | v6
    _fc_forget(f)
    a.totals[TOT_FLOWS] += 1
    if t.ids != NULL:
        t.next_id += 1
        t.ids[f - t.slots] = t.next_id


cdef inline void _flow_init(ftab_t* t, agg_t* a, flow_t* f, const fkey_t* k,
                            uint32_t now) noexcept nogil:
    _flow_fill(t, a, f, k.src, k.dst, k.fwd, k.proto, k.v6, now)


cdef inline uint8_t flow_fp(uint64_t h) noexcept nogil:
    # A key's fingerprint: the low byte of its hash (the home slot takes the high
    # bits), never 0, which marks an empty slot.
    cdef uint8_t v = <uint8_t>(h & 0xFF)
    return v + (v == 0)


cdef inline void _fp_set(ftab_t* t, uint64_t i, uint8_t v) noexcept nogil:
    # Kept in every mode, so that entering deep mode costs nothing (a rebuild from
    # the slots was a pass over the whole table: 6 ms of the 1M-flow benchmark's
    # 140, docs/flows.md); home mode prefetches the line with the home slot's
    # (_decode_block), so the write does not miss.
    t.fp[i] = v
    if i < FLOW_PROBE_MAX - 1:
        t.fp[t.capacity + i] = v      # the mirror a wrapping window reads


cdef inline uint32_t flow_window(const ftab_t* t, uint64_t home, uint8_t v,
                                 uint32_t* free_bit) noexcept nogil:
    """The probe window from slot `home`, by fingerprint: bit j of the result is set
    when slot home + j may hold a key of fingerprint `v` and comes before the first
    empty slot (a lookup stops there); `*free_bit` is that empty slot's bit, 0 when
    the window has none (full: a new key must evict)."""
    cdef uint32_t empty, m
    m = nks_fp_scan(t.fp + home, v, &empty) & t.win
    empty &= t.win
    free_bit[0] = empty & (0 - empty)
    if empty != 0:
        m &= free_bit[0] - 1
    return m


cdef flow_t* _flow_new(const fctx_t* c, uint64_t i, const fkey_t* k,
                       uint32_t now) noexcept nogil:
    # (not inline: inlined into the flow loop it cost a new flow's packet ~20
    # instructions of register shuffling, bench/instructions.py)
    # Start key k's flow in empty slot i (found by a lookup).
    cdef ftab_t* t = c.t
    _fp_set(t, i, flow_fp(k.h))
    _flow_init(t, c.a, &t.slots[i], k, now)
    t.used += 1
    return &t.slots[i]


cdef inline flow_t* _flow_new4(const fctx_t* c, uint64_t i, const pkt_t* p, uint64_t h,
                               uint32_t now) noexcept nogil:
    # _flow_new() for a flow_fast4() packet, from the packet itself: the key
    # flow_key() would build holds the same fields (`h`: flow_hash_pkt(p)).
    cdef ftab_t* t = c.t
    _fp_set(t, i, flow_fp(h))
    _flow_fill(t, c.a, &t.slots[i], p.src, p.dst, (<uint32_t>p.sport << 16) | p.dport,
               p.proto, 0, now)
    t.used += 1
    return &t.slots[i]


cdef inline uint64_t _flow_oldest(const ftab_t* t, uint64_t home, uint32_t now) noexcept nogil:
    # The flow idle the longest (time order, not insertion order: a busy long flow
    # outlives a burst of one-packet scans) in the probe window from `home`: the
    # one to evict.  FLOW_NO_SLOT when the window holds none.
    cdef uint64_t j, victim = FLOW_NO_SLOT
    cdef int n
    cdef int32_t age, oldest = -0x7FFFFFFF - 1
    for n in range(<int>t.probe):
        j = (home + <uint64_t>n) & t.mask
        if t.slots[j].state != 0:
            age = <int32_t>(now - t.slots[j].last)
            if age > oldest:
                oldest = age
                victim = j
    return victim


cdef flow_t* flow_lookup(const fctx_t* c, const fkey_t* k, uint32_t now,
                         int* d, bint* created) noexcept nogil:
    """The flow of key `k`, created if new (`*created`; `*d` = 0 for the initiator's
    direction, 1 for the reverse).
    Expired or closed-and-reopened flows are ended and started afresh in place; when
    the probe window is full, its longest-idle flow is evicted."""
    cdef ftab_t* t = c.t
    cdef uint64_t i = k.h >> t.shift, victim
    cdef uint32_t cand, free_bit
    cdef int n, m
    cdef flow_t* f
    if t.deep_now:
        # by the fingerprints: the slots whose fingerprint matches, before the
        # first empty one
        cand = flow_window(t, i, flow_fp(k.h), &free_bit)
        while cand != 0:
            f = &t.slots[(i + NKS_CTZ32(cand)) & t.mask]
            m = _flow_match(f, k)
            if m >= 0:
                d[0] = m
                created[0] = False
                return f
            cand &= cand - 1
    else:
        # by walking the slots, the same answer: the fingerprints are valid in
        # home mode too, but with the slots in cache (and the home slot and the
        # two after it prefetched) the walk is faster -- the fingerprints in both
        # modes measured the mixed capture 42.3 -> 43.8 ns/packet with flow state
        # (bench_flows, 4 rounds alternating)
        free_bit = 0
        for n in range(<int>t.probe):
            f = &t.slots[(i + <uint64_t>n) & t.mask]
            if f.state == 0:
                free_bit = <uint32_t>1 << n
                break
            m = _flow_match(f, k)
            if m >= 0:
                d[0] = m
                created[0] = False
                return f
    d[0] = 0
    created[0] = True
    if free_bit != 0:
        if t.used + 1 < t.capacity:
            return _flow_new(c, (i + NKS_CTZ32(free_bit)) & t.mask, k, now)
        # It would take the table's last empty slot.  One always stays empty: it is
        # what ends flow_delete's shifting (Knuth's Algorithm R assumes it; in a
        # full table the shift comes round the ring and breaks probe runs).  So the
        # window's longest-idle flow is evicted and deleted first.
        victim = _flow_oldest(t, i, now)
        if victim != FLOW_NO_SLOT:
            _flow_flush_pending(c, &t.slots[victim])
            c.a.totals[TOT_FLOW_EVICTIONS] += 1
            flow_delete(t, victim)
            # the deletion shifted entries: look again (now a slot may be taken)
            return flow_lookup(c, k, now, d, created)
        return _flow_new(c, (i + NKS_CTZ32(free_bit)) & t.mask, k, now)
    # Full window: its longest-idle flow is evicted, the new one takes its slot.
    victim = _flow_oldest(t, i, now)
    f = &t.slots[victim]
    _flow_flush_pending(c, f)
    c.a.totals[TOT_FLOW_EVICTIONS] += 1
    _fp_set(t, victim, flow_fp(k.h))
    _flow_init(t, c.a, f, k, now)
    return f


# Set on a decoded packet by the flow loop (_decode_block) when flow_fast4() holds,
# so the test is made once per packet; above every PF_* bit the decoder sets.
cdef enum:
    PF_FLOW_FAST4 = 0x8000


cdef inline bint flow_fast4(const pkt_t* p) noexcept nogil:
    # The packets flow_probe4() serves: IPv4, a port protocol, ports decoded, not a
    # fragment (flow_key() would key them on their own addresses and ports, with the
    # hash flow_hash_pkt() gives).
    return ((p.flags & (PF_IP | PF_PROTO | PF_PORTS | PF_FRAG)) == (PF_IP | PF_PROTO | PF_PORTS)
            and p.ipver == 4 and _port_proto(p.proto))


cdef inline int _match4(const flow_t* f, uint8_t proto, uint32_t fwd, uint32_t rev,
                        uint32_t s4, uint32_t d4) noexcept nogil:
    # _flow_match() for an IPv4 port-protocol packet, from its own fields (fwd/rev:
    # its ports in either order, s4/d4: its addresses): 0 its initiator's way, 1 the
    # other, -1 another flow (or an empty slot: proto 0).
    # With no branch but the last, which is predictable (the slot usually holds the
    # flow), rather than one per way round: which way a packet matches is a coin
    # toss in a traffic mix, mispredicted half the time.  For slots in cache (home
    # mode, flow_walk4); deep mode's slots may still be on their way from memory,
    # and _match4_ahead lets the CPU run ahead on a guess meanwhile.
    # x0 / x1: 0 when the packet matches the initiator's way / the other way (a
    # flow from an address and port to themselves matches both: 0).
    cdef uint32_t a = _ld32(f.a), b = _ld32(f.b)
    cdef uint32_t x0 = (f.ports ^ fwd) | (a ^ s4) | (b ^ d4)
    cdef uint32_t x1 = (f.ports ^ rev) | (a ^ d4) | (b ^ s4)
    if ((<uint32_t>(f.proto != proto) | <uint32_t>(f.state & FL_V6))
            | (<uint32_t>(x0 != 0) & <uint32_t>(x1 != 0))) != 0:
        return -1
    return <int>(x0 != 0)


cdef inline int _match4_ahead(const flow_t* f, uint8_t proto, uint32_t fwd, uint32_t rev,
                              uint32_t s4, uint32_t d4) noexcept nogil:
    # _match4() by branches: the direction then comes from the branch the CPU
    # predicted, not from the slot's bytes, so the rest of the packet's work (and
    # the next packets') runs ahead while a slot that missed the caches loads.
    # Measured on 1M concurrent flows (bench/bench_flows.py): 45.0 ns/packet by
    # branches, 47.1 with _match4 (docs/flows.md); in cache the other way round.
    if f.proto != proto or (f.state & FL_V6) != 0:
        return -1
    if f.ports == fwd and _ld32(f.a) == s4 and _ld32(f.b) == d4:
        return 0
    if f.ports == rev and _ld32(f.a) == d4 and _ld32(f.b) == s4:
        return 1
    return -1


cdef inline flow_t* flow_probe4(const ftab_t* t, const pkt_t* p, uint64_t h, uint64_t hint,
                                int* d, uint64_t* ins) noexcept nogil:
    """The flow of a flow_fast4() packet if the table holds it (`*d` its direction),
    else NULL: exactly the slot flow_lookup() returns for it as an existing flow,
    without building the key.  When NULL, `*ins` is the empty slot flow_lookup()
    would start the flow in (_flow_new), or FLOW_NO_SLOT when there is none it may
    take.  `h`: flow_hash_pkt(p); `hint`: a slot to try first (its home slot, or
    the one flow_prefetch() found; FLOW_NO_SLOT: none): a key is in at most one
    slot, so a match there is the flow, however the table changed since.  An
    empty hint slot is the one that ended the key's window when flow_prefetch()
    scanned it, with no fingerprint like the key's before it (a slot whose
    fingerprint matched was taken, and only a deletion empties a slot); it is
    still the answer, and the window is not scanned again (a new flow's packet:
    ~20 instructions, bench/instructions.py).  Within a batch, slots only get
    taken: a flow started since took an empty slot, and one of this key would
    have taken that very slot (the first empty one of its window).  The one
    deletion in a batch, flow_lookup()'s when the table is down to its last empty
    slot, leaves it so, and from then on no flow may start in a slot found here
    (used + 1 == capacity below): such packets go to flow_lookup()."""
    cdef uint32_t fwd = (<uint32_t>p.sport << 16) | p.dport
    cdef uint32_t rev = (<uint32_t>p.dport << 16) | p.sport
    cdef uint32_t s4 = _ld32(p.src), d4 = _ld32(p.dst)
    cdef uint64_t i = h >> t.shift
    cdef uint32_t cand, free_bit
    cdef int m
    cdef const flow_t* f
    if hint != FLOW_NO_SLOT:
        f = &t.slots[hint]
        m = _match4_ahead(f, p.proto, fwd, rev, s4, d4)
        if m >= 0:
            d[0] = m
            return <flow_t*>f
        if f.state == 0:
            ins[0] = hint if t.used + 1 < t.capacity else FLOW_NO_SLOT
            return NULL
    cand = flow_window(t, i, flow_fp(h), &free_bit)
    while cand != 0:
        f = &t.slots[(i + NKS_CTZ32(cand)) & t.mask]
        m = _match4_ahead(f, p.proto, fwd, rev, s4, d4)
        if m >= 0:
            d[0] = m
            return <flow_t*>f
        cand &= cand - 1
    # (the table's last empty slot is flow_lookup's to handle: it evicts first)
    ins[0] = ((i + NKS_CTZ32(free_bit)) & t.mask if free_bit != 0 and t.used + 1 < t.capacity
              else FLOW_NO_SLOT)
    return NULL


cdef inline flow_t* flow_walk4(const ftab_t* t, const pkt_t* p, uint64_t h,
                               int* d, uint64_t* ins) noexcept nogil:
    """flow_probe4() by walking the slots from the home slot (not the fingerprints):
    the same answer, cheaper when the slots are in cache (the "home" prefetch
    mode, whose prefetches cover the home slot and the two after it)."""
    cdef uint32_t fwd = (<uint32_t>p.sport << 16) | p.dport
    cdef uint32_t rev = (<uint32_t>p.dport << 16) | p.sport
    cdef uint32_t s4 = _ld32(p.src), d4 = _ld32(p.dst)
    cdef uint64_t i = h >> t.shift
    cdef int n, m
    cdef const flow_t* f
    for n in range(<int>t.probe):
        f = &t.slots[i]
        if f.state == 0:
            ins[0] = i if t.used + 1 < t.capacity else FLOW_NO_SLOT
            return NULL
        m = _match4(f, p.proto, fwd, rev, s4, d4)
        if m >= 0:
            d[0] = m
            return <flow_t*>f
        i = (i + 1) & t.mask
    ins[0] = FLOW_NO_SLOT
    return NULL


cdef inline uint64_t flow_prefetch(const ftab_t* t, uint64_t h) noexcept nogil:
    # Start the miss on the slot a lookup of hash h will read: the first whose
    # fingerprint matches, else the empty slot a new flow would take (the
    # fingerprint bytes were prefetched a block earlier, pipeline.pxi).  Returned:
    # that slot, the lookup's hint (flow_probe4).
    cdef uint64_t i = h >> t.shift, j
    cdef uint32_t free_bit, cand = flow_window(t, i, flow_fp(h), &free_bit)
    if cand != 0:
        j = (i + NKS_CTZ32(cand)) & t.mask
        NKS_PREFETCH_KEEP(&t.slots[j])
        return j
    if free_bit != 0:
        j = (i + NKS_CTZ32(free_bit)) & t.mask
        NKS_PREFETCH_KEEP(&t.slots[j])
        return j
    return FLOW_NO_SLOT


cdef inline bint flow_deep(ftab_t* t) noexcept nogil:
    # The prefetch mode of the next batch (FlowTable.prefetch).  Deep (the slot
    # found from the fingerprints a block ahead) pays when lookups miss the caches:
    # when the live flows' slots outgrow them.  Below, the home slot and the two
    # after it are prefetched and the slots walked, which costs fewer instructions.
    # "auto" turns deep on above deep_bytes and off below half of it (no
    # flapping).  The fingerprints are kept in both modes.
    cdef bint deep
    if t.deep_mode != 2:
        deep = t.deep_mode
    elif t.deep_now:
        deep = t.used * sizeof(flow_t) * 2 > t.deep_bytes
    else:
        deep = t.used * sizeof(flow_t) > t.deep_bytes
    t.deep_now = deep
    return deep


cdef void flow_delete(ftab_t* t, uint64_t i) noexcept nogil:
    """Empty slot i, shifting later entries of its probe run back (no tombstones)."""
    cdef uint64_t j = i, k
    cdef int n
    # The table always keeps an empty slot (flow_lookup), which ends this scan:
    # in a full table it would come round to slot i again and break the runs.
    for n in range(<int>t.capacity):
        j = (j + 1) & t.mask
        if t.slots[j].state == 0:
            break
        if ((j - i) & t.mask) >= t.probe:
            # nothing this far from the hole can have its home at or before it
            break
        k = _flow_home(t, &t.slots[j])
        if ((j - k) & t.mask) >= ((j - i) & t.mask):
            t.slots[i] = t.slots[j]
            _fp_set(t, i, t.fp[j])
            if t.ids != NULL:
                t.ids[i] = t.ids[j]
            i = j
    NKS_ZERO(&t.slots[i])
    _fp_set(t, i, 0)
    if t.ids != NULL:
        t.ids[i] = 0
    t.used -= 1


cdef uint64_t flow_sweep(const fctx_t* c, uint64_t budget, bint flush_pending) noexcept nogil:
    """Examine `budget` slots from the sweep cursor: end flows idle past their
    timeout (pending counted as pending, the timeout counted) and, with
    `flush_pending` (a window closing), count every undecided flow's pending packets.
    Returns the number of flows expired."""
    cdef ftab_t* t = c.t
    cdef uint64_t n, expired = 0
    cdef flow_t* f
    cdef flow_t* slots = t.slots
    cdef uint64_t cur = t.cursor, mask = t.mask
    cdef uint32_t now = t.now
    cdef int32_t tmin = t.timeout_min
    if not t.has_now:
        return 0
    # (the cursor in a local: kept in t.cursor, the compiler must assume that every
    # store to a slot may change it, and reloads it)
    for n in range(budget):
        f = &slots[cur]
        # One branch, rarely taken: occupied (a coin toss at half load, which a
        # branch of its own would mispredict) and idle past the shortest timeout.
        if (f.state != 0) & (<int32_t>(now - f.last) > tmin):
            if _flow_expired(t, f, now):
                _flow_flush_pending(c, f)
                c.a.totals[TOT_FLOW_TIMEOUTS] += 1
                flow_delete(t, cur)
                expired += 1
                # the slot now holds a shifted entry (or nothing): look at it again
                # next, unless the budget is spent
                continue
        if flush_pending and f.state != 0:
            _flow_flush_pending(c, f)
        cur = (cur + 1) & mask
    t.cursor = cur
    return expired


# ---------------------------------------------------------------------------
# Python side

FLOW_DEFAULTS = {
    "tcp_timeout": 300.0,          # established TCP, seconds idle
    "tcp_closed_timeout": 5.0,     # after RST, or FIN both ways
    "udp_timeout": 120.0,
    "other_timeout": 60.0,
    "inspect_packets": 10,         # per direction, before the flow gives up on a verdict
    "inspect_bytes": 65536,        # on-wire bytes per direction, likewise
}
FLOW_ENTRY_BYTES = sizeof(flow_t)
FLOW_PROBE_WINDOW = FLOW_PROBE_MAX
FLOW_FRAG_SLOTS = FRAG_SLOTS
FLOW_STATE_NAMES = {"used": FL_USED, "v6": FL_V6, "strong": FL_STRONG, "gaveup": FL_GAVEUP,
                    "fin0": FL_FIN0, "fin1": FL_FIN1, "rst": FL_RST, "uncounted": FL_UNCOUNTED}
assert sizeof(flow_t) == 64
# the flow loop turns a packet's TCP flags into state bits by shifting (pipeline.pxi)
assert FL_RST == TCPF_RST << 4 and FL_FIN0 == TCPF_FIN << 4 and FL_FIN1 == TCPF_FIN << 5
assert sizeof(fside_t) == 16


cdef int32_t _units(double seconds, str name) except? -1:
    if not (0.0 < seconds <= 86400.0 * 7):
        raise ValueError(f"flows: {name} must be in (0, 604800] seconds, got {seconds}")
    return <int32_t>((seconds * 1e9) / (1 << FLOW_TIME_SHIFT) + 0.5)


def _last_level_cache_bytes():
    # The size the "auto" prefetch mode compares the live flows with: the CPU's
    # last-level cache (sysconf, else sysfs), 32 MiB when neither says.
    import os
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            v = os.sysconf(name)
        except (ValueError, OSError):
            v = 0
        if v and v > 0:
            return int(v)
    try:
        best = 0
        base = "/sys/devices/system/cpu/cpu0/cache"
        for d in os.listdir(base):
            with open(os.path.join(base, d, "size")) as fh:
                t = fh.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(t[len(t) - 1:], 1)
            best = max(best, int(t.rstrip("KM")) * mult)
        if best:
            return best
    except (OSError, ValueError):
        pass
    return 32 << 20


cdef class FlowTable:
    """Bounded flow table of one worker (docs/flows.md).

    ``FlowTable(capacity=1048576, tcp_timeout=300, tcp_closed_timeout=5,
    udp_timeout=120, other_timeout=60, inspect_packets=10, inspect_bytes=65536)``:
    *capacity* slots (rounded up to a power of two) of 64 bytes, allocated once, plus
    a 192 KiB first-fragment table.  Timeouts in seconds of capture time.  Give it to
    the native ``Classifier``; the pipeline takes its table pointer once per batch.
    """
    cdef ftab_t* t
    cdef readonly dict settings

    def __cinit__(self, capacity=1 << 20, tcp_timeout=FLOW_DEFAULTS["tcp_timeout"],
                  tcp_closed_timeout=FLOW_DEFAULTS["tcp_closed_timeout"],
                  udp_timeout=FLOW_DEFAULTS["udp_timeout"],
                  other_timeout=FLOW_DEFAULTS["other_timeout"],
                  inspect_packets=FLOW_DEFAULTS["inspect_packets"],
                  inspect_bytes=FLOW_DEFAULTS["inspect_bytes"]):
        cdef uint64_t cap = 16
        cdef uint32_t bits = 4
        capacity = int(capacity)
        if capacity < 16 or capacity > (1 << 30):
            raise ValueError(f"flows: capacity {capacity} out of range [16, 2**30]")
        if not 1 <= int(inspect_packets) <= 127:
            raise ValueError(f"flows: inspect_packets {inspect_packets} out of range [1, 127]")
        if not 0 <= int(inspect_bytes) <= (1 << 30):
            raise ValueError(f"flows: inspect_bytes {inspect_bytes} out of range [0, 2**30]")
        while cap < <uint64_t>capacity:
            cap <<= 1
            bits += 1
        tmo = [_units(float(tcp_timeout), "tcp_timeout"),
               _units(float(tcp_closed_timeout), "tcp_closed_timeout"),
               _units(float(udp_timeout), "udp_timeout"),
               _units(float(other_timeout), "other_timeout")]
        self.t = <ftab_t*>calloc(1, sizeof(ftab_t))
        if self.t == NULL:
            raise MemoryError("flows: cannot allocate the table header")
        # On huge pages where the kernel allows (nks_table_alloc): a flow lookup is
        # a random access into the table, and 4 KiB pages would make most of them a
        # TLB miss as well as a cache miss.  Zeroed, every page touched: the bound
        # is resident from the start.  The fingerprints likewise (read at random in
        # deep mode, written at random by every new flow; from calloc, a 2 MiB
        # array's pages were faulted in one by one by the first batches' writes).
        self.t.slots = <flow_t*>nks_table_alloc(cap * sizeof(flow_t))
        self.t.fp = <uint8_t*>nks_table_alloc(cap + FP_PAD)
        self.t.frags = <fragent_t*>calloc(FRAG_SLOTS, sizeof(fragent_t))
        if self.t.slots == NULL or self.t.fp == NULL or self.t.frags == NULL:
            free(self.t.slots)
            free(self.t.fp)
            free(self.t.frags)
            free(self.t)
            self.t = NULL
            raise MemoryError(f"flows: cannot allocate {cap} slots ({cap * sizeof(flow_t)} bytes)")
        self.t.capacity = cap
        self.t.probe = <uint32_t>min(<uint64_t>FLOW_PROBE_MAX, cap)
        self.t.win = <uint32_t>((<uint64_t>1 << self.t.probe) - 1)
        self.t.deep_mode = 2
        self.t.deep_bytes = _last_level_cache_bytes() // 4
        self.t.mask = cap - 1
        self.t.shift = 64 - bits
        for i in range(4):
            self.t.timeout[i] = tmo[i]
        self.t.timeout_min = min(tmo)
        self.t.inspect_packets = int(inspect_packets)
        self.t.inspect_bytes = int(inspect_bytes)
        self.settings = {"capacity": int(cap), "tcp_timeout": float(tcp_timeout),
                         "tcp_closed_timeout": float(tcp_closed_timeout),
                         "udp_timeout": float(udp_timeout),
                         "other_timeout": float(other_timeout),
                         "inspect_packets": int(inspect_packets),
                         "inspect_bytes": int(inspect_bytes)}

    def track_ids(self):
        """Give every flow a serial number (inspection: Classifier.annotate_flows);
        8 more bytes per slot, allocated once."""
        if self.t.ids == NULL:
            self.t.ids = <uint64_t*>calloc(self.t.capacity, sizeof(uint64_t))
            if self.t.ids == NULL:
                raise MemoryError("flows: cannot allocate flow ids")

    def __dealloc__(self):
        if self.t != NULL:
            free(self.t.ids)
            free(self.t.slots)
            free(self.t.fp)
            free(self.t.frags)
            free(self.t)
            self.t = NULL

    @property
    def capacity(self):
        return self.t.capacity

    @property
    def prefetch(self):
        """How the pipeline prefetches flow slots: "auto" (the default: "deep" once
        the live flows' slots outgrow the last-level cache, `deep_bytes`, else
        "home"), "deep" (the slot each lookup will read, found from the fingerprint
        bytes a block ahead) or "home" (the home slot and the two after it).  The
        counts are the same in every mode; tests set it to cover both."""
        return {0: "home", 1: "deep", 2: "auto"}[self.t.deep_mode]

    @prefetch.setter
    def prefetch(self, mode):
        modes = {"home": 0, "deep": 1, "auto": 2}
        if mode not in modes:
            raise ValueError(f"flows: prefetch mode {mode!r} not one of {sorted(modes)}")
        self.t.deep_mode = modes[mode]

    @property
    def deep_now(self):
        """Whether the last batch ran in deep mode."""
        return bool(self.t.deep_now)

    @property
    def deep_bytes(self):
        """Live flow bytes (flows x 64) beyond which "auto" prefetches deep."""
        return self.t.deep_bytes

    @property
    def slots_address(self):
        """Address of the slot array (to find its mapping in /proc/self/smaps: whether
        the kernel backed it with huge pages, nkstream.bench.huge_page_share)."""
        return <uintptr_t>self.t.slots

    @property
    def memory_bytes(self):
        """Fixed memory: slots x 65 bytes (the slot and its fingerprint byte) + the
        first-fragment table + header."""
        return (self.t.capacity * (sizeof(flow_t) + 1) + FP_PAD
                + FRAG_SLOTS * sizeof(fragent_t) + sizeof(ftab_t))

    def check(self):
        """The table's invariants, for tests: [] when they hold, else what is wrong.
        Every flow lies within the probe window from its home slot with no empty
        slot between, at least one slot is empty, `used` counts the flows, every
        slot's fingerprint is its key's (0 exactly for empty slots) and the mirror
        after the last slot matches."""
        cdef uint64_t i, j, home, n = 0
        cdef flow_t* f
        cdef ftab_t* t = self.t
        bad = []
        for i in range(t.capacity):
            f = &t.slots[i]
            if f.state == 0:
                if t.fp[i] != 0:
                    bad.append(f"slot {i}: empty, fingerprint {t.fp[i]}")
                continue
            n += 1
            home = _flow_home(t, f)
            if t.fp[i] != flow_fp(_flow_hash_of(f)):
                bad.append(f"slot {i}: fingerprint {t.fp[i]}, key's {flow_fp(_flow_hash_of(f))}")
            if ((i - home) & t.mask) >= t.probe:
                bad.append(f"slot {i}: {(i - home) & t.mask} slots past its home {home}")
            j = home
            while j != i:
                if t.slots[j].state == 0:
                    bad.append(f"slot {i}: empty slot {j} between it and its home {home}")
                    break
                j = (j + 1) & t.mask
        for i in range(min(<uint64_t>(FLOW_PROBE_MAX - 1), t.capacity)):
            if t.fp[t.capacity + i] != t.fp[i]:
                bad.append(f"fingerprint mirror {i}: {t.fp[t.capacity + i]} != {t.fp[i]}")
        if n != t.used:
            bad.append(f"used {t.used}, {n} flows in the slots")
        if n >= t.capacity:
            bad.append("no empty slot")
        return bad

    def __len__(self):
        return self.t.used

    def clear(self):
        """Forget every flow (nothing is counted: use Classifier.flush() to count
        pending packets first)."""
        memset(self.t.slots, 0, self.t.capacity * sizeof(flow_t))
        memset(self.t.fp, 0, self.t.capacity + FP_PAD)
        memset(self.t.frags, 0, FRAG_SLOTS * sizeof(fragent_t))
        if self.t.ids != NULL:
            memset(self.t.ids, 0, self.t.capacity * sizeof(uint64_t))
        self.t.used = 0
        self.t.cursor = 0
        self.t.has_now = 0

    def forget_lookups(self):
        """Drop every flow's cached prefix-table answers, so each flow looks its
        addresses up again at its next packet (the tables were swapped).  O(capacity)."""
        cdef uint64_t i
        with nogil:
            for i in range(self.t.capacity):
                _fc_forget(&self.t.slots[i])

    def entries(self):
        """The flows in the table as dicts (inspection and tests; O(capacity))."""
        out = []
        cdef uint64_t i
        cdef flow_t* f
        for i in range(self.t.capacity):
            f = &self.t.slots[i]
            if f.state == 0:
                continue
            n = 16 if f.state & FL_V6 else 4
            out.append({
                "slot": int(i), "a": bytes(f.a[:n]), "b": bytes(f.b[:n]),
                "ports": f.ports, "proto": f.proto, "state": f.state, "tag": f.tag,
                "sni": f.sni, "ftag": (f.ftag[0], f.ftag[1]),
                "pending_packets": (f.pkts[0], f.pkts[1]),
                "pending_bytes": (f.pbytes[0], f.pbytes[1]),
                "seen": (f.seen[0], f.seen[1]), "last": f.last,
                "home": int(_flow_home(self.t, f)),
            })
        return out
