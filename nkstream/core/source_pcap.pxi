# Capture-file record walkers: classic pcap and pcapng -> rec_t batches.
#
# A walker is handed one contiguous buffer (the whole mmap'd file, or one chunk of a
# pipe / gzip stream) and a position, and fills a preallocated rec_t array in a
# `noexcept nogil` loop until the array is full, the buffer ends at a record boundary,
# the buffer ends inside a record (a streaming reader refills and calls again from the
# same position), or the file is damaged.  Damage is reported as a status code plus
# the byte offset of the offending record (relative to the buffer; the caller adds the
# buffer's file offset) and up to two values for the message; nkstream.capture turns
# them into CaptureError / warnings.  No Python object and no allocation per packet.
#
# Formats:
#   pcap:   https://www.tcpdump.org/manpages/pcap-savefile.5.html and
#           draft-ietf-opsawg-pcap (file header, 16-byte record header; the network
#           field's upper bits carry FCS information: the link type is the low 16 bits,
#           as libpcap's LT_LINKTYPE() masks it).  Also the "modified" (Kuznetzov)
#           variant, magic 0xa1b2cd34, whose record headers are 24 bytes.
#   pcapng: draft-ietf-opsawg-pcapng (SHB 0x0A0D0D0A with byte-order magic 0x1A2B3C4D,
#           so the byte order can change at every section; IDB 1 with if_tsresol (9)
#           and if_tsoffset (14); EPB 6; SPB 3; obsolete Packet Block 2; every other
#           block is skipped by its length).

cdef extern from *:
    """
    /* Unaligned loads in an explicit byte order; compilers turn these into one load
       (plus bswap for the foreign order). */
    static inline uint16_t nkr_rd16(const uint8_t *p, int big) {
        return big ? (uint16_t)(((uint16_t)p[0] << 8) | p[1])
                   : (uint16_t)(((uint16_t)p[1] << 8) | p[0]);
    }
    static inline uint32_t nkr_rd32(const uint8_t *p, int big) {
        return big ? (((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3])
                   : (((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0]);
    }
    /* Records are walked by chasing lengths: the next header's address is known only
       once this one is read, so without help every record would cost a full memory
       latency.  The walkers instead keep a prefetch frontier NKR_PF_DIST bytes ahead
       of the current record and touch every cache line up to it, turning the chase
       into a sequential stream the memory system can overlap (prefetches never
       fault; the frontier stays inside the buffer). */
    #define NKR_PF_DIST 8192
    #define NKR_LINE 64
    #if defined(__GNUC__) || defined(__clang__)
    #define nkr_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
    #else
    #define nkr_prefetch(p) ((void)0)
    #endif
    """
    uint16_t nkr_rd16(const uint8_t* p, int big) nogil
    uint32_t nkr_rd32(const uint8_t* p, int big) nogil
    void nkr_prefetch(const uint8_t* p) nogil
    uint64_t NKR_PF_DIST
    uint64_t NKR_LINE

# Limits.  MAX_CAPLEN is libpcap's MAXIMUM_SNAPLEN: no capture tool writes a longer
# record, so a larger length means a damaged file.  MAX_BLOCK bounds what a streaming
# reader must hold in memory for one pcapng block (packet or not).
cdef enum:
    MAX_CAPLEN = 262144
    MAX_BLOCK = 16 * 1024 * 1024
    MAX_IFACES = 65535           # rec_t.iface is 16 bits
    PCAPNG_OPT_SLACK = 65536     # options allowed after a packet's data before a
                                 # block that runs past EOF counts as damage, not truncation
    NONPKT_TRUNC_MAX = 1048576   # a non-packet block cut at EOF is truncation if <= this

# Walk status (walk_t is stopped for one of these reasons).
cdef enum:
    WALK_FULL = 0        # the rec_t array is full
    WALK_END = 1         # the buffer ends exactly at a record boundary
    WALK_MORE = 2        # the buffer ends inside a record: w.need bytes from w.pos needed
    WALK_TRUNCATED = 3   # at EOF, the last record is cut short (warning: packets kept)
    WERR_BAD_MAGIC = 16      # pcapng SHB byte-order magic (val: the magic)
    WERR_VERSION = 17        # unsupported pcapng major version (val)
    WERR_BLOCK_ALIGN = 18    # block length not a multiple of 4 (val)
    WERR_BLOCK_SHORT = 19    # block length below its type's minimum (val, val2 = minimum)
    WERR_BLOCK_TRAILER = 20  # trailing block length differs from the leading one
    WERR_BLOCK_TOO_BIG = 21  # block length over MAX_BLOCK (val)
    WERR_CAPLEN_TOO_BIG = 22 # record caplen over MAX_CAPLEN (val)
    WERR_CAPLEN_BLOCK = 23   # record caplen exceeds its block (val, val2 = space)
    WERR_BEYOND_EOF = 24     # record length runs past the end of the file (val, val2 = bytes left)
    WERR_BAD_IFACE = 25      # packet refers to an undefined interface (val, val2 = defined)
    WERR_TOO_MANY_IFACES = 26
    WERR_NOMEM = 27
    WERR_TSRESOL = 28        # if_tsresol not representable (val)
    WERR_OPTION = 29         # IDB option runs past its block (val = option code)
    WERR_NOT_SHB = 30        # pcapng data does not start with a Section Header Block

