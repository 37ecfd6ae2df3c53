# The per-batch loop: decode -> LPM (watch src/dst, peer) -> tag -> count.
#
# One call per batch from Python; the loop runs without the GIL over the batch's
# rec_t index and touches only C structs owned by the PrefixCore / RuleCore /
# Counters objects, whose pointers are read once per batch (no vtable dispatch, no
# Python object per packet).  Every packet read is counted exactly once under a key,
# decoded or not, so the sum over keys equals the packets and bytes read.
#
# Direction and sides (DESIGN.md vocabulary): src in the watch table -> outbound,
# dst -> inbound, both -> internal (watch label of src), neither -> transit.  The
# *peer* is the other side: dst for outbound/internal, src for inbound; for transit
# the dst's peer label, or the src's when the dst has none.  A TLS ClientHello SNI
# that matches a service suffix overrides the address-based peer label.


cdef inline int _check_batch(const uint8_t[::1] data, object recs, rec_t** out_recs,
                             Py_ssize_t* out_n) except -1:
    """Validate a batch: recs is a C-contiguous REC_DTYPE array whose every frame lies
    inside data (a source bug otherwise: raise, never read out of bounds)."""
    cdef cnp.ndarray arr
    if not isinstance(recs, np.ndarray):
        raise TypeError("recs must be a numpy array of REC_DTYPE")
    arr = <cnp.ndarray>recs
    if arr.dtype != REC_DTYPE or arr.ndim != 1 or not arr.flags.c_contiguous:
        raise TypeError("recs must be a 1-d C-contiguous numpy array of REC_DTYPE")
    cdef Py_ssize_t n = arr.shape[0], i
    cdef rec_t* r = <rec_t*>cnp.PyArray_DATA(arr)
    cdef uint64_t size = <uint64_t>data.shape[0]
    cdef Py_ssize_t bad = -1
    with nogil:
        for i in range(n):
            if r[i].off > size or r[i].caplen > size - r[i].off:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"record {bad}: frame at offset {r[bad].off} with caplen "
                         f"{r[bad].caplen} lies outside the batch buffer of {size} bytes")
    out_recs[0] = r
    out_n[0] = n
    return 0


# Records walked and classified at a time by Classifier.walk_process: their frames
# (~0.5 MiB at 500 B a packet) stay in L2 between the walk and the classification.
cdef enum:
    WALK_CHUNK = 1024


# sides_t and _sides() live in flows.pxi (included before this file): the flow table
# needs them to count a flow's pending packets.


