# Counters per key, totals and error counters (docs/architecture.md "Counters").
#
# The pipeline counts every packet into a fixed-capacity open-addressing hash table
# keyed by (watch label, direction, peer label, tag).  The table never grows: its
# memory is fixed when the Counters is built (40 bytes per slot), so a sensor's memory
# is known up front whatever the traffic.  When the table holds its maximum number of
# keys (capacity * load factor) a *new* key is counted into the overflow bucket
# instead: nothing is dropped, the overflow shows up as its own row and in the totals
# (`overflow_packets`, `overflow_bytes`, `overflow_flows`).  Keys already in the table
# keep counting normally.
#
# Linear probing with a load-factor cap: probes stay short (about 2.5 slots for a hit
# at 3/4 load, Knuth TAOCP 6.4) and walk adjacent cache lines.  Consecutive packets
# usually share a key (one flow's burst), so the slot of the last key is checked first.
#
# Workers are processes and each owns its Counters; nothing here is shared between
# threads.  The control plane merges workers' snapshots (Counters.merge).

# Totals layout: indices into agg_t.totals (Counters.totals points at the same array).
# The pipeline writes the slots it owns once per packet; agg_add() owns the overflow
# slots; the flow table (issue 6) owns the flow slots.  TOTAL_NAMES names each slot in
# snapshots; slots named None are reserved and not reported.
cdef enum:
    TOT_PACKETS = 0          # every packet read in the window, decoded or not
    TOT_BYTES = 1            # on-wire bytes (rec_t.wirelen; what capinfos counts)
    TOT_CAPBYTES = 2         # captured bytes (rec_t.caplen)
    TOT_DECODED = 3          # packets decoded fully (pkt_t.error == 0)
    TOT_UNMATCHED = 4        # packets with no watch match (direction transit, or no IP)
    TOT_ERRORS = 5           # packets with pkt_t.error != 0 (== sum of errors[])
    TOT_OVERFLOW = 6         # packets counted into the overflow bucket (table full)
    TOT_OVERFLOW_BYTES = 7
    TOT_OVERFLOW_FLOWS = 8
    TOT_FLOWS = 9            # flows started in the window (issue 6)
    TOT_FLOWS_ACTIVE = 10    # flows in the flow table when the window closed
    TOT_FLOW_EVICTIONS = 11  # flows evicted because the flow table was full
    TOT_FLOW_TIMEOUTS = 12   # flows expired by idle timeout
    TOT_PENDING_PACKETS = 13 # packets of flows that ended before a verdict
    TOT_PENDING_BYTES = 14
    TOT_N = 16               # slot 15 reserved

TOTAL_NAMES = (
    "packets", "bytes", "capbytes", "decoded", "unmatched", "error_packets",
    "overflow_packets", "overflow_bytes", "overflow_flows",
    "flows", "flows_active", "flow_evictions", "flow_timeouts",
    "pending_packets", "pending_bytes", None,
)
assert len(TOTAL_NAMES) == TOT_N
# Totals that agg_add() itself maintains from the overflow bucket; merge() rebuilds
# them from the overflow row rather than adding them twice.
_OVERFLOW_TOTALS = frozenset((TOT_OVERFLOW, TOT_OVERFLOW_BYTES, TOT_OVERFLOW_FLOWS))

cdef enum:
    ERR_N = 64               # error reason slots, indexed by decode.pxi's ERROR_NAMES ids

# Reserved key of the overflow bucket.  Label ids never reach 2**32-1 and no
# direction is 0xFF, so no real key can collide with it.
cdef enum:
    AGG_USED = 0x01000000    # marks an occupied slot in agg_entry_t.ktd (0 = empty)
cdef uint32_t AGG_OVF_WATCH = 0xFFFFFFFFU
cdef uint8_t AGG_OVF_DIRECTION = 0xFF
cdef uint32_t AGG_OVF_PEER = 0xFFFFFFFFU
cdef uint16_t AGG_OVF_TAG = 0xFFFF
OVERFLOW_KEY = (0xFFFFFFFF, 0xFF, 0xFFFFFFFF, 0xFFFF)   # (watch, direction, peer, tag)

AGG_DEFAULT_CAPACITY = 1 << 18       # 262,144 slots = 10 MiB; up to 196,608 keys
AGG_DEFAULT_LOAD = 0.75

# One slot: the key packed into 64 + 32 bits, then the three counters (40 bytes).
ctypedef struct agg_entry_t:
    uint64_t kwp             # watch << 32 | peer
    uint32_t ktd             # AGG_USED | tag << 8 | direction; 0 = empty slot
    uint32_t _pad
    uint64_t packets
    uint64_t bytes
    uint64_t flows