ctypedef struct nkr_iface_t:
    uint16_t linktype
    uint32_t snaplen       # 0 = no limit
    uint8_t  tsresol       # raw if_tsresol byte (default 6: microseconds)
    uint8_t  pow2          # if_tsresol MSB set: 2^-n units
    uint8_t  shift         # pow2: n
    uint64_t mul, div      # pow10: ns = ticks * mul / div (one of them is 1)
    int64_t  off_ns        # if_tsoffset, in ns
    uint32_t section

ctypedef struct walk_t:
    int      fmt           # 1 pcap, 2 pcapng
    int      big           # current byte order is big-endian
    # pcap
    uint32_t hdrlen        # record header length: 16, or 24 for the modified format
    int64_t  tsmul         # fraction -> ns: 1000 (us) or 1 (ns)
    uint16_t linktype
    uint32_t snaplen
    # pcapng
    int      have_shb
    uint32_t section       # sections seen
    uint32_t if_base       # first interface index of the current section
    uint32_t nif           # interfaces defined so far, all sections (global indices)
    uint32_t if_cap
    nkr_iface_t* ifs
    # result of the last walk
    uint64_t pos           # next unread byte of the buffer
    uint64_t need          # WALK_MORE: bytes needed from pos
    uint64_t err_off       # offset (in the buffer) of the record the status is about
    uint64_t err_val, err_val2
    # totals over all walks
    uint64_t packets, wirebytes, capbytes, blocks_skipped
    # classic pcap in a large buffer: records walked ahead by chains (nkr_mc_*),
    # held in file order and handed out from mc_i (rec.off absolute in the buffer)
    int      mc_off        # 1: never (RecordWalker.chains, off unless set)
    rec_t*   mc            # MC_CAP records, allocated on first use: chain k's at
                           # k * MC_SEG, mc_cnt[k] of them (0 past the last accepted)
    Py_ssize_t mc_cnt[64]  # (MC_K)
    Py_ssize_t mc_k, mc_i  # next to hand out: chain mc_k's record mc_i
    uint64_t mc_handed     # records handed out from chains (RecordWalker.chained)
    const uint8_t* mc_buf  # the buffer they were walked in
    uint64_t mc_buflen


