# IPv4 / IPv6 longest-prefix match: multibit tries with a direct-indexed first level.
#
# One structure serves both families (nkstream/prefixes.py explains the choice and
# the memory per table size):
#
#   level 0   2^S uint32 entries indexed by the first S bits of the address
#             (IPv4: S = 16, or S = 24 for big tables -- see lpm4_choose_stride;
#              IPv6: S = 16)
#   level 1+  groups of 256 uint32 entries, one per 8 further bits ("tbl8" in DPDK's
#             rte_lpm), allocated only under a first-level slot (or a group entry)
#             covered by a prefix longer than that level.
#
# Every entry is either a label id (bit 31 clear; 0 = no match) or, with bit 31 set,
# the index of the group holding the next 8 bits.  Prefixes are *leaf-pushed*: a
# group starts as 256 copies of the entry it replaces, so a lookup ends at the first
# entry without bit 31 and never backtracks.  IPv4 lookups read 1-3 entries (the first
# from a 256 KiB array that stays in L2), IPv6 lookups 1-15.
#
# Tables are static: built in one pass from arrays (the Python PrefixTable rebuilds
# after changes), so there is no per-entry depth bookkeeping as in rte_lpm's
# incremental insert/delete; a lookup is pure loads and shifts, no branches on depth.
#
# Error reporting: lookups are noexcept nogil (they cannot fail); builds are except -1
# (MemoryError on allocation failure, ValueError on a length beyond the family).

cdef enum:
    LPM_EXT = 0x80000000u      # entry is a group index, not a label id
    LPM_IDX = 0x7fffffffu
    LPM_MAX_LABEL = 0x7fffffff
    LPM4_GROUPS_FOR_TBL24 = 65536   # 64 MiB of groups = the size of a 2^24 first level

ctypedef struct lpm_trie_t:
    uint32_t* tbl0        # 2^stride0 entries
    uint32_t* tbl8        # ngroups * 256 entries
    uint32_t  ngroups
    uint32_t  cap_groups
    uint32_t  nprefixes
    uint32_t  stride0     # bits resolved by tbl0: 16 or 24
    uint32_t  shift0      # IPv4: 32 - stride0 (tbl0 index = addr >> shift0)

ctypedef lpm_trie_t lpm4_t
ctypedef lpm_trie_t lpm6_t


cdef inline uint32_t lpm4_lookup(const lpm4_t* t, uint32_t addr) noexcept nogil:
    """Label id of the longest prefix containing addr (host byte order); 0 = none."""
    # At most two group levels (first level 16 bits: bits 8-15, then 0-7; 24 bits:
    # bits 0-7), and the last always resolves the low byte: unrolled, no loop.
    cdef uint32_t e = t.tbl0[addr >> t.shift0]
    if e & LPM_EXT:
        e = t.tbl8[(<size_t>(e & LPM_IDX) << 8) | ((addr >> (t.shift0 - 8)) & 0xffu)]
        if e & LPM_EXT:
            e = t.tbl8[(<size_t>(e & LPM_IDX) << 8) | (addr & 0xffu)]
    return e


cdef inline uint32_t lpm6_lookup(const lpm6_t* t, const uint8_t* a) noexcept nogil:
    """Label id of the longest prefix containing the 16 address bytes at a; 0 = none."""
    cdef uint32_t e = t.tbl0[(<uint32_t>a[0] << 8) | a[1]]
    cdef int i = 2
    # The build never creates a group below byte 15 (a /128 ends there), so i <= 15.
    while e & LPM_EXT:
        e = t.tbl8[(<size_t>(e & LPM_IDX) << 8) | a[i]]
        i += 1
    return e


cdef enum:
    LPM6_LANES = 8


cdef void lpm6_lookup_batch(const lpm6_t* t, const uint8_t* addrs, Py_ssize_t n,
                            uint32_t* out) noexcept nogil:
    """lpm6_lookup for n addresses (16 bytes each), LPM6_LANES at a time, one trie
    level per step across the lanes.

    One IPv6 lookup is a chain of dependent loads whose length varies with the
    address, so the loop branch mispredicts about once per lookup and the CPU cannot
    run ahead into the next lookup's loads: in big tables the cache misses queue up.
    Stepping several lookups together issues their loads side by side (the
    "group prefetch" / AMAC idea), so misses overlap.  Same results as lpm6_lookup."""
    cdef uint32_t e[LPM6_LANES]
    cdef const uint8_t* p[LPM6_LANES]
    cdef Py_ssize_t base = 0, j, m
    cdef uint32_t live
    while base < n:
        m = n - base if n - base < LPM6_LANES else LPM6_LANES
        live = 0
        for j in range(m):
            p[j] = addrs + (base + j) * 16
            e[j] = t.tbl0[(<uint32_t>p[j][0] << 8) | p[j][1]]
            p[j] += 2
            live |= e[j]
        while live & LPM_EXT:
            live = 0
            for j in range(m):
                if e[j] & LPM_EXT:
                    e[j] = t.tbl8[(<size_t>(e[j] & LPM_IDX) << 8) | p[j][0]]
                    p[j] += 1
                    live |= e[j]
        for j in range(m):
            out[base + j] = e[j]
        base += LPM6_LANES