cdef class Classifier:
    """Native classifier: owns nothing but references to the tables, rules and
    counters it was built from; `process(data, recs)` runs one batch."""
    cdef readonly PrefixCore watch
    cdef readonly PrefixCore peer
    cdef readonly RuleCore rules
    cdef readonly Counters counters
    cdef readonly FlowTable flows

    def __init__(self, PrefixCore watch not None, PrefixCore peer not None,
                 RuleCore rules not None, Counters counters not None,
                 FlowTable flows=None):
        """`flows`: a FlowTable turns flow state on (verdicts per flow, flow counts);
        None keeps the per-packet path."""
        self.watch = watch
        self.peer = peer
        self.rules = rules
        self.counters = counters
        self.flows = flows

    cdef void _ctx(self, fctx_t* c):
        c.t = self.flows.t if self.flows is not None else NULL
        c.a = self.counters.a
        c.w4 = self.watch.v4
        c.w6 = self.watch.v6
        c.p4 = self.peer.v4
        c.p6 = self.peer.v6

    def close_window(self):
        """Call when a snapshot window closes, before `counters.snapshot()`: ends
        flows idle past their timeout (by the latest packet time seen), counts every
        undecided flow's pending packets under their per-packet tags and in the
        `pending_*` totals, and records `flows_active`.  After it, the sum over keys
        equals the packets and bytes read in the window.  O(capacity).  Returns the
        number of flows that timed out.  A no-op without flow state."""
        cdef fctx_t c
        cdef uint64_t expired
        if self.flows is None:
            return 0
        self._ctx(&c)
        with nogil:
            c.t.cursor = 0
            expired = flow_sweep(&c, c.t.capacity, True)
            # an expired slot is looked at twice (the shifted entry), so finish the
            # pass: the cursor wrapped only if nothing was deleted
            while c.t.cursor != 0:
                expired += flow_sweep(&c, c.t.capacity - c.t.cursor, True)
            c.a.totals[TOT_FLOWS_ACTIVE] = c.t.used
        return expired

    def flush(self):
        """End every flow: count pending packets (as pending) and empty the flow
        table, e.g. at the end of the input or before the tables change meaning."""
        cdef fctx_t c
        cdef uint64_t i
        if self.flows is None:
            return 0
        self._ctx(&c)
        n = c.t.used
        with nogil:
            for i in range(c.t.capacity):
                if c.t.slots[i].state != 0:
                    _flow_flush_pending(&c, &c.t.slots[i])
            c.a.totals[TOT_FLOWS_ACTIVE] = 0
        self.flows.clear()
        return n

    def swap_tables(self, PrefixCore watch not None, PrefixCore peer not None,
                    RuleCore rules not None):
        """Replace tables and rules between batches (SIGHUP reload)."""
        self.watch = watch
        self.peer = peer
        self.rules = rules
        if self.flows is not None:
            # the flows' cached prefix-table answers came from the old tables
            self.flows.forget_lookups()

    def process(self, const uint8_t[::1] data, recs):
        """Classify and count every packet of one batch. Returns the packet count."""
        cdef rec_t* r
        cdef Py_ssize_t n
        _check_batch(data, recs, &r, &n)
        if n == 0:
            return 0
        cdef const uint8_t* base = &data[0]
        cdef const rules_t* rules = self.rules.r
        cdef fctx_t fc
        self._ctx(&fc)
        with nogil:
            _count_batch(base, r, n, rules, &fc)
            _expire_some(&fc, n)
        return n

    def walk_process(self, RecordWalker wk not None, buf, uint64_t pos, cnp.ndarray recs,
                     uint64_t base=0, bint at_eof=True):
        """`wk.walk(buf, pos, recs, base, at_eof)` and `process()` of the records it
        fills, interleaved: WALK_CHUNK records are walked, then classified while
        their frames are still in the core's cache, then the next ones.  Fills and
        returns like `walk` -- (n, status), `recs[:n]` the records -- and counts
        exactly as `process(buf[base:...], recs[:n])` after the walk would (the flow
        table's amortised expiry still runs once, after the whole batch).  The
        reader's fast path for mapped files (Capture.processed)."""
        cdef const uint8_t[::1] mv = buf
        cdef const uint8_t* p = NULL
        cdef uint64_t buflen = mv.shape[0]
        cdef Py_ssize_t maxrec, n = 0, got, k
        cdef rec_t* rp
        cdef int rc = WALK_FULL
        cdef fctx_t fc
        cdef const rules_t* rules = self.rules.r
        wk._start(buflen, pos, recs, base, &rp, &maxrec)
        if buflen:
            p = &mv[0]
        self._ctx(&fc)
        with nogil:
            while n < maxrec:
                k = maxrec - n if maxrec - n < WALK_CHUNK else WALK_CHUNK
                got = 0
                rc = nkr_walk(&wk.w, p, buflen, base, rp + n, k, &got, at_eof)
                if got:
                    # the walker only emits records that lie inside buf[base:]
                    _count_batch(p + base, rp + n, got, rules, &fc)
                    n += got
                if rc != WALK_FULL:
                    break
            _expire_some(&fc, n)
        return n, rc

    def annotate_flows(self, const uint8_t[::1] data, recs):
        """Process one batch with flow state (counting as `process` does) and say, per
        packet, how it was counted: numpy columns tag, peer, watch, direction,
        pending (1: held until its flow's verdict), fid (flow serial, 0: no flow)
        verdict_fid and verdict_sni (the flow whose verdict this packet fixed, and the
        service label of the verdict).  A pending
        packet's final tag is the verdict of its flow if a later packet fixes one
        before the window closes or the flow ends, else its own tag (see
        nkstream.classify.annotate_capture).  Needs a FlowTable; turns on its flow
        serials (FlowTable.track_ids)."""
        cdef rec_t* r
        cdef Py_ssize_t n
        cdef fctx_t fc
        cdef fann_t o
        if self.flows is None:
            raise ValueError("annotate_flows needs flow state (a FlowTable)")
        self.flows.track_ids()
        _check_batch(data, recs, &r, &n)
        out = {"tag": np.zeros(n, np.uint16), "peer": np.zeros(n, np.uint32),
               "watch": np.zeros(n, np.uint32), "direction": np.zeros(n, np.uint8),
               "pending": np.zeros(n, np.uint8), "fid": np.zeros(n, np.uint64),
               "verdict_fid": np.zeros(n, np.uint64), "verdict_sni": np.zeros(n, np.uint32)}
        if n == 0:
            return out
        cdef uint16_t[::1] a_tag = out["tag"]
        cdef uint32_t[::1] a_peer = out["peer"]
        cdef uint32_t[::1] a_watch = out["watch"]
        cdef uint8_t[::1] a_dir = out["direction"]
        cdef uint8_t[::1] a_pend = out["pending"]
        cdef uint64_t[::1] a_fid = out["fid"]
        cdef uint64_t[::1] a_vfid = out["verdict_fid"]
        cdef uint32_t[::1] a_vsni = out["verdict_sni"]
        o.tag = &a_tag[0]
        o.peer = &a_peer[0]
        o.watch = &a_watch[0]
        o.direction = &a_dir[0]
        o.pending = &a_pend[0]
        o.fid = &a_fid[0]
        o.verdict_fid = &a_vfid[0]
        o.verdict_sni = &a_vsni[0]
        cdef const uint8_t* base = &data[0]
        cdef const rules_t* rules = self.rules.r
        self._ctx(&fc)
        with nogil:
            _process_batch_flows(base, r, n, rules, &fc, &o)
            _expire_some(&fc, n)
        return out

    def annotate(self, const uint8_t[::1] data, recs):
        """Per-packet verdicts for inspection (`nkstream decode`): dict of numpy
        columns watch_src, watch_dst, peer_src, peer_dst (label ids), direction,
        watch, peer (the key's labels), tag, sni (the service label a ClientHello SNI
        gave, 0: none) and strong (1: the tag came from a payload signature or an SNI,
        what fixes a flow's verdict).  Per packet: no flow state.  Counts nothing."""
        cdef rec_t* r
        cdef Py_ssize_t n, i
        _check_batch(data, recs, &r, &n)
        out = {k: np.zeros(n, np.uint32) for k in
               ("watch_src", "watch_dst", "peer_src", "peer_dst", "watch", "peer")}
        out["direction"] = np.zeros(n, np.uint8)
        out["tag"] = np.zeros(n, np.uint16)
        out["sni"] = np.zeros(n, np.uint32)
        out["strong"] = np.zeros(n, np.uint8)
        if n == 0:
            return out
        cdef uint32_t[::1] ws = out["watch_src"], wd = out["watch_dst"]
        cdef uint32_t[::1] ps = out["peer_src"], pd = out["peer_dst"]
        cdef uint32_t[::1] kw = out["watch"], kp = out["peer"]
        cdef uint8_t[::1] dr = out["direction"]
        cdef uint16_t[::1] tg = out["tag"]
        cdef uint32_t[::1] sn = out["sni"]
        cdef uint8_t[::1] st = out["strong"]
        cdef uint8_t strong
        cdef const uint8_t* base = &data[0]
        cdef const uint8_t* frame
        cdef const lpm4_t* w4 = self.watch.v4
        cdef const lpm6_t* w6 = self.watch.v6
        cdef const lpm4_t* p4 = self.peer.v4
        cdef const lpm6_t* p6 = self.peer.v6
        cdef const rules_t* rules = self.rules.r
        cdef pkt_t pkt
        cdef sides_t s
        cdef uint32_t sni
        with nogil:
            for i in range(n):
                frame = base + r[i].off
                decode_record(base, &r[i], &pkt)
                if pkt.ipver == 4:
                    ws[i] = lpm4_lookup(w4, pkt.src4)
                    wd[i] = lpm4_lookup(w4, pkt.dst4)
                    ps[i] = lpm4_lookup(p4, pkt.src4)
                    pd[i] = lpm4_lookup(p4, pkt.dst4)
                elif pkt.ipver == 6:
                    ws[i] = lpm6_lookup(w6, pkt.src)
                    wd[i] = lpm6_lookup(w6, pkt.dst)
                    ps[i] = lpm6_lookup(p6, pkt.src)
                    pd[i] = lpm6_lookup(p6, pkt.dst)
                _sides(&pkt, w4, w6, p4, p6, &s)
                sni = 0
                strong = 0
                tg[i] = tag_packet_ex(rules, &pkt, frame, s.peer, &sni, &strong)
                sn[i] = sni
                st[i] = strong
                if sni != 0:
                    s.peer = sni
                    if s.direction == DIR_INBOUND:
                        ps[i] = sni
                    else:
                        pd[i] = sni
                kw[i] = s.watch
                kp[i] = s.peer
                dr[i] = s.direction
        return out