ctypedef struct agg_t:
    agg_entry_t* slots
    uint64_t capacity        # power of two
    uint64_t mask            # capacity - 1
    uint32_t shift           # 64 - log2(capacity): multiply-shift keeps the top bits
    uint64_t used            # keys in the table
    uint64_t max_used        # load-factor cap; a new key beyond it goes to overflow
    uint64_t last            # slot of the last key counted (burst cache)
    uint64_t totals[TOT_N]
    uint64_t errors[ERR_N]


cdef inline uint64_t agg_hash(uint64_t kwp, uint32_t ktd) noexcept nogil:
    # Multiply-shift (Dietzfelbinger et al. 1997) on each half of the key; the caller
    # keeps the top bits, which depend on every bit of the key.
    return (kwp * <uint64_t>0x9E3779B97F4A7C15ULL) ^ (<uint64_t>ktd * <uint64_t>0xC2B2AE3D27D4EB4FULL)


cdef inline int agg_add(agg_t* a, uint32_t watch, uint8_t direction, uint32_t peer,
                        uint16_t tag, uint64_t packets, uint64_t bytes,
                        uint64_t flows) noexcept nogil:
    """Add to the counters of one key.  Returns 0, or 1 when the key did not fit and
    was counted into the overflow bucket (also when the key *is* the overflow key)."""
    cdef uint64_t kwp = (<uint64_t>watch << 32) | peer
    cdef uint32_t ktd = AGG_USED | (<uint32_t>tag << 8) | direction
    cdef agg_entry_t* e = &a.slots[a.last]
    cdef uint64_t i
    if e.kwp == kwp and e.ktd == ktd:
        e.packets += packets
        e.bytes += bytes
        e.flows += flows
        return 0
    if (watch == AGG_OVF_WATCH and peer == AGG_OVF_PEER and direction == AGG_OVF_DIRECTION
            and tag == AGG_OVF_TAG):
        return agg_overflow(a, packets, bytes, flows)
    i = agg_hash(kwp, ktd) >> a.shift
    while True:
        e = &a.slots[i]
        if e.ktd == ktd and e.kwp == kwp:
            break
        if e.ktd == 0:
            if a.used >= a.max_used:
                return agg_overflow(a, packets, bytes, flows)
            e.kwp = kwp
            e.ktd = ktd
            a.used += 1
            break
        i = (i + 1) & a.mask
    e.packets += packets
    e.bytes += bytes
    e.flows += flows
    a.last = i
    return 0


cdef inline int agg_overflow(agg_t* a, uint64_t packets, uint64_t bytes,
                             uint64_t flows) noexcept nogil:
    a.totals[TOT_OVERFLOW] += packets
    a.totals[TOT_OVERFLOW_BYTES] += bytes
    a.totals[TOT_OVERFLOW_FLOWS] += flows
    return 1


cdef inline void agg_count_batch(agg_t* a, const rec_t* r, Py_ssize_t n) noexcept nogil:
    """The totals of n packets read, in two parts: this one, before the per-packet
    loop, counts them all as read and decoded (a tight loop over the records), and
    agg_count_rest() per packet corrects a packet that was not decoded and counts
    an unmatched one.  (Five read-modify-writes of the totals per packet in a loop
    of many live values were ~10 instructions of a flow-state packet's ~600.)"""
    cdef Py_ssize_t i
    cdef uint64_t wb = 0, cb = 0
    for i in range(n):
        wb += r[i].wirelen
        cb += r[i].caplen
    a.totals[TOT_PACKETS] += <uint64_t>n
    a.totals[TOT_BYTES] += wb
    a.totals[TOT_CAPBYTES] += cb
    a.totals[TOT_DECODED] += <uint64_t>n


cdef inline void agg_count_rest(agg_t* a, uint16_t error, bint watched) noexcept nogil:
    """The per-packet part of agg_count_batch()."""
    if error != 0:
        a.totals[TOT_DECODED] -= 1
        a.totals[TOT_ERRORS] += 1
        a.errors[error if error < ERR_N else ERR_N - 1] += 1
    a.totals[TOT_UNMATCHED] += <uint64_t>(not watched)


cdef inline void agg_count_packet(agg_t* a, uint32_t wirelen, uint32_t caplen,
                                  uint16_t error, bint watched) noexcept nogil:
    """The totals of one packet read (any packet, decoded or not): agg_count_batch()
    and agg_count_rest() for one packet.  An error id at or beyond ERR_N (a decoder
    bug) is counted in the last slot rather than lost."""
    a.totals[TOT_PACKETS] += 1
    a.totals[TOT_BYTES] += wirelen
    a.totals[TOT_CAPBYTES] += caplen
    a.totals[TOT_DECODED] += 1
    agg_count_rest(a, error, watched)


