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


cdef class Classifier:
    """Native classifier: owns nothing but references to the tables, rules and
    counters it was built from; `process(data, recs)` runs one batch."""
    cdef readonly PrefixCore watch
    cdef readonly PrefixCore peer
    cdef readonly RuleCore rules
    cdef readonly Counters counters

    def __init__(self, PrefixCore watch not None, PrefixCore peer not None,
                 RuleCore rules not None, Counters counters not None):
        self.watch = watch
        self.peer = peer
        self.rules = rules
        self.counters = counters

    def swap_tables(self, PrefixCore watch not None, PrefixCore peer not None,
                    RuleCore rules not None):
        """Replace tables and rules between batches (SIGHUP reload)."""
        self.watch = watch
        self.peer = peer
        self.rules = rules

    def process(self, const uint8_t[::1] data, recs):
        """Classify and count every packet of one batch. Returns the packet count."""
        cdef rec_t* r
        cdef Py_ssize_t n
        _check_batch(data, recs, &r, &n)
        if n == 0:
            return 0
        cdef const uint8_t* base = &data[0]
        cdef const lpm4_t* w4 = self.watch.v4
        cdef const lpm6_t* w6 = self.watch.v6
        cdef const lpm4_t* p4 = self.peer.v4
        cdef const lpm6_t* p6 = self.peer.v6
        cdef const rules_t* rules = self.rules.r
        cdef Counters c = self.counters
        with nogil:
            _process_batch(base, r, n, w4, w6, p4, p6, rules, c)
        return n

    def annotate(self, const uint8_t[::1] data, recs):
        """Per-packet verdicts for inspection (`nkstream decode`): dict of numpy
        columns watch_src, watch_dst, peer_src, peer_dst (label ids), direction,
        watch, peer (the key's labels) and tag.  Counts nothing."""
        cdef rec_t* r
        cdef Py_ssize_t n, i
        _check_batch(data, recs, &r, &n)
        out = {k: np.zeros(n, np.uint32) for k in
               ("watch_src", "watch_dst", "peer_src", "peer_dst", "watch", "peer")}
        out["direction"] = np.zeros(n, np.uint8)
        out["tag"] = np.zeros(n, np.uint16)
        if n == 0:
            return out
        cdef uint32_t[::1] ws = out["watch_src"], wd = out["watch_dst"]
        cdef uint32_t[::1] ps = out["peer_src"], pd = out["peer_dst"]
        cdef uint32_t[::1] kw = out["watch"], kp = out["peer"]
        cdef uint8_t[::1] dr = out["direction"]
        cdef uint16_t[::1] tg = out["tag"]
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
                decode_packet(frame, r[i].caplen, r[i].linktype, &pkt)
                if r[i].vlan_tpid != 0:
                    restore_vlan(&r[i], &pkt)
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
                tg[i] = tag_packet(rules, &pkt, frame, s.peer, &sni)
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


cdef void _process_batch(const uint8_t* base, const rec_t* r, Py_ssize_t n,
                         const lpm4_t* w4, const lpm6_t* w6,
                         const lpm4_t* p4, const lpm6_t* p6,
                         const rules_t* rules, Counters c) noexcept nogil:
    cdef Py_ssize_t i
    cdef pkt_t pkt
    cdef sides_t s
    cdef uint32_t sni
    cdef uint16_t tag, err
    cdef const uint8_t* frame
    cdef agg_t* a = c.a
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            # frames are far apart in the buffer: start their cache misses early
            NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
        frame = base + r[i].off
        err = decode_packet(frame, r[i].caplen, r[i].linktype, &pkt)
        if r[i].vlan_tpid != 0:
            restore_vlan(&r[i], &pkt)
        _sides(&pkt, w4, w6, p4, p6, &s)
        agg_count_packet(a, r[i].wirelen, r[i].caplen, err, s.watch != 0)
        sni = 0
        tag = tag_packet(rules, &pkt, frame, s.peer, &sni)
        if sni != 0:
            s.peer = sni
        agg_add(a, s.watch, s.direction, s.peer, tag, 1, r[i].wirelen, 0)