cdef inline void _count_batch(const uint8_t* base, const rec_t* r, Py_ssize_t n,
                              const rules_t* rules, const fctx_t* c) noexcept nogil:
    # Count records r[0:n] (frames at base + off): with flow state when the
    # classifier has a flow table (c.t), per packet otherwise.
    if c.t == NULL:
        _process_batch(base, r, n, c.w4, c.w6, c.p4, c.p6, rules, c.a)
    else:
        _process_batch_flows(base, r, n, rules, c, NULL)


cdef inline void _expire_some(const fctx_t* c, Py_ssize_t n) noexcept nogil:
    # Amortised expiry after a batch of n packets: a bounded slice of the flow table.
    if c.t != NULL and n > 0:
        flow_sweep(c, <uint64_t>(n // 8 + 64), False)


cdef void _process_batch(const uint8_t* base, const rec_t* r, Py_ssize_t n,
                         const lpm4_t* w4, const lpm6_t* w6,
                         const lpm4_t* p4, const lpm6_t* p6,
                         const rules_t* rules, agg_t* a) noexcept nogil:
    cdef Py_ssize_t i
    cdef pkt_t pkt
    cdef sides_t s
    cdef uint32_t sni
    cdef uint16_t tag, err
    cdef const uint8_t* frame
    agg_count_batch(a, r, n)
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            # frames are far apart in the buffer: start their cache misses early
            NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
        frame = base + r[i].off
        err = decode_record(base, &r[i], &pkt)
        _sides(&pkt, w4, w6, p4, p6, &s)
        agg_count_rest(a, err, s.watch != 0)
        sni = 0
        tag = tag_packet(rules, &pkt, frame, s.peer, &sni)
        if sni != 0:
            s.peer = sni
        agg_add(a, s.watch, s.direction, s.peer, tag, 1, r[i].wirelen, 0)


# The copies of the flow loop (_flows_loop, _decode_block): Cython fused types, one
# C function per type, each compiled with its prefetch mode (and whether it writes
# the inspection output) known, so that gcc folds the tests on them away and
# allocates the registers of a smaller loop (cachegrind: 449 -> 425 instructions a
# packet of a decided flow at 200k flows).
ctypedef struct _fl_deep_t:     # deep prefetch mode, no inspection output
    char _x
ctypedef struct _fl_home_t:     # home mode, no inspection output
    char _x
ctypedef struct _fl_any_t:      # either mode (deep_in), inspection output (ann_in)
    char _x
ctypedef fused _fl_mode_t:
    _fl_deep_t
    _fl_home_t
    _fl_any_t


cdef inline void _lpm4_prefetch(const lpm4_t* t, uint32_t addr) noexcept nogil:
    # Start the miss on the group entry an IPv4 lookup of addr will read after the
    # first level (nothing when the first level answers).
    cdef uint32_t e = t.tbl0[addr >> t.shift0]
    if e & LPM_EXT:
        NKS_PREFETCH_LINE(&t.tbl8[(<size_t>(e & LPM_IDX) << 8) | ((addr >> (t.shift0 - 8)) & 0xffu)])


cdef inline void _decode_block(_fl_mode_t* mode, const uint8_t* base, const rec_t* r,
                               Py_ssize_t b0, Py_ssize_t m, Py_ssize_t n, pkt_t* blk,
                               uint64_t* hb, uint64_t* hs, bint deep_in,
                               const ftab_t* t, const lpm4_t* p4) noexcept nogil:
    # Decode packets b0..b0+m-1, hash their flow keys (no IP header: 0) and start
    # cache misses: deep mode, on the fingerprint bytes of their probe windows (32
    # bytes: one line, or two when they straddle; the slots follow a block later,
    # _prefetch_block); else on the home slot and the two after it (a displaced key
    # or a new flow's free slot is usually there), the home slot being the hint,
    # and on the home slot's fingerprint byte (kept in both modes).
    cdef Py_ssize_t j, i
    cdef uint64_t h
    cdef pkt_t* p
    cdef bint deep
    if _fl_mode_t is _fl_deep_t:
        deep = True
    elif _fl_mode_t is _fl_home_t:
        deep = False
    else:
        deep = deep_in
    for j in range(m):
        i = b0 + j
        if i + PREFETCH_AHEAD < n:
            NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
        p = &blk[j]
        decode_record(base, &r[i], p)
        if p.flags & PF_IP:
            if flow_fast4(p):
                # the flow loop's fast path, decided once (flow_probe4 / flow_walk4)
                p.flags |= PF_FLOW_FAST4
                hb[j] = flow_hash4(p)
            else:
                hb[j] = flow_hash_pkt(p)
            h = hb[j] >> t.shift
            if deep:
                NKS_PREFETCH_LINE(t.fp + h)
                NKS_PREFETCH_LINE(t.fp + h + FLOW_PROBE_MAX - 1)
            else:
                NKS_PREFETCH_LINE(t.fp + h)      # a new flow writes its fingerprint
                NKS_PREFETCH_LINE(&t.slots[h])
                NKS_PREFETCH_LINE(&t.slots[(h + 1) & t.mask])
                NKS_PREFETCH_LINE(&t.slots[(h + 2) & t.mask])
            if (p.tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN and p.ipver == 4:
                # (tcp_flags is 0 unless TCP, decode.pxi)
                # a TCP SYN opens a flow, whose first packet looks both addresses up
                # in the peer table: start those misses too (the watch table and the
                # peer table's first level stay in cache; its groups do not)
                _lpm4_prefetch(p4, p.src4)
                _lpm4_prefetch(p4, p.dst4)
        else:
            hb[j] = 0
            hs[j] = FLOW_NO_SLOT


cdef inline void _prefetch_block(const ftab_t* t, const pkt_t* blk, const uint64_t* hb,
                                uint64_t* hs, Py_ssize_t m) noexcept nogil:
    # (deep mode) Start the cache misses on the flow slots of a decoded block: the
    # slot each packet's lookup will read, found from the fingerprints
    # (flow_prefetch), which is kept as the lookup's hint (hs).
    cdef Py_ssize_t j
    for j in range(m):
        hs[j] = flow_prefetch(t, hb[j]) if blk[j].flags & PF_IP else FLOW_NO_SLOT


cdef void _count_unkeyed(const fctx_t* c, const rules_t* rules, pkt_t* p,
                         const uint8_t* frame, uint32_t wl, fann_t* ann,
                         Py_ssize_t i) noexcept nogil:
    # (flow loop) Count a packet that has no flow key (no IP header, a transport
    # without ports, a later fragment of an unseen datagram) on its own per-packet
    # verdict.  Out of line: rare, and its code inlined made the loop's register
    # allocation worse for every packet.
    cdef sides_t s
    cdef uint32_t sni = 0
    cdef uint16_t tag
    _sides(p, c.w4, c.w6, c.p4, c.p6, &s)
    agg_count_rest(c.a, p.error, s.watch != 0)
    tag = tag_packet(rules, p, frame, s.peer, &sni)
    agg_add(c.a, s.watch, s.direction, sni if sni != 0 else s.peer, tag, 1, wl, 0)
    if ann != NULL:
        _ann(ann, i, &s, sni if sni != 0 else s.peer, tag, 0, 0)


cdef void _flow_settle(const fctx_t* c, flow_t* f, int d, sides_t s, uint16_t tag,
                       uint32_t sni, bint strong) noexcept nogil:
    # (flow loop) Fix flow f's verdict (strong: `tag`, `sni`, from a packet going
    # direction d with sides s) and count its pending packets under it, or give up
    # (not strong: each direction's pending packets under its own per-packet tag).
    # Out of line: once per flow.  (The sides by value: the loop's own stay in
    # registers, where a pointer to them would keep them in memory.)
    if strong:
        f.tag = tag
        f.sni = sni
        f.state |= FL_STRONG
        _flow_emit(c, f, 0, tag, sni, &s if d == 0 else NULL, False)
        _flow_emit(c, f, 1, tag, sni, &s if d == 1 else NULL, False)
    else:
        f.state |= FL_GAVEUP
        _flow_emit(c, f, 0, f.ftag[0], 0, &s if d == 0 else NULL, False)
        _flow_emit(c, f, 1, f.ftag[1], 0, &s if d == 1 else NULL, False)


cdef inline void _ann(fann_t* o, Py_ssize_t i, const sides_t* s, uint32_t peer,
                      uint16_t tag, uint8_t pending, uint64_t fid) noexcept nogil:
    o.tag[i] = tag
    o.peer[i] = peer
    o.watch[i] = s.watch
    o.direction[i] = s.direction
    o.pending[i] = pending
    o.fid[i] = fid


cdef void _process_batch_flows(const uint8_t* base, const rec_t* r, Py_ssize_t n,
                               const rules_t* rules, const fctx_t* c,
                               fann_t* ann) noexcept nogil:
    # The loop below in three copies, each compiled with its prefetch mode (and the
    # inspection output) known: gcc folds the tests on them away and allocates the
    # registers of a smaller loop.
    if ann != NULL:
        _flows_loop(<_fl_any_t*>NULL, base, r, n, rules, c, ann, flow_deep(c.t))
    elif flow_deep(c.t):
        _flows_loop(<_fl_deep_t*>NULL, base, r, n, rules, c, NULL, True)
    else:
        _flows_loop(<_fl_home_t*>NULL, base, r, n, rules, c, NULL, False)


cdef void _flows_loop(_fl_mode_t* mode, const uint8_t* base, const rec_t* r, Py_ssize_t n,
                      const rules_t* rules, const fctx_t* c,
                      fann_t* ann_in, bint deep_in) noexcept nogil:
    """The per-batch loop with flow state (docs/flows.md): a flow's first packets are
    tagged per packet and held as pending until a payload signature or SNI fixes the
    flow's verdict (then they are counted under it) or the inspection budget runs out
    (then under their own tags); later packets take the verdict without tagging."""
    cdef bint deep
    cdef fann_t* ann
    if _fl_mode_t is _fl_deep_t:
        deep = True
        ann = NULL
    elif _fl_mode_t is _fl_home_t:
        deep = False
        ann = NULL
    else:
        deep = deep_in
        ann = ann_in
    cdef Py_ssize_t i
    cdef pkt_t blk[3][FLOW_BLOCK]
    cdef uint64_t hb[3][FLOW_BLOCK]
    cdef uint64_t hs[3][FLOW_BLOCK]
    cdef uint64_t ins
    cdef uint32_t bnow = c.t.now
    cdef uint32_t bhas = c.t.has_now
    cdef pkt_t* p
    cdef sides_t s
    cdef fkey_t k
    cdef flow_t* f
    cdef fside_t look
    cdef int d, dl
    cdef bint created, keyed, expired
    cdef uint32_t sni, wl, now
    cdef int32_t age
    # the inspection budget per direction and the shortest timeout (in locals: the
    # compiler must assume a store to a slot may change t's fields, and reloads them)
    cdef uint32_t ipk = c.t.inspect_packets, ipk2 = 2 * c.t.inspect_packets
    cdef uint64_t ibytes = c.t.inspect_bytes
    cdef int32_t tmin = c.t.timeout_min
    cdef uint16_t tag
    cdef uint8_t strong, tf
    cdef bint st
    cdef uint32_t sm, peer
    cdef uint64_t nbytes
    cdef const uint8_t* frame
    cdef ftab_t* t = c.t
    cdef agg_t* a = c.a
    cdef Py_ssize_t b0 = 0, nb0, j, m, nm
    cdef int cur = 0, nxt, nxt2
    agg_count_batch(a, r, n)
    if bhas == 0 and n > 0:
        # the clock starts at the first packet's time (then the latest of the keyed
        # packets' times, below)
        bnow = <uint32_t>(<uint64_t>r[0].ts_ns >> FLOW_TIME_SHIFT)
        bhas = 1
    # Software pipelining by blocks of FLOW_BLOCK packets (docs/flows.md, "Prefetch
    # modes"): one flow lookup is a random access into a table that may be far bigger
    # than the caches, and the prefetches of a whole block overlap each other and the
    # work on the block in hand.  Home mode, two blocks in flight: block k+1 decoded,
    # hashed and its home slots (and the two after each) prefetched while block k is
    # processed.  Deep mode, three: block k+2 decoded and its fingerprint bytes
    # prefetched; block k+1's fingerprints scanned and the one slot each lookup will
    # read prefetched and kept as its hint (hs); block k processed.
    m = n if n < FLOW_BLOCK else FLOW_BLOCK
    _decode_block(mode, base, r, 0, m, n, blk[0], hb[0], hs[0], deep, t, c.p4)
    if deep:
        if m < n:
            nm = n - m if n - m < FLOW_BLOCK else FLOW_BLOCK
            _decode_block(mode, base, r, m, nm, n, blk[1], hb[1], hs[1], deep, t, c.p4)
        _prefetch_block(t, blk[0], hb[0], hs[0], m)
    while b0 < n:
        m = n - b0 if n - b0 < FLOW_BLOCK else FLOW_BLOCK
        nb0 = b0 + m
        nxt = 0 if cur == 2 else cur + 1
        nxt2 = 0 if nxt == 2 else nxt + 1
        if nb0 < n:
            nm = n - nb0 if n - nb0 < FLOW_BLOCK else FLOW_BLOCK
            if not deep:
                # two blocks in flight: the next one decoded, its slots prefetched
                _decode_block(mode, base, r, nb0, nm, n, blk[nxt], hb[nxt], hs[nxt], deep, t, c.p4)
            else:
                if nb0 + nm < n:
                    _decode_block(mode, base, r, nb0 + nm,
                                  n - nb0 - nm if n - nb0 - nm < FLOW_BLOCK else FLOW_BLOCK,
                                  n, blk[nxt2], hb[nxt2], hs[nxt2], deep, t, c.p4)
                _prefetch_block(t, blk[nxt], hb[nxt], hs[nxt], nm)
        for j in range(m):
            i = b0 + j
            p = &blk[cur][j]
            frame = base + r[i].off
            wl = r[i].wirelen
            # Most packets belong to an IPv4 flow already in the table: flow_probe4()
            # finds its slot (the one flow_lookup() would return) without building
            # the key, which is then built only to start a flow afresh in the slot.
            f = NULL
            ins = FLOW_NO_SLOT
            if p.flags & PF_FLOW_FAST4:
                if deep:
                    f = flow_probe4(t, p, hb[cur][j], hs[cur][j], &d, &ins)
                else:
                    f = flow_walk4(t, p, hb[cur][j], &d, &ins)
            if f == NULL and ins == FLOW_NO_SLOT and not flow_key(t, p, &k, hb[cur][j]):
                _count_unkeyed(c, rules, p, frame, wl, ann, i)
                continue
            now = <uint32_t>(<uint64_t>r[i].ts_ns >> FLOW_TIME_SHIFT)
            # the latest packet time (no branch: which packet is the newest is no
            # pattern)
            bnow = now if <int32_t>(now - bnow) > 0 else bnow
            keyed = f == NULL
            if keyed and ins != FLOW_NO_SLOT:
                # flow_probe4 missed and found the empty slot the flow starts in: a
                # new IPv4 flow, this packet its first (the initiator's direction).
                # Its sides are looked up and cached here, on a path of its own (in
                # the general one below, the tests a new flow always passes cost a
                # new flow's packet ~25 instructions, bench/instructions.py).
                f = _flow_new4(c, ins, p, hb[cur][j], now)
                d = 0
                _lookups4(p, c.w4, c.p4, &look)
                _fc_put(f, &look, 0, &s)
            else:
                if keyed:
                    # (its direction through another variable: one whose address
                    # goes to a call lives in memory, and d is read all along)
                    f = flow_lookup(c, &k, now, &dl, &created)
                    d = dl
                else:
                    created = False
                if not created:
                    # an existing flow: idle too long, or a closed TCP flow reopened by a SYN
                    # (RFC 9293 s3.5: a new incarnation of the connection)
                    tf = p.tcp_flags          # 0 unless TCP (decode.pxi)
                    age = <int32_t>(now - f.last)
                    expired = age > tmin and _flow_expired(t, f, now)
                    if expired or ((tf & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN
                                   and _flow_class(f) == FT_TCP_CLOSED):
                        _flow_flush_pending(c, f)
                        if expired:
                            a.totals[TOT_FLOW_TIMEOUTS] += 1
                        if not keyed:
                            flow_key(t, p, &k, hb[cur][j])
                        _flow_init(t, a, f, &k, now)      # (its last: now)
                        d = 0
                    else:
                        # Whether a packet is newer than its flow's last (time units of
                        # ~1 ms) is no pattern the CPU can predict: no branch.  (A new
                        # flow's last is its first packet's time.)
                        f.last = now if age > 0 else f.last
                # An IPv4 flow's addresses were looked up at its first packet: derive
                # this packet's sides from those answers (no table walk).  (The key's
                # protocol and family are the packet's: p.proto, p.ipver.)
                if p.ipver != 6:
                    if _fc_valid(f):
                        _fc_sides(f, d, &s)
                    else:
                        _lookups(p, c.w4, c.w6, c.p4, c.p6, &look)
                        if d == 1:          # in the initiator's order
                            look.ws, look.wd = look.wd, look.ws
                            look.ps, look.pd = look.pd, look.ps
                        _fc_put(f, &look, d, &s)
                else:
                    _sides(p, c.w4, c.w6, c.p4, c.p6, &s)
            agg_count_rest(a, p.error, s.watch != 0)
            # Whether a packet is TCP is no pattern the CPU can predict: no branch
            # on it; FIN and RST are rare.  p.tcp_flags is 0 unless TCP
            # (decode.pxi); RST sets FL_RST, FIN sets FL_FIN0 from the initiator
            # (d 0) and FL_FIN1 from the other side (the bits are the flags
            # shifted: asserted at import, flows.pxi).
            tf = p.tcp_flags
            if tf & (TCPF_RST | TCPF_FIN):
                f.state |= <uint8_t>(((tf & TCPF_RST) << 4) | ((tf & TCPF_FIN) << (4 + d)))
            sni = 0
            if f.state & (FL_STRONG | FL_GAVEUP):
                # A settled flow, one test for both kinds (a traffic mix interleaves
                # them packet by packet; a branch per kind mispredicts).  With a
                # verdict (FL_STRONG): its tag, and its SNI service label as peer
                # when it has one.  Without (FL_GAVEUP): the flow's per-packet
                # fallback (port / protocol / GRE / peer hint) is what its inspected
                # packets of this direction got, and none of it depends on the
                # payload -- except through an IP-in-IP tunnel, whose inner packets
                # vary, or in a direction with no packet inspected: those are tagged.
                # Payload signatures are no longer looked for (nDPI likewise stops
                # at giving up).
                st = (f.state & FL_STRONG) != 0
                if st | ((f.seen[d] != 0) & (p.proto != 4) & (p.proto != 41)):
                    # picked by masks (gcc branched on `f.tag if st else ...`)
                    sm = 0u - <uint32_t>st
                    tag = <uint16_t>((f.tag & sm) | (f.ftag[d] & ~sm))
                    sni = f.sni & sm
                else:
                    tag = tag_packet(rules, p, frame, s.peer, &sni)
                sm = 0u - <uint32_t>(sni != 0)
                peer = (sni & sm) | (s.peer & ~sm)          # the SNI's label, else the address's
                agg_add(a, s.watch, s.direction, peer, tag, 1, wl, 0)
                if ann != NULL:
                    _ann(ann, i, &s, peer, tag, 0, t.ids[f - t.slots])
                continue
            strong = 0
            tag = tag_packet_ex(rules, p, frame, s.peer, &sni, &strong)
            nbytes = <uint64_t>f.pbytes[d] + wl
            if nbytes > 0xFFFFFFFFU:
                # cannot hold it (a multi-GiB TSO frame): give up on this flow now
                _flow_settle(c, f, d, s, 0, 0, False)
                agg_add(a, s.watch, s.direction, sni if sni != 0 else s.peer, tag, 1, wl, 0)
                if ann != NULL:
                    _ann(ann, i, &s, sni if sni != 0 else s.peer, tag, 0, t.ids[f - t.slots])
                continue
            if ann != NULL:
                _ann(ann, i, &s, s.peer, tag, 1, t.ids[f - t.slots])
            f.pkts[d] += 1
            f.pbytes[d] = <uint32_t>nbytes
            f.ftag[d] = tag
            # (no saturation: a flow gives up once seen[0] + seen[1] reaches
            # 2 * inspect_packets <= 254, FlowTable)
            f.seen[d] += 1
            if strong:
                if ann != NULL:
                    _ann(ann, i, &s, sni if sni != 0 else s.peer, tag, 0, t.ids[f - t.slots])
                    ann.verdict_fid[i] = t.ids[f - t.slots]
                    ann.verdict_sni[i] = sni
                _flow_settle(c, f, d, s, tag, sni, True)
            elif ((f.seen[0] + <uint32_t>f.seen[1] >= ipk2)
                  or ((f.seen[d] >= ipk or nbytes >= ibytes)
                      and (f.seen[d ^ 1] >= ipk or f.pbytes[d ^ 1] >= ibytes))):
                # (this packet's direction first: only its budget changed with it)
                if ann != NULL:
                    ann.pending[i] = 0
                _flow_settle(c, f, d, s, 0, 0, False)
        b0 = nb0
        cur = nxt
    # the latest packet time, for the expiry sweep
    t.now = bnow
    t.has_now = bhas