cdef void agg_clear(agg_t* a) noexcept nogil:
    memset(a.slots, 0, a.capacity * sizeof(agg_entry_t))
    memset(a.totals, 0, sizeof(a.totals))
    memset(a.errors, 0, sizeof(a.errors))
    a.used = 0
    a.last = 0


cdef class Counters:
    """Native counters of one worker: the key table, totals and error counters.

    ``Counters(capacity=262144, load_factor=0.75)``: *capacity* slots (rounded up to a
    power of two, 40 bytes each, allocated once), at most ``capacity * load_factor``
    distinct keys; further new keys count into the overflow bucket.

    The pipeline takes ``counters.a`` (an ``agg_t*``) once per batch and calls
    ``agg_add`` / ``agg_count_packet`` per packet; Python calls ``snapshot()`` between
    batches.
    """
    cdef agg_t* a
    cdef uint64_t* totals    # == a.totals, indexed by TOT_*
    cdef uint64_t* errors    # == a.errors, indexed by error reason id

    def __cinit__(self, capacity=AGG_DEFAULT_CAPACITY, load_factor=AGG_DEFAULT_LOAD):
        cdef uint64_t cap = 2
        cdef uint32_t bits = 1
        cdef uint64_t want, max_used
        capacity = int(capacity)
        load_factor = float(load_factor)
        if capacity < 2 or capacity > (1 << 40):
            raise ValueError(f"counters capacity {capacity} out of range [2, 2**40]")
        if not (0.0 < load_factor < 1.0):
            raise ValueError(f"counters load factor {load_factor} must be in (0, 1)")
        want = capacity
        while cap < want:
            cap <<= 1
            bits += 1
        self.a = <agg_t*>calloc(1, sizeof(agg_t))
        if self.a == NULL:
            raise MemoryError("counters: cannot allocate the table header")
        self.a.slots = <agg_entry_t*>nks_table_alloc(cap * sizeof(agg_entry_t))
        if self.a.slots == NULL:
            free(self.a)
            self.a = NULL
            raise MemoryError(f"counters: cannot allocate {cap} slots "
                              f"({cap * sizeof(agg_entry_t)} bytes)")
        self.a.capacity = cap
        self.a.mask = cap - 1
        self.a.shift = 64 - bits
        # At least one slot always stays empty, so a probe for a new key terminates.
        max_used = <uint64_t>(<double>cap * load_factor)
        if max_used > cap - 1:
            max_used = cap - 1
        if max_used < 1:
            max_used = 1
        self.a.max_used = max_used
        self.totals = self.a.totals
        self.errors = self.a.errors

    def __dealloc__(self):
        if self.a != NULL:
            free(self.a.slots)
            free(self.a)
            self.a = NULL

    @property
    def capacity(self):
        """Slots in the table (a power of two)."""
        return self.a.capacity

    @property
    def max_keys(self):
        """Distinct keys the table holds before new keys go to the overflow bucket."""
        return self.a.max_used

    @property
    def memory_bytes(self):
        """Bytes allocated for the table and its header (fixed for the lifetime)."""
        return self.a.capacity * sizeof(agg_entry_t) + sizeof(agg_t)

    def __len__(self):
        """Distinct keys counted (the overflow bucket excluded)."""
        return self.a.used

    def add_many(self, watch, direction, peer, tag, packets, bytes, flows=None):
        """Count arrays of keys (one agg_add per element); returns how many elements
        went to the overflow bucket.  For tests, merges and tools, not the hot path."""
        cdef const uint32_t[::1] w = np.ascontiguousarray(watch, dtype=np.uint32)
        cdef const uint8_t[::1] d = np.ascontiguousarray(direction, dtype=np.uint8)
        cdef const uint32_t[::1] p = np.ascontiguousarray(peer, dtype=np.uint32)
        cdef const uint16_t[::1] t = np.ascontiguousarray(tag, dtype=np.uint16)
        cdef const uint64_t[::1] pk = np.ascontiguousarray(packets, dtype=np.uint64)
        cdef const uint64_t[::1] by = np.ascontiguousarray(bytes, dtype=np.uint64)
        cdef const uint64_t[::1] fl
        cdef Py_ssize_t n = w.shape[0], i
        cdef uint64_t ovf = 0
        if flows is None:
            flows = np.zeros(n, dtype=np.uint64)
        fl = np.ascontiguousarray(flows, dtype=np.uint64)
        if not (d.shape[0] == n and p.shape[0] == n and t.shape[0] == n
                and pk.shape[0] == n and by.shape[0] == n and fl.shape[0] == n):
            raise ValueError("add_many: all arrays must have the same length")
        with nogil:
            for i in range(n):
                ovf += agg_add(self.a, w[i], d[i], p[i], t[i], pk[i], by[i], fl[i])
        return int(ovf)

    def add_totals(self, values):
        """Add ``{total name: count}`` (names from TOTAL_NAMES) to the totals.  The
        overflow totals cannot be added: they are derived from the overflow bucket."""
        for name, value in values.items():
            idx = _total_index(name)
            if idx in _OVERFLOW_TOTALS:
                raise ValueError(f"total {name!r} is kept by the overflow bucket; "
                                 "add the overflow row (OVERFLOW_KEY) instead")
            self.a.totals[idx] += <uint64_t>value

    def add_errors(self, values):
        """Add error counts: a sequence indexed by reason id (at most ERR_N long)."""
        arr = np.asarray(values, dtype=np.uint64)
        if arr.ndim != 1 or arr.shape[0] > ERR_N:
            raise ValueError(f"errors must be a 1-d sequence of at most {ERR_N} counts")
        for i in range(arr.shape[0]):
            self.a.errors[i] += <uint64_t>arr[i]

    def count_packets(self, wirelen, caplen, error, watched):
        """Totals of arrays of packets (agg_count_packet per element), for tests."""
        cdef const uint32_t[::1] wl = np.ascontiguousarray(wirelen, dtype=np.uint32)
        cdef const uint32_t[::1] cl = np.ascontiguousarray(caplen, dtype=np.uint32)
        cdef const uint16_t[::1] er = np.ascontiguousarray(error, dtype=np.uint16)
        cdef const uint8_t[::1] wa = np.ascontiguousarray(watched, dtype=np.uint8)
        cdef Py_ssize_t n = wl.shape[0], i
        if not (cl.shape[0] == n and er.shape[0] == n and wa.shape[0] == n):
            raise ValueError("count_packets: all arrays must have the same length")
        with nogil:
            for i in range(n):
                agg_count_packet(self.a, wl[i], cl[i], er[i], wa[i] != 0)

    def totals_dict(self):
        """The named totals now (TOTAL_NAMES order, reserved slots left out)."""
        return {name: int(self.a.totals[i]) for i, name in enumerate(TOTAL_NAMES)
                if name is not None}

    def errors_array(self):
        """The error counters now: uint64[ERR_N] indexed by reason id."""
        out = np.empty(ERR_N, dtype=np.uint64)
        cdef uint64_t[::1] o = out
        cdef Py_ssize_t i
        for i in range(ERR_N):
            o[i] = self.a.errors[i]
        return out

    def snapshot(self, bint reset=True):
        """Copy the counters out (and, with *reset*, zero them without reallocating).

        Returns a dict: ``columns`` (numpy arrays ``watch`` <u4, ``direction`` <u1,
        ``peer`` <u4, ``tag`` <u2, ``packets``/``bytes``/``flows`` <u8, one element per
        key, sorted by key, plus one row with OVERFLOW_KEY when anything overflowed),
        ``totals`` (name -> int), ``errors`` (uint64[ERR_N] by reason id),
        ``error_names`` (decode's ERROR_NAMES where built in, else None),
        ``keys`` (distinct keys in the table) and ``capacity``.
        O(capacity): one pass over the slots, one memset.
        """
        cdef agg_t* a = self.a
        cdef uint64_t ovf_p = a.totals[TOT_OVERFLOW]
        cdef uint64_t ovf_b = a.totals[TOT_OVERFLOW_BYTES]
        cdef uint64_t ovf_f = a.totals[TOT_OVERFLOW_FLOWS]
        cdef bint has_ovf = ovf_p != 0 or ovf_b != 0 or ovf_f != 0
        cdef Py_ssize_t n = a.used + (1 if has_ovf else 0)
        watch = np.empty(n, dtype="<u4")
        direction = np.empty(n, dtype="<u1")
        peer = np.empty(n, dtype="<u4")
        tag = np.empty(n, dtype="<u2")
        packets = np.empty(n, dtype="<u8")
        bytes_ = np.empty(n, dtype="<u8")
        flows = np.empty(n, dtype="<u8")
        cdef uint32_t[::1] w = watch
        cdef uint8_t[::1] d = direction
        cdef uint32_t[::1] p = peer
        cdef uint16_t[::1] t = tag
        cdef uint64_t[::1] pk = packets
        cdef uint64_t[::1] by = bytes_
        cdef uint64_t[::1] fl = flows
        cdef Py_ssize_t j = 0
        cdef uint64_t i
        cdef agg_entry_t* e
        with nogil:
            for i in range(a.capacity):
                e = &a.slots[i]
                if e.ktd == 0:
                    continue
                w[j] = <uint32_t>(e.kwp >> 32)
                p[j] = <uint32_t>(e.kwp & 0xFFFFFFFFU)
                t[j] = <uint16_t>((e.ktd >> 8) & 0xFFFF)
                d[j] = <uint8_t>(e.ktd & 0xFF)
                pk[j] = e.packets
                by[j] = e.bytes
                fl[j] = e.flows
                j += 1
            if has_ovf:
                w[j] = AGG_OVF_WATCH
                p[j] = AGG_OVF_PEER
                t[j] = AGG_OVF_TAG
                d[j] = AGG_OVF_DIRECTION
                pk[j] = ovf_p
                by[j] = ovf_b
                fl[j] = ovf_f
                j += 1
        if j != n:  # the table's own bookkeeping disagrees with its slots
            raise RuntimeError(f"counters: {j} rows found, {n} expected")
        order = np.lexsort((tag, peer, direction, watch))
        snap = {
            "columns": {
                "watch": watch[order], "direction": direction[order],
                "peer": peer[order], "tag": tag[order],
                "packets": packets[order], "bytes": bytes_[order], "flows": flows[order],
            },
            "totals": self.totals_dict(),
            "errors": self.errors_array(),
            "error_names": globals().get("ERROR_NAMES"),
            "keys": int(a.used),
            "capacity": int(a.capacity),
        }
        if reset:
            with nogil:
                agg_clear(a)
        return snap

    def reset(self):
        """Zero every counter (O(capacity), no reallocation)."""
        with nogil:
            agg_clear(self.a)

    def merge(self, other):
        """Add another Counters (same label ids: workers built from one config) or a
        ``snapshot()`` dict into this one.  Keys that do not fit count into the
        overflow bucket; returns how many rows did."""
        cdef Counters o
        cdef agg_entry_t* e
        cdef uint64_t i
        cdef uint64_t ovf = 0
        cdef int k
        if isinstance(other, Counters):
            o = <Counters>other
            if o is self:
                raise ValueError("cannot merge a Counters into itself")
            with nogil:
                for i in range(o.a.capacity):
                    e = &o.a.slots[i]
                    if e.ktd == 0:
                        continue
                    ovf += agg_add(self.a, <uint32_t>(e.kwp >> 32), <uint8_t>(e.ktd & 0xFF),
                                   <uint32_t>(e.kwp & 0xFFFFFFFFU), <uint16_t>((e.ktd >> 8) & 0xFFFF),
                                   e.packets, e.bytes, e.flows)
                agg_overflow(self.a, o.a.totals[TOT_OVERFLOW], o.a.totals[TOT_OVERFLOW_BYTES],
                             o.a.totals[TOT_OVERFLOW_FLOWS])
                for k in range(TOT_N):
                    if k != TOT_OVERFLOW and k != TOT_OVERFLOW_BYTES and k != TOT_OVERFLOW_FLOWS:
                        self.a.totals[k] += o.a.totals[k]
                for k in range(ERR_N):
                    self.a.errors[k] += o.a.errors[k]
            return int(ovf)
        if isinstance(other, dict) and "columns" in other:
            c = other["columns"]
            n = len(c["watch"])
            ovf = self.add_many(c["watch"], c["direction"], c["peer"], c["tag"],
                                c["packets"], c["bytes"], c.get("flows"))
            # Rows equal to OVERFLOW_KEY went to the bucket by design, not for lack of room.
            ovf_rows = int(np.count_nonzero(
                (np.asarray(c["watch"]) == 0xFFFFFFFF) & (np.asarray(c["direction"]) == 0xFF)
                & (np.asarray(c["peer"]) == 0xFFFFFFFF) & (np.asarray(c["tag"]) == 0xFFFF)))
            self.add_totals({name: v for name, v in other.get("totals", {}).items()
                             if _total_index(name) not in _OVERFLOW_TOTALS})
            if other.get("errors") is not None:
                self.add_errors(other["errors"])
            return int(ovf) - ovf_rows
        raise TypeError(f"cannot merge {type(other).__name__} into Counters")


def _total_index(name):
    try:
        return TOTAL_NAMES.index(name) if name is not None else -1
    except ValueError:
        raise ValueError(f"unknown total {name!r} (known: "
                         f"{', '.join(n for n in TOTAL_NAMES if n)})") from None