cdef void lpm_free(lpm_trie_t* t) noexcept nogil:
    if t != NULL:
        free(t.tbl0)
        free(t.tbl8)
        free(t)


cdef inline size_t lpm_nbytes(const lpm_trie_t* t) noexcept nogil:
    if t == NULL:
        return 0
    return sizeof(lpm_trie_t) + ((<size_t>1 << t.stride0) + <size_t>t.ngroups * 256) * 4


cdef int64_t _lpm_new_group(lpm_trie_t* t, uint32_t fill) noexcept nogil:
    """Append a group of 256 copies of `fill`; its index, or -1 when out of memory."""
    cdef uint32_t newcap
    cdef uint32_t* p
    cdef uint32_t* g
    cdef int k
    if t.ngroups == t.cap_groups:
        if t.cap_groups >= (LPM_IDX >> 1):
            return -1
        newcap = t.cap_groups * 2 if t.cap_groups else 64
        p = <uint32_t*>realloc(t.tbl8, <size_t>newcap * 256 * 4)
        if p == NULL:
            return -1
        t.tbl8 = p
        t.cap_groups = newcap
    g = t.tbl8 + <size_t>t.ngroups * 256
    for k in range(256):
        g[k] = fill
    t.ngroups += 1
    return t.ngroups - 1


cdef int _lpm_build(lpm_trie_t* t, const uint8_t* keys, Py_ssize_t keylen,
                    const uint8_t* lens, const uint32_t* ids, Py_ssize_t n,
                    int maxlen) noexcept nogil:
    """Fill an empty trie (tbl0 allocated, zeroed) from n prefixes.

    keys: n rows of keylen big-endian bytes; lens: prefix lengths; ids: label ids.
    Host bits beyond a prefix's length are ignored.  Prefixes are applied in order of
    increasing length (a stable counting sort), so a longer prefix always overwrites a
    shorter one and, for the same prefix given twice, the later row wins.  A group is
    created only by a prefix longer than its parent level, and all such prefixes come
    after every shorter one, so the leaf-pushed fill of a new group is final for all
    lengths up to its level.
    Returns 0, -1 out of memory, -2 length > maxlen, -3 label id out of range.
    """
    cdef Py_ssize_t counts[130]
    cdef Py_ssize_t i, j, pos
    cdef Py_ssize_t* order
    cdef uint32_t S = t.stride0, top, cnt, start, k, b, e
    cdef int depth, ln
    cdef int64_t g
    cdef size_t slot          # index of the entry being descended (in tbl0 or tbl8)
    cdef bint in0
    cdef const uint8_t* key
    cdef uint32_t* tab

    for i in range(130):
        counts[i] = 0
    for i in range(n):
        if lens[i] > maxlen:
            return -2
        if ids[i] > LPM_MAX_LABEL:
            return -3
        counts[lens[i] + 1] += 1
    for i in range(1, 130):
        counts[i] += counts[i - 1]
    order = <Py_ssize_t*>malloc((n if n > 0 else 1) * sizeof(Py_ssize_t))
    if order == NULL:
        return -1
    for i in range(n):
        pos = counts[lens[i]]
        counts[lens[i]] += 1
        order[pos] = i

    for j in range(n):
        i = order[j]
        key = keys + i * keylen
        ln = lens[i]
        top = (<uint32_t>key[0] << 8) | key[1]
        if S == 24:
            top = (top << 8) | key[2]
        if <uint32_t>ln <= S:
            cnt = (<uint32_t>1) << (S - ln)
            start = top & ~(cnt - 1)
            for k in range(cnt):
                t.tbl0[start + k] = ids[i]
            continue
        # Longer than the first level: descend, creating groups as needed.
        in0 = True
        slot = top
        depth = S
        while True:
            e = t.tbl0[slot] if in0 else t.tbl8[slot]
            if not (e & LPM_EXT):
                g = _lpm_new_group(t, e)
                if g < 0:
                    free(order)
                    return -1
                e = LPM_EXT | <uint32_t>g
                if in0:
                    t.tbl0[slot] = e
                else:
                    t.tbl8[slot] = e
            b = key[depth >> 3]
            tab = t.tbl8 + (<size_t>(e & LPM_IDX) << 8)
            if ln <= depth + 8:
                cnt = (<uint32_t>1) << (depth + 8 - ln)
                start = b & ~(cnt - 1)
                for k in range(cnt):
                    tab[start + k] = ids[i]
                break
            in0 = False
            slot = (<size_t>(e & LPM_IDX) << 8) | b
            depth += 8
    free(order)
    t.nprefixes = <uint32_t>n
    # Give back the unused tail of the geometric growth, into memory on huge pages
    # where the groups span one (nks_table_alloc: lookups land on random groups).
    if t.ngroups and t.ngroups < t.cap_groups or <size_t>t.ngroups * 1024 >= (1 << 21):
        tab = <uint32_t*>nks_table_alloc(<size_t>t.ngroups * 256 * 4)
        if tab != NULL:
            memcpy(tab, t.tbl8, <size_t>t.ngroups * 256 * 4)
            free(t.tbl8)
            t.tbl8 = tab
            t.cap_groups = t.ngroups
    return 0


