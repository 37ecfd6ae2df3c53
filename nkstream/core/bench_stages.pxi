# Stage-limited runs of the pipeline loop, for `nkstream bench` and bench/.
#
# `nkstream bench` reports what each stage of the per-packet path costs: read,
# decode, +LPM, +tags, +flows, +aggregate, each measured cumulatively (a stage's run
# does every stage before it too).  These loops stop after a given stage and call the
# very inline functions `_process_batch` (pipeline.pxi) calls -- decode_record,
# _sides (the watch/peer lookups), tag_packet -- in the same order with
# the same prefetching, so the difference between two stages is the cost of the stage
# the pipeline pays, not that of a look-alike.  The last stage is _process_batch
# itself.  Each loop folds its results into a checksum it returns, so that the C
# compiler cannot drop work whose results would otherwise be unused.
#
# flow_partition() gives every packet a worker number from a symmetric hash of its
# flow's 5-tuple, the way PACKET_FANOUT_HASH spreads packets over fanout members
# (the kernel's symmetric flow hash, __skb_get_hash_symmetric in
# net/core/flow_dissector.c): both directions of a flow reach the same worker.

cdef enum:
    BENCH_STAGE_DECODE = 1
    BENCH_STAGE_LPM = 2
    BENCH_STAGE_TAGS = 3
    BENCH_STAGE_FLOWS = 4      # needs flow state in the core (issue 6)
    BENCH_STAGE_AGGREGATE = 5  # the whole Classifier.process

# stage name -> the `upto` of bench_stage() (the stages this build can stop after)
BENCH_STAGES = {"decode": BENCH_STAGE_DECODE, "lpm": BENCH_STAGE_LPM,
                "tags": BENCH_STAGE_TAGS, "aggregate": BENCH_STAGE_AGGREGATE}


cdef uint64_t _bench_loop(const uint8_t* base, const rec_t* r, Py_ssize_t n,
                          const lpm4_t* w4, const lpm6_t* w6,
                          const lpm4_t* p4, const lpm6_t* p6,
                          const rules_t* rules, int upto) noexcept nogil:
    cdef Py_ssize_t i
    cdef pkt_t pkt
    cdef sides_t s
    cdef uint32_t sni
    cdef uint16_t tag, err
    cdef const uint8_t* frame
    cdef uint64_t sink = 0
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            NKS_PREFETCH(base + r[i + PREFETCH_AHEAD].off)
        frame = base + r[i].off
        err = decode_record(base, &r[i], &pkt)
        if upto < BENCH_STAGE_LPM:
            sink += <uint64_t>err + pkt.ipver + pkt.sport + pkt.dport + pkt.src4 + pkt.dst4
            continue
        _sides(&pkt, w4, w6, p4, p6, &s)
        if upto < BENCH_STAGE_TAGS:
            sink += <uint64_t>err + s.watch + s.peer + s.direction
            continue
        sni = 0
        tag = tag_packet(rules, &pkt, frame, s.peer, &sni)
        if sni != 0:
            s.peer = sni
        sink += <uint64_t>err + s.watch + s.peer + s.direction + tag
    return sink


def bench_stage(Classifier clf not None, const uint8_t[::1] data, recs, int upto):
    """Run the classifier's per-packet loop over one batch, stopping after stage
    `upto` (BENCH_STAGE_DECODE, _LPM, _TAGS; BENCH_STAGE_AGGREGATE = the whole
    `Classifier.process`, which counts into the classifier's counters).  Returns a
    checksum of the results (decode..tags) or the packet count (aggregate)."""
    cdef rec_t* r
    cdef Py_ssize_t n
    cdef uint64_t sink = 0
    if upto == BENCH_STAGE_AGGREGATE:
        return clf.process(data, recs)
    if upto not in (BENCH_STAGE_DECODE, BENCH_STAGE_LPM, BENCH_STAGE_TAGS):
        raise ValueError(f"unknown stage {upto}")
    _check_batch(data, recs, &r, &n)
    if n == 0:
        return 0
    cdef const uint8_t* base = &data[0]
    cdef const lpm4_t* w4 = clf.watch.v4
    cdef const lpm6_t* w6 = clf.watch.v6
    cdef const lpm4_t* p4 = clf.peer.v4
    cdef const lpm6_t* p6 = clf.peer.v6
    cdef const rules_t* rules = clf.rules.r
    with nogil:
        sink = _bench_loop(base, r, n, w4, w6, p4, p6, rules, upto)
    return sink


cdef inline uint64_t _mix64(uint64_t h) noexcept nogil:
    # splitmix64 finaliser: every input bit reaches every output bit
    h ^= h >> 30
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= 0x94D049BB133111EBULL
    h ^= h >> 31
    return h


cdef inline uint64_t _side_key(const uint8_t* addr, uint16_t port) noexcept nogil:
    cdef uint64_t a, b
    memcpy(&a, addr, 8)
    memcpy(&b, addr + 8, 8)
    return _mix64(a ^ _mix64(b ^ (<uint64_t>port << 48)))


def flow_partition(const uint8_t[::1] data, recs, uint32_t nparts):
    """Worker number (0..nparts-1) of every packet of a batch: a symmetric hash of
    (addresses, ports, IP protocol), so both directions of a flow land on the same
    worker as with PACKET_FANOUT_HASH.  Packets without an IP header go to worker 0.
    Returns a uint32 array."""
    if nparts < 1:
        raise ValueError("nparts must be >= 1")
    cdef rec_t* r
    cdef Py_ssize_t n, i
    _check_batch(data, recs, &r, &n)
    out = np.zeros(n, np.uint32)
    if n == 0:
        return out
    cdef uint32_t[::1] o = out
    cdef const uint8_t* base = &data[0]
    cdef pkt_t pkt
    cdef uint64_t ks, kd, h
    with nogil:
        for i in range(n):
            decode_packet(base + r[i].off, r[i].caplen, r[i].linktype, &pkt)
            if pkt.ipver == 0:
                o[i] = 0
                continue
            ks = _side_key(pkt.src, pkt.sport)
            kd = _side_key(pkt.dst, pkt.dport)
            # order-free combination of the two sides: the same for both directions
            h = _mix64((ks + kd) ^ (ks * kd) ^ pkt.proto)
            o[i] = <uint32_t>((h >> 32) % nparts)
    return out