cdef inline int64_t nkr_ticks_ns(const nkr_iface_t* f, uint64_t t) noexcept nogil:
    """pcapng timestamp ticks -> ns since the epoch (if_tsresol, if_tsoffset)."""
    cdef uint64_t sec, frac, fns
    if f.pow2:
        if f.shift == 0:
            return <int64_t>(t * 1000000000ULL) + f.off_ns
        sec = t >> f.shift
        frac = t & ((1ULL << f.shift) - 1)
        if f.shift <= 33:      # frac < 2^33, frac * 1e9 < 2^63: exact in 64 bits
            fns = (frac * 1000000000ULL) >> f.shift
        else:
            fns = <uint64_t>((<double>frac * 1e9) / <double>(1ULL << f.shift))
        return <int64_t>(sec * 1000000000ULL + fns) + f.off_ns
    if f.div == 1:
        return <int64_t>(t * f.mul) + f.off_ns
    return <int64_t>(t // f.div) + f.off_ns


cdef int nkr_add_iface(walk_t* w, const uint8_t* p, uint32_t blen) noexcept nogil:
    """Parse an Interface Description Block (p at its start, blen validated, whole block
    present) and append it.  Returns 0 or a WERR_* code (w.err_val set)."""
    cdef int big = w.big
    cdef nkr_iface_t* f
    cdef nkr_iface_t* grown
    cdef uint32_t cap, optpos, optend, code, olen, e
    cdef uint64_t off_s
    cdef uint8_t r
    if w.nif >= MAX_IFACES:
        return WERR_TOO_MANY_IFACES
    if w.nif >= w.if_cap:
        cap = w.if_cap * 2 if w.if_cap else 16
        grown = <nkr_iface_t*>realloc(w.ifs, cap * sizeof(nkr_iface_t))
        if grown == NULL:
            return WERR_NOMEM
        w.ifs = grown
        w.if_cap = cap
    f = &w.ifs[w.nif]
    memset(f, 0, sizeof(nkr_iface_t))
    f.linktype = nkr_rd16(p + 8, big)
    f.snaplen = nkr_rd32(p + 12, big)
    f.section = w.section
    f.tsresol = 6
    off_s = 0
    # Options: code u16, length u16, value padded to 32 bits; opt_endofopt ends them.
    optpos = 16
    optend = blen - 4
    while optpos + 4 <= optend:
        code = nkr_rd16(p + optpos, big)
        olen = nkr_rd16(p + optpos + 2, big)
        if code == 0:
            break
        if optpos + 4 + olen > optend:
            w.err_val = code
            return WERR_OPTION
        if code == 9 and olen >= 1:          # if_tsresol
            f.tsresol = p[optpos + 4]
        elif code == 14 and olen == 8:       # if_tsoffset: signed seconds
            if big:
                off_s = (<uint64_t>nkr_rd32(p + optpos + 4, 1) << 32) | nkr_rd32(p + optpos + 8, 1)
            else:
                off_s = (<uint64_t>nkr_rd32(p + optpos + 8, 0) << 32) | nkr_rd32(p + optpos + 4, 0)
        optpos += 4 + ((olen + 3) & ~3u)
    r = f.tsresol
    if r & 0x80:
        e = r & 0x7F
        if e >= 64:
            w.err_val = r
            return WERR_TSRESOL
        f.pow2 = 1
        f.shift = <uint8_t>e
    else:
        e = r
        if e > 18:
            w.err_val = r
            return WERR_TSRESOL
        f.mul = 1
        f.div = 1
        while e < 9:
            f.mul *= 10
            e += 1
        while e > 9:
            f.div *= 10
            e -= 1
    f.off_ns = <int64_t>(off_s * 1000000000ULL)
    w.nif += 1
    return 0


cdef inline void nkr_pcap_rec(rec_t* r, uint32_t sec, uint32_t frac, uint32_t caplen,
                              uint32_t wirelen, int64_t tsmul, uint16_t lt,
                              uint64_t off) noexcept nogil:
    # One classic pcap record (its header's four fields) as a batch record.
    r.ts_ns = <int64_t>sec * 1000000000 + <int64_t>frac * tsmul
    r.off = off
    r.caplen = caplen
    r.wirelen = wirelen
    r.linktype = lt
    r.vlan_tci = 0
    r.vlan_tpid = 0
    r.iface = 0


# Walking a mapped classic pcap by chains.
#
# The walker below chases record lengths and prefetches every line of the buffer
# ahead of itself, so the whole file streams through the caches although only each
# record's header and its frame's first lines are read: on the benchmark capture
# (490 bytes a packet) that stream is most of the read's cost (docs/benchmarks.md,
# "The record walk reads the whole file").  Where at least a window of
# MC_K regions of MC_RB bytes (plus a largest record) lies ahead in the buffer, the
# window is walked instead by MC_K chains side by side, one per region, each
# prefetching only its next header and the line after it: MC_K misses in flight,
# and the payload lines are never fetched.
#
# Region k > 0 starts at the first offset, in its first MC_SYNC_SCAN bytes, whose
# header is plausible (nkr_mc_plausible; following its length to check the next
# header too was a dependent cache miss per region, which made small windows
# slow).  That is a guess; it is accepted only when chain k-1, walking from an accepted start, lands
# exactly on it -- then it is a record start of the sequential walk, and so are all
# of chain k's records, by the same argument as for chain 0.  At the first chain
# that fails (a chain overshooting the next start, a damaged length), the records up
# to the last accepted position are kept and the sequential walker takes over from
# there, so every error is found, and reported, by the sequential walker at its
# exact offset.  A region with no plausible start (records longer than the scan,
# e.g. jumbo frames) is walked by the chain before it.
cdef enum:
    MC_K = 64                 # chains, one per region
    MC_RB = 65536             # bytes per region: a window of 4 MiB
    MC_SYNC_SCAN = 2048       # bytes of a region searched for its first record
    MC_SEG = (MC_RB >> 4) + 2 # records a chain can hold (its region, then one more)
    MC_CAP = MC_K * MC_SEG    # scratch records (32 bytes each: 8.4 MB, touched as used)
    MC_MIN_REC = 256          # mean bytes a record (header included) below which
                              # the chains do not pay: every line then holds headers
    MC_WARMUP = 1024          # records walked one after the other before the mean counts

assert MC_K == 64           # the size of walk_t.mc_cnt

cdef extern from *:
    """
    #define NKS_MC_NONE UINT64_MAX
    """
    const uint64_t MC_NONE "NKS_MC_NONE"


cdef inline bint nkr_mc_plausible(const uint8_t* h, uint32_t fracmax,
                                  uint32_t sec0) noexcept nogil:
    # A header a capture tool could have written (little-endian, 16 bytes), near in
    # time to the window's first record (sec0): within a day of it, the fraction in
    # range, a captured length of 1 byte to libpcap's limit and no more than the
    # wire length.  (Runs of zeros, as in padding, fail the time.)
    cdef uint32_t caplen = nkr_rd32(h + 8, 0), wirelen = nkr_rd32(h + 12, 0)
    return ((nkr_rd32(h, 0) - sec0 + 86400u) <= 2u * 86400u and nkr_rd32(h + 4, 0) < fracmax
            and caplen - 1u < <uint32_t>MAX_CAPLEN and caplen <= wirelen)


cdef uint64_t nkr_mc_sync(const uint8_t* buf, uint64_t lo, uint64_t hi,
                          uint32_t fracmax, uint32_t sec0) noexcept nogil:
    # The first offset in [lo, hi) whose header is plausible; MC_NONE if none.
    # Candidates are found by memchr (vectorised in libc) on the top byte of the
    # window's time, which a header's seconds share unless a 194-day boundary
    # falls between them (then the region has no start and its chain before walks
    # it): a byte-by-byte test of every offset cost ~2,500 instructions a region.
    cdef uint64_t q = lo
    cdef const uint8_t* x
    cdef uint8_t top = <uint8_t>(sec0 >> 24)
    while q < hi:
        x = <const uint8_t*>memchr(buf + q + 3, top, hi - q)
        if x == NULL:
            break
        q = <uint64_t>(x - 3 - buf)
        if nkr_mc_plausible(buf + q, fracmax, sec0):
            return q
        q += 1
    return MC_NONE


cdef Py_ssize_t nkr_mc_window(walk_t* w, const uint8_t* buf, uint64_t buflen) noexcept nogil:
    """Walk the window at w.pos by chains into w.mc (file order, rec.off absolute);
    the number of records accepted (0: no window here, or nothing accepted)."""
    cdef uint64_t pos0 = w.pos
    cdef uint64_t start[MC_K]
    cdef uint64_t at[MC_K]
    cdef uint64_t tgt[MC_K]
    cdef Py_ssize_t cnt[MC_K]
    cdef uint8_t bad[MC_K]
    cdef uint64_t nxt, P, wend
    cdef uint32_t fracmax = 1000000000 if w.tsmul == 1 else 1000000
    cdef uint32_t sec, frac, caplen, wirelen
    cdef int64_t tsmul = w.tsmul
    cdef uint16_t lt = w.linktype
    cdef int k, live
    cdef Py_ssize_t n
    if w.big or w.hdrlen != 16:
        return 0
    # small records: the sequential walk reads nearly every line anyway, and the
    # chains' bookkeeping per record then costs more than it saves (a file of
    # 76-byte records walked 4x slower)
    if w.packets < MC_WARMUP or w.capbytes + 16 * w.packets < <uint64_t>MC_MIN_REC * w.packets:
        return 0
    # room for the window, its last region's start scan and a record overrunning it
    if buflen < pos0 or buflen - pos0 < <uint64_t>MC_K * MC_RB + MC_SYNC_SCAN + 16 + MAX_CAPLEN:
        return 0
    if w.mc == NULL:
        w.mc = <rec_t*>malloc(<size_t>MC_CAP * sizeof(rec_t))
        if w.mc == NULL:
            return 0
    wend = pos0 + <uint64_t>MC_K * MC_RB
    start[0] = pos0
    for k in range(1, MC_K):
        nkr_prefetch(buf + pos0 + <uint64_t>k * MC_RB)
        nkr_prefetch(buf + pos0 + <uint64_t>k * MC_RB + NKR_LINE)
    for k in range(1, MC_K):
        start[k] = nkr_mc_sync(buf, pos0 + <uint64_t>k * MC_RB,
                               pos0 + <uint64_t>k * MC_RB + MC_SYNC_SCAN, fracmax,
                               nkr_rd32(buf + pos0, 0))
    # each chain walks to the next chain's start (the last one: past the window end)
    nxt = wend
    for k in range(MC_K - 1, -1, -1):
        tgt[k] = nxt
        if start[k] != MC_NONE:
            nxt = start[k]
        at[k] = start[k]
        cnt[k] = 0
        bad[k] = 0
        if start[k] != MC_NONE:
            nkr_prefetch(buf + start[k])
    live = 1
    while live:
        live = 0
        for k in range(MC_K):
            P = at[k]
            if P == MC_NONE or P >= tgt[k] or bad[k] or cnt[k] >= MC_SEG:
                continue
            live = 1
            sec = nkr_rd32(buf + P, 0)
            frac = nkr_rd32(buf + P + 4, 0)
            caplen = nkr_rd32(buf + P + 8, 0)
            wirelen = nkr_rd32(buf + P + 12, 0)
            if caplen > MAX_CAPLEN:
                bad[k] = 1        # the sequential walker will say so, at this offset
                continue
            nkr_pcap_rec(&w.mc[<Py_ssize_t>k * MC_SEG + cnt[k]], sec, frac, caplen,
                         wirelen, tsmul, lt, P + 16)
            cnt[k] += 1
            P += 16 + caplen
            at[k] = P
            nkr_prefetch(buf + P)
            nkr_prefetch(buf + P + NKR_LINE)
    # Accept chain 0, then each next chain whose start the accepted chains reached
    # exactly; the hand-out takes the accepted chains' records in order, where
    # they are.
    n = cnt[0]
    w.mc_cnt[0] = cnt[0]
    for k in range(1, MC_K):
        w.mc_cnt[k] = 0
    if not bad[0] and at[0] == tgt[0]:
        for k in range(1, MC_K):
            if start[k] == MC_NONE:
                continue
            w.mc_cnt[k] = cnt[k]
            n += cnt[k]
            if bad[k] or at[k] != tgt[k]:
                break
    w.mc_k = 0
    w.mc_i = 0
    w.mc_buf = buf
    w.mc_buflen = buflen
    return n


cdef inline const rec_t* nkr_mc_next(walk_t* w) noexcept nogil:
    # The next record walked ahead (skipping chains with none left), or NULL.
    while w.mc_k < MC_K:
        if w.mc_i < w.mc_cnt[w.mc_k]:
            return &w.mc[<Py_ssize_t>w.mc_k * MC_SEG + w.mc_i]
        w.mc_k += 1
        w.mc_i = 0
    return NULL


cdef Py_ssize_t nkr_mc_handout(walk_t* w, uint64_t base, rec_t* recs,
                               Py_ssize_t maxrec) noexcept nogil:
    # Up to maxrec records walked ahead, rec.off made relative to base; the
    # walker's position and totals advance as if it had walked them.
    cdef Py_ssize_t i, m = 0, take
    cdef uint64_t wb = 0, cb = 0
    cdef rec_t* r
    while m < maxrec and nkr_mc_next(w) != NULL:
        take = w.mc_cnt[w.mc_k] - w.mc_i
        if take > maxrec - m:
            take = maxrec - m
        memcpy(recs + m, &w.mc[<Py_ssize_t>w.mc_k * MC_SEG + w.mc_i], take * sizeof(rec_t))
        w.mc_i += take
        m += take
    for i in range(m):
        r = &recs[i]
        wb += r.wirelen
        cb += r.caplen
        r.off -= base
    if m:
        w.pos = recs[m - 1].off + base + recs[m - 1].caplen
    w.mc_handed += m
    w.packets += m
    w.wirebytes += wb
    w.capbytes += cb
    return m


cdef int nkr_pcap_walk(walk_t* w, const uint8_t* buf, uint64_t buflen, uint64_t base,
                       rec_t* recs, Py_ssize_t maxrec, Py_ssize_t* nout,
                       bint at_eof) noexcept nogil:
    """Classic pcap records from w.pos.  rec.off is relative to `base`.  Where a
    window of the buffer lies ahead, its records come from the chains (nkr_mc_window)
    and are handed out over as many calls as it takes; the rest, and anything the
    chains left (damage, the buffer's end), from the sequential walk."""
    cdef Py_ssize_t n = 0, got = 0
    cdef int rc = WALK_FULL
    cdef const rec_t* nx
    # Only in a buffer that holds the rest of the input (a mapped file, where the
    # reader turns chains on): one refilled between calls could bring other bytes
    # to the same addresses.
    if at_eof and not w.mc_off and base <= w.pos:
        while n < maxrec:
            nx = nkr_mc_next(w)
            if nx == NULL or w.mc_buf != buf or w.mc_buflen != buflen or nx.off != w.pos + 16:
                w.mc_k = MC_K
                if w.packets < MC_WARMUP:
                    # the first records one after the other (their mean size
                    # decides), then the chains again
                    got = 0
                    rc = nkr_pcap_walk_seq(w, buf, buflen, base, recs + n,
                                           min(maxrec - n, MC_WARMUP - <Py_ssize_t>w.packets),
                                           &got, at_eof)
                    n += got
                    if rc != WALK_FULL:
                        nout[0] = n
                        return rc
                    continue
                if nkr_mc_window(w, buf, buflen) == 0:
                    break
            n += nkr_mc_handout(w, base, recs + n, maxrec - n)
        if n >= maxrec:
            nout[0] = n
            return WALK_FULL
    rc = nkr_pcap_walk_seq(w, buf, buflen, base, recs + n, maxrec - n, &got, at_eof)
    nout[0] = n + got
    return rc


cdef int nkr_pcap_walk_seq(walk_t* w, const uint8_t* buf, uint64_t buflen, uint64_t base,
                           rec_t* recs, Py_ssize_t maxrec, Py_ssize_t* nout,
                           bint at_eof) noexcept nogil:
    """Classic pcap records from w.pos, one after the other.  rec.off is relative to
    `base`."""
    cdef uint64_t pos = w.pos
    cdef uint64_t avail
    cdef Py_ssize_t n = 0
    cdef int big = w.big
    cdef uint32_t hl = w.hdrlen
    cdef uint32_t sec, frac, caplen = 0, wirelen = 0
    cdef int64_t tsmul = w.tsmul
    cdef uint16_t lt = w.linktype
    cdef uint64_t wb = 0, cb = 0
    cdef const uint8_t* p
    cdef rec_t* r
    cdef int rc
    cdef bint have_hdr = False
    cdef uint64_t pf = pos          # prefetch frontier
    cdef uint64_t pf_end
    while True:
        if n >= maxrec:
            rc = WALK_FULL
            break
        avail = buflen - pos
        if avail == 0:
            rc = WALK_END
            break
        pf_end = pos + NKR_PF_DIST
        if pf_end > buflen:
            pf_end = buflen
        while pf < pf_end:
            nkr_prefetch(buf + pf)
            pf += NKR_LINE
        if avail < hl:
            have_hdr = False
            w.need = hl
            rc = WALK_MORE
            break
        p = buf + pos
        sec = nkr_rd32(p, big)
        frac = nkr_rd32(p + 4, big)
        caplen = nkr_rd32(p + 8, big)
        wirelen = nkr_rd32(p + 12, big)
        if caplen > MAX_CAPLEN:
            w.err_off = pos
            w.err_val = caplen
            rc = WERR_CAPLEN_TOO_BIG
            break
        if avail - hl < caplen:
            have_hdr = True
            w.need = hl + caplen
            rc = WALK_MORE
            break
        nkr_pcap_rec(&recs[n], sec, frac, caplen, wirelen, tsmul, lt, pos + hl - base)
        wb += wirelen
        cb += caplen
        n += 1
        pos += hl + caplen
    if rc == WALK_MORE:
        w.err_off = pos
        if at_eof:
            # The file ends inside this record.  A header that is self-consistent
            # (caplen within the snap length and the wire length) means the capture
            # was cut while being written: a truncated last record.  Otherwise the
            # length field itself is damaged: the record runs beyond the file.
            w.err_val = caplen if have_hdr else 0
            w.err_val2 = avail - hl if have_hdr else avail
            if (not have_hdr or (caplen <= wirelen and
                    (w.snaplen == 0 or w.snaplen > MAX_CAPLEN or caplen <= w.snaplen))):
                rc = WALK_TRUNCATED
            else:
                rc = WERR_BEYOND_EOF
    w.pos = pos
    w.packets += n
    w.wirebytes += wb
    w.capbytes += cb
    nout[0] = n
    return rc


cdef int nkr_pcapng_walk(walk_t* w, const uint8_t* buf, uint64_t buflen, uint64_t base,
                         rec_t* recs, Py_ssize_t maxrec, Py_ssize_t* nout,
                         bint at_eof) noexcept nogil:
    """pcapng blocks from w.pos.  rec.off is relative to `base`; rec.iface is the
    interface's global index (over all sections)."""
    cdef uint64_t pos = w.pos
    cdef uint64_t avail = 0
    cdef Py_ssize_t n = 0
    cdef int big
    cdef uint32_t btype, blen = 0, caplen = 0, origlen = 0, ifid, minlen, space, snap
    cdef uint32_t dataoff
    cdef uint64_t ticks
    cdef const uint8_t* p
    cdef rec_t* r
    cdef const nkr_iface_t* f
    cdef int rc = WALK_END
    cdef int e
    cdef bint pkt = False, have_fixed = False
    cdef uint64_t pf = pos          # prefetch frontier
    cdef uint64_t pf_end
    while True:
        if n >= maxrec:
            rc = WALK_FULL
            break
        avail = buflen - pos
        if avail == 0:
            rc = WALK_END
            break
        pf_end = pos + NKR_PF_DIST
        if pf_end > buflen:
            pf_end = buflen
        while pf < pf_end:
            nkr_prefetch(buf + pf)
            pf += NKR_LINE
        pkt = False
        have_fixed = False
        blen = 0
        if avail < 12:
            w.need = 12
            rc = WALK_MORE
            break
        p = buf + pos
        if p[0] == 0x0A and p[1] == 0x0D and p[2] == 0x0D and p[3] == 0x0A:
            # Section Header Block: its byte-order magic sets the order of the section.
            if p[8] == 0x1A and p[9] == 0x2B and p[10] == 0x3C and p[11] == 0x4D:
                big = 1
            elif p[8] == 0x4D and p[9] == 0x3C and p[10] == 0x2B and p[11] == 0x1A:
                big = 0
            else:
                w.err_off = pos
                w.err_val = nkr_rd32(p + 8, 1)
                rc = WERR_BAD_MAGIC
                break
            blen = nkr_rd32(p + 4, big)
            minlen = 28
            if blen & 3:
                w.err_off = pos
                w.err_val = blen
                rc = WERR_BLOCK_ALIGN
                break
            if blen < minlen:
                w.err_off = pos
                w.err_val = blen
                w.err_val2 = minlen
                rc = WERR_BLOCK_SHORT
                break
            if blen > MAX_BLOCK:
                w.err_off = pos
                w.err_val = blen
                rc = WERR_BLOCK_TOO_BIG
                break
            if avail < blen:
                w.need = blen
                rc = WALK_MORE
                break
            if nkr_rd32(p + blen - 4, big) != blen:
                w.err_off = pos
                w.err_val = blen
                w.err_val2 = nkr_rd32(p + blen - 4, big)
                rc = WERR_BLOCK_TRAILER
                break
            if nkr_rd16(p + 12, big) != 1:
                w.err_off = pos
                w.err_val = nkr_rd16(p + 12, big)
                rc = WERR_VERSION
                break
            w.big = big
            w.have_shb = 1
            w.section += 1
            w.if_base = w.nif   # interface ids restart at 0 in every section
            pos += blen
            continue
        if not w.have_shb:
            w.err_off = pos
            w.err_val = nkr_rd32(p, 1)
            rc = WERR_NOT_SHB
            break
        big = w.big
        btype = nkr_rd32(p, big)
        blen = nkr_rd32(p + 4, big)
        if btype == 6 or btype == 2:
            minlen = 32
            pkt = True
        elif btype == 3:
            minlen = 16
            pkt = True
        elif btype == 1:
            minlen = 20
        else:
            minlen = 12
        if blen & 3:
            w.err_off = pos
            w.err_val = blen
            rc = WERR_BLOCK_ALIGN
            break
        if blen < minlen:
            w.err_off = pos
            w.err_val = blen
            w.err_val2 = minlen
            rc = WERR_BLOCK_SHORT
            break
        if blen > MAX_BLOCK:
            w.err_off = pos
            w.err_val = blen
            rc = WERR_BLOCK_TOO_BIG
            break
        if btype == 6 or btype == 2:
            # EPB: if_id u32, ts hi u32, ts lo u32, caplen u32, origlen u32, data.
            # Obsolete PB: if_id u16, drops u16, then the same.
            if avail < 28:
                w.need = blen
                rc = WALK_MORE
                break
            have_fixed = True
            caplen = nkr_rd32(p + 20, big)
            origlen = nkr_rd32(p + 24, big)
            ifid = nkr_rd32(p + 8, big) if btype == 6 else nkr_rd16(p + 8, big)
            if caplen > MAX_CAPLEN:
                w.err_off = pos
                w.err_val = caplen
                rc = WERR_CAPLEN_TOO_BIG
                break
            if caplen > blen - 32:
                w.err_off = pos
                w.err_val = caplen
                w.err_val2 = blen - 32
                rc = WERR_CAPLEN_BLOCK
                break
            if ifid >= w.nif - w.if_base:
                w.err_off = pos
                w.err_val = ifid
                w.err_val2 = w.nif - w.if_base
                rc = WERR_BAD_IFACE
                break
            if avail < blen:
                w.need = blen
                rc = WALK_MORE
                break
            if nkr_rd32(p + blen - 4, big) != blen:
                w.err_off = pos
                w.err_val = blen
                w.err_val2 = nkr_rd32(p + blen - 4, big)
                rc = WERR_BLOCK_TRAILER
                break
            f = &w.ifs[w.if_base + ifid]
            ticks = (<uint64_t>nkr_rd32(p + 12, big) << 32) | nkr_rd32(p + 16, big)
            r = &recs[n]
            r.ts_ns = nkr_ticks_ns(f, ticks)
            r.off = pos + 28 - base
            r.caplen = caplen
            r.wirelen = origlen
            r.linktype = f.linktype
            r.vlan_tci = 0
            r.vlan_tpid = 0
            r.iface = <uint16_t>(w.if_base + ifid)
            w.wirebytes += origlen
            w.capbytes += caplen
            n += 1
            pos += blen
            continue
        if btype == 3:
            # SPB: original length u32, then data; no timestamp, no interface id
            # (always interface 0); the captured length is implied:
            # min(original length, snaplen, the block's data space).
            if w.nif - w.if_base == 0:
                w.err_off = pos
                w.err_val = 0
                w.err_val2 = 0
                rc = WERR_BAD_IFACE
                break
            # (have_fixed stays False: an SPB cut at EOF is always a truncation, as
            # its captured length is implied by the block length itself.)
            origlen = nkr_rd32(p + 8, big)
            space = blen - 16
            f = &w.ifs[w.if_base]
            snap = f.snaplen
            caplen = origlen
            if snap != 0 and caplen > snap:
                caplen = snap
            if caplen > space:
                caplen = space
            if caplen > MAX_CAPLEN:
                w.err_off = pos
                w.err_val = caplen
                rc = WERR_CAPLEN_TOO_BIG
                break
            if avail < blen:
                w.need = blen
                rc = WALK_MORE
                break
            if nkr_rd32(p + blen - 4, big) != blen:
                w.err_off = pos
                w.err_val = blen
                w.err_val2 = nkr_rd32(p + blen - 4, big)
                rc = WERR_BLOCK_TRAILER
                break
            r = &recs[n]
            r.ts_ns = 0
            r.off = pos + 12 - base
            r.caplen = caplen
            r.wirelen = origlen
            r.linktype = f.linktype
            r.vlan_tci = 0
            r.vlan_tpid = 0
            r.iface = <uint16_t>w.if_base
            w.wirebytes += origlen
            w.capbytes += caplen
            n += 1
            pos += blen
            continue
        # Any other block (IDB handled, NRB, ISB, DSB, custom ...): whole block, skip.
        if avail < blen:
            w.need = blen
            rc = WALK_MORE
            break
        if nkr_rd32(p + blen - 4, big) != blen:
            w.err_off = pos
            w.err_val = blen
            w.err_val2 = nkr_rd32(p + blen - 4, big)
            rc = WERR_BLOCK_TRAILER
            break
        if btype == 1:
            e = nkr_add_iface(w, p, blen)
            if e != 0:
                w.err_off = pos
                rc = e
                break
        else:
            w.blocks_skipped += 1
        pos += blen
    if rc == WALK_MORE:
        w.err_off = pos
        if at_eof:
            # Cut at EOF: a block whose header fits what it claims to hold is a capture
            # cut while being written (truncated last record); a length far beyond what
            # the block could hold means the length field is damaged.
            w.err_val = blen
            w.err_val2 = avail
            if avail < 12:
                rc = WALK_TRUNCATED
            elif pkt and have_fixed:
                space = ((caplen + 3) & ~3u) + 32
                if blen <= space + PCAPNG_OPT_SLACK and caplen <= origlen:
                    rc = WALK_TRUNCATED
                else:
                    rc = WERR_BEYOND_EOF
            elif pkt:
                rc = WALK_TRUNCATED
            elif blen <= NONPKT_TRUNC_MAX:
                rc = WALK_TRUNCATED
            else:
                rc = WERR_BEYOND_EOF
    w.pos = pos
    w.packets += n
    nout[0] = n
    return rc


cdef inline int nkr_walk(walk_t* w, const uint8_t* buf, uint64_t buflen, uint64_t base,
                         rec_t* recs, Py_ssize_t maxrec, Py_ssize_t* nout,
                         bint at_eof) noexcept nogil:
    """The walker of w's format (set_pcap / set_pcapng) from w.pos."""
    if w.fmt == 1:
        return nkr_pcap_walk(w, buf, buflen, base, recs, maxrec, nout, at_eof)
    return nkr_pcapng_walk(w, buf, buflen, base, recs, maxrec, nout, at_eof)


cdef class RecordWalker:
    """Native record walker for one capture file (pcap or pcapng).

    Python drives it once per batch: ``walk(buf, pos, recs, base, at_eof)`` fills
    ``recs`` (a REC_DTYPE array) from ``buf[pos:]`` and returns ``(n, status)``; the
    position reached, the bytes still needed and the damage details are attributes.
    See nkstream/capture.py for the reader built on it.
    """
    cdef walk_t w

    def __cinit__(self):
        memset(&self.w, 0, sizeof(walk_t))
        self.w.mc_off = 1
        self.w.mc_k = MC_K

    def __dealloc__(self):
        free(self.w.ifs)
        self.w.ifs = NULL
        free(self.w.mc)
        self.w.mc = NULL

    @property
    def chains(self):
        """Whether a classic pcap is walked ahead by chains where a window of the
        buffer lies ahead (nkr_mc_window).  Off by default; the reader turns it on
        for a mapped file, whose buffer (the whole file) stays the same and
        unchanged from call to call, as the records walked ahead need: a caller
        that passes another buffer, or changes this one, sets it again (which also
        drops them)."""
        return not self.w.mc_off

    @chains.setter
    def chains(self, bint on):
        self.w.mc_off = not on
        self.w.mc_k = MC_K

    @property
    def chained(self):
        """Records so far that came from windows walked by chains."""
        return self.w.mc_handed

    def set_pcap(self, bint big, bint nsec, uint32_t hdrlen, uint32_t linktype,
                 uint32_t snaplen):
        """Configure for classic pcap records (values from the 24-byte file header)."""
        self.w.fmt = 1
        self.w.big = big
        self.w.tsmul = 1 if nsec else 1000
        self.w.hdrlen = hdrlen
        self.w.linktype = <uint16_t>(linktype & 0xFFFF)
        self.w.snaplen = snaplen

    def set_pcapng(self):
        """Configure for pcapng blocks; the data must start with a Section Header."""
        self.w.fmt = 2

    cdef int _start(self, uint64_t buflen, uint64_t pos, cnp.ndarray recs, uint64_t base,
                    rec_t** rp, Py_ssize_t* maxrec) except -1:
        # Check a walk's arguments and position the walker at `pos` (walk() and
        # Classifier.walk_process).
        if recs.dtype != REC_DTYPE or not recs.flags.c_contiguous or not recs.flags.writeable:
            raise ValueError("recs must be a writable C-contiguous REC_DTYPE array")
        if recs.ndim != 1:
            raise ValueError("recs must be one-dimensional")
        if pos > buflen:
            raise ValueError("position beyond the buffer")
        if base > pos:
            raise ValueError("base beyond the position")
        if self.w.fmt == 0:
            raise ValueError("walker not configured: call set_pcap() or set_pcapng()")
        maxrec[0] = recs.shape[0]
        rp[0] = <rec_t*>cnp.PyArray_DATA(recs)
        self.w.pos = pos
        self.w.need = 0
        return 0

    def walk(self, buf, uint64_t pos, cnp.ndarray recs, uint64_t base=0, bint at_eof=True):
        """Fill ``recs`` from ``buf[pos:]``; returns ``(n, status)`` (WALK_* / WERR_*)."""
        cdef const uint8_t[::1] mv = buf
        cdef const uint8_t* p = NULL
        cdef uint64_t buflen = mv.shape[0]
        cdef Py_ssize_t maxrec, n = 0
        cdef rec_t* rp
        cdef int rc
        self._start(buflen, pos, recs, base, &rp, &maxrec)
        if buflen:
            p = &mv[0]
        with nogil:
            rc = nkr_walk(&self.w, p, buflen, base, rp, maxrec, &n, at_eof)
        return n, rc

    @property
    def pos(self):
        return self.w.pos

    @property
    def need(self):
        return self.w.need

    @property
    def err_off(self):
        return self.w.err_off

    @property
    def err_val(self):
        return self.w.err_val

    @property
    def err_val2(self):
        return self.w.err_val2

    @property
    def packets(self):
        return self.w.packets

    @property
    def wirebytes(self):
        return self.w.wirebytes

    @property
    def capbytes(self):
        return self.w.capbytes

    @property
    def blocks_skipped(self):
        return self.w.blocks_skipped

    @property
    def sections(self):
        return self.w.section

    @property
    def big_endian(self):
        return bool(self.w.big)

    @property
    def n_interfaces(self):
        return self.w.nif if self.w.fmt == 2 else 1

    def interface(self, uint32_t i):
        """pcapng interface ``i`` (global index) as a dict."""
        cdef nkr_iface_t* f
        if self.w.fmt != 2:
            return {"linktype": self.w.linktype, "snaplen": self.w.snaplen,
                    "tsresol": 9 if self.w.tsmul == 1 else 6, "tsoffset": 0, "section": 0}
        if i >= self.w.nif:
            raise IndexError(i)
        f = &self.w.ifs[i]
        return {"linktype": f.linktype, "snaplen": f.snaplen, "tsresol": f.tsresol,
                "tsoffset": f.off_ns // 1000000000, "section": f.section - 1}


WALK_STATUS = {
    "full": WALK_FULL, "end": WALK_END, "more": WALK_MORE, "truncated": WALK_TRUNCATED,
    "bad_magic": WERR_BAD_MAGIC, "version": WERR_VERSION, "block_align": WERR_BLOCK_ALIGN,
    "block_short": WERR_BLOCK_SHORT, "block_trailer": WERR_BLOCK_TRAILER,
    "block_too_big": WERR_BLOCK_TOO_BIG, "caplen_too_big": WERR_CAPLEN_TOO_BIG,
    "caplen_block": WERR_CAPLEN_BLOCK, "beyond_eof": WERR_BEYOND_EOF,
    "bad_iface": WERR_BAD_IFACE, "too_many_ifaces": WERR_TOO_MANY_IFACES,
    "nomem": WERR_NOMEM, "tsresol": WERR_TSRESOL, "option": WERR_OPTION,
    "not_shb": WERR_NOT_SHB,
}
MAX_RECORD_CAPLEN = MAX_CAPLEN
MAX_PCAPNG_BLOCK = MAX_BLOCK