cdef lpm_trie_t* _lpm_alloc(uint32_t stride0, uint32_t shift0) except NULL:
    cdef lpm_trie_t* t = <lpm_trie_t*>calloc(1, sizeof(lpm_trie_t))
    if t == NULL:
        raise MemoryError("LPM table")
    t.stride0 = stride0
    t.shift0 = shift0
    t.tbl0 = <uint32_t*>nks_table_alloc((<size_t>1 << stride0) * 4)
    if t.tbl0 == NULL:
        free(t)
        raise MemoryError("LPM first level")
    return t


cdef int _lpm_check(int rc, const char* family) except -1:
    if rc == -1:
        raise MemoryError(f"LPM {family.decode()} table: out of memory")
    if rc == -2:
        raise ValueError(f"{family.decode()} prefix length out of range")
    if rc == -3:
        raise ValueError(f"label id out of range (max {LPM_MAX_LABEL})")
    return 0


cdef lpm4_t* lpm4_build(const uint32_t* nets, const uint8_t* lens, const uint32_t* ids,
                        Py_ssize_t n, int stride0) except NULL:
    """Build an IPv4 table; nets in host byte order.  stride0: 16, 24 or 0 (choose).

    Choosing: a 16-bit first level (256 KiB) unless the /17../32 groups under it reach
    LPM4_GROUPS_FOR_TBL24 (64 MiB, the size of a 24-bit first level): then the table is
    rebuilt with a 24-bit first level, which needs far fewer groups and saves a
    dependent load per lookup for the same memory."""
    cdef uint8_t* keys = NULL
    cdef Py_ssize_t i
    cdef lpm4_t* t
    cdef int rc
    cdef int s = stride0 if stride0 else 16
    if s != 16 and s != 24:
        raise ValueError("IPv4 first-level stride must be 16 or 24")
    keys = <uint8_t*>malloc((n if n > 0 else 1) * 4)
    if keys == NULL:
        raise MemoryError("LPM build keys")
    with nogil:
        for i in range(n):
            keys[4 * i] = (nets[i] >> 24) & 0xff
            keys[4 * i + 1] = (nets[i] >> 16) & 0xff
            keys[4 * i + 2] = (nets[i] >> 8) & 0xff
            keys[4 * i + 3] = nets[i] & 0xff
    while True:
        try:
            t = _lpm_alloc(s, 32 - s)
        except MemoryError:
            free(keys)
            raise
        with nogil:
            rc = _lpm_build(t, keys, 4, lens, ids, n, 32)
        if rc == 0 and stride0 == 0 and s == 16 and t.ngroups >= LPM4_GROUPS_FOR_TBL24:
            lpm_free(t)
            s = 24
            continue
        break
    free(keys)
    if rc != 0:
        lpm_free(t)
        _lpm_check(rc, b"IPv4")
    return t


cdef lpm6_t* lpm6_build(const uint8_t* nets16, const uint8_t* lens, const uint32_t* ids,
                        Py_ssize_t n) except NULL:
    cdef lpm6_t* t = _lpm_alloc(16, 0)
    cdef int rc
    with nogil:
        rc = _lpm_build(t, nets16, 16, lens, ids, n, 128)
    if rc != 0:
        lpm_free(t)
        _lpm_check(rc, b"IPv6")
    return t


cdef class PrefixCore:
    """Built IPv4 and IPv6 tables of one PrefixTable (immutable once built).

    The pipeline reads ``.v4`` / ``.v6`` once per batch and calls lpm4_lookup /
    lpm6_lookup per packet; both pointers are always valid (an empty family is an
    empty table answering 0).  Keep a reference to this object while using them.
    """
    cdef lpm4_t* v4
    cdef lpm6_t* v6
    cdef readonly object labels     # tuple of label names by id (labels[0] is None)

    def __cinit__(self):
        self.v4 = NULL
        self.v6 = NULL

    def __init__(self, const uint32_t[::1] nets4 not None, const uint8_t[::1] lens4 not None,
                 const uint32_t[::1] ids4 not None, const uint8_t[:, ::1] nets6 not None,
                 const uint8_t[::1] lens6 not None, const uint32_t[::1] ids6 not None,
                 labels=(None,), int stride4=0):
        """Build from arrays: IPv4 networks (host order), lengths, label ids; IPv6
        networks as (n, 16) bytes, lengths, label ids.  stride4: IPv4 first level
        width (16 or 24; 0 = chosen by table size)."""
        cdef Py_ssize_t n4 = nets4.shape[0], n6 = nets6.shape[0]
        if lens4.shape[0] != n4 or ids4.shape[0] != n4:
            raise ValueError("IPv4 arrays differ in length")
        if lens6.shape[0] != n6 or ids6.shape[0] != n6:
            raise ValueError("IPv6 arrays differ in length")
        if n6 and nets6.shape[1] != 16:
            raise ValueError("IPv6 networks must be an (n, 16) uint8 array")
        cdef uint32_t z32 = 0
        cdef uint8_t z8 = 0
        if self.v4 != NULL or self.v6 != NULL:
            raise TypeError("PrefixCore is immutable: build a new one")
        self.v4 = lpm4_build(&nets4[0] if n4 else &z32, &lens4[0] if n4 else &z8,
                             &ids4[0] if n4 else &z32, n4, stride4)
        self.v6 = lpm6_build(&nets6[0, 0] if n6 else &z8, &lens6[0] if n6 else &z8,
                             &ids6[0] if n6 else &z32, n6)
        self.labels = tuple(labels)

    def __dealloc__(self):
        lpm_free(self.v4)
        lpm_free(self.v6)
        self.v4 = NULL
        self.v6 = NULL

    def lookup_v4(self, uint32_t addr):
        """Label id for one IPv4 address given as a host-order integer."""
        return lpm4_lookup(self.v4, addr)

    def lookup_v6(self, const uint8_t[::1] addr16 not None):
        """Label id for one IPv6 address given as 16 bytes."""
        if addr16.shape[0] != 16:
            raise ValueError("an IPv6 address is 16 bytes")
        return lpm6_lookup(self.v6, &addr16[0])

    def lookup_many_v4(self, const uint32_t[::1] addrs not None, out=None):
        """Label ids (uint32 array) for a uint32 array of host-order IPv4 addresses."""
        cdef Py_ssize_t i, n = addrs.shape[0]
        if out is None:
            out = np.empty(n, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        if o.shape[0] != n:
            raise ValueError("out has the wrong length")
        cdef const lpm4_t* t = self.v4
        with nogil:
            for i in range(n):
                o[i] = lpm4_lookup(t, addrs[i])
        return out

    def lookup_many_v6(self, const uint8_t[:, ::1] addrs not None, out=None, bint interleave=True):
        """Label ids (uint32 array) for an (n, 16) uint8 array of IPv6 addresses.
        interleave=False: one address at a time (lpm6_lookup; for benchmarks)."""
        cdef Py_ssize_t i, n = addrs.shape[0]
        if n and addrs.shape[1] != 16:
            raise ValueError("IPv6 addresses must be an (n, 16) uint8 array")
        if out is None:
            out = np.empty(n, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        if o.shape[0] != n:
            raise ValueError("out has the wrong length")
        cdef const lpm6_t* t = self.v6
        if n and interleave:
            with nogil:
                lpm6_lookup_batch(t, &addrs[0, 0], n, &o[0])
        elif n:
            with nogil:
                for i in range(n):
                    o[i] = lpm6_lookup(t, &addrs[i, 0])
        return out

    @property
    def nbytes_v4(self):
        """Bytes of memory held by the IPv4 table."""
        return lpm_nbytes(self.v4)

    @property
    def nbytes_v6(self):
        return lpm_nbytes(self.v6)

    @property
    def stride4(self):
        """Bits resolved by the IPv4 first level (16 or 24)."""
        return self.v4.stride0

    @property
    def groups_v4(self):
        return self.v4.ngroups

    @property
    def groups_v6(self):
        return self.v6.ngroups

    @property
    def nprefixes(self):
        return (self.v4.nprefixes, self.v6.nprefixes)
