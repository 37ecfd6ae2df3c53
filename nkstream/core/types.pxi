# Shared C-level types of the native core.  Every subsystem includes this first.
#
# A *batch* is one contiguous byte buffer (an mmap'd pcap region, a pcapng chunk, a
# TPACKET_V3 block, libpcap's copy buffer) plus an array of rec_t that say where each
# packet's bytes are.  Readers fill rec_t; the pipeline walks them.  The same layout
# is exposed to Python as REC_DTYPE so sources written in Python or in another
# extension (nkstream._pcap) can hand batches to the core with one call per batch.

# Record of one captured packet inside a batch buffer (32 bytes, naturally aligned).
ctypedef struct rec_t:
    int64_t  ts_ns       # capture time, ns since the Unix epoch
    uint64_t off         # offset of the first byte of the frame in the batch buffer
    uint32_t caplen      # bytes captured (present in the buffer)
    uint32_t wirelen     # bytes on the wire (pcap orig_len; capinfos counts these)
    uint16_t linktype    # LINKTYPE_* of this packet (pcapng: per interface)
    uint16_t vlan_tci    # tag the kernel stripped (AF_PACKET auxdata), if vlan_tpid != 0
    uint16_t vlan_tpid   # 0: no stripped tag to restore; else 0x8100 / 0x88a8
    uint16_t iface       # pcapng interface id / fanout worker (informational)

REC_DTYPE = np.dtype([
    ("ts_ns", "<i8"), ("off", "<u8"), ("caplen", "<u4"), ("wirelen", "<u4"),
    ("linktype", "<u2"), ("vlan_tci", "<u2"), ("vlan_tpid", "<u2"), ("iface", "<u2"),
])
assert REC_DTYPE.itemsize == sizeof(rec_t)

# Memory for the tables a packet reads at a random place (prefix-table groups,
# counters, flow slots).  With 4 KiB pages a random access into a table of several
# MiB is a TLB miss as well as a cache miss (a first-level DTLB holds 64-72 pages,
# 256-288 KiB); a table that spans 2 MiB is therefore 2 MiB-aligned and advised onto
# transparent huge pages (madvise(2) MADV_HUGEPAGE: used in THP "madvise" mode, a
# no-op under "never", redundant under "always").  Smaller tables come from calloc.
# Zeroed (every page touched now, so the memory bound is resident from the start and
# page faults are not paid by the first packets).  Free with free().
cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #define NKS_HUGE_PAGE ((size_t)1 << 21)
    static void* nks_table_alloc(size_t n) {
        void* p = NULL;
        if (n < NKS_HUGE_PAGE)
            return calloc(n ? n : 1, 1);
        if (posix_memalign(&p, NKS_HUGE_PAGE, n) != 0)
            return NULL;
    #ifdef MADV_HUGEPAGE
        (void)madvise(p, n, MADV_HUGEPAGE);   /* advisory: errors ignored */
    #endif
        memset(p, 0, n);
        return p;
    }
    """
    void* nks_table_alloc(size_t n) noexcept nogil

# LINKTYPE_* values (https://www.tcpdump.org/linktypes.html)
cdef enum:
    LT_NULL = 0
    LT_EN10MB = 1
    LT_RAW_OLD12 = 12      # DLT_RAW on some BSDs, written as 12 in the file
    LT_RAW_OLD14 = 14      # DLT_RAW on OpenBSD
    LT_LOOP = 108          # OpenBSD loopback: like NULL, AF in network byte order
    LT_RAW = 101           # LINKTYPE_RAW
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_IPV6 = 229
    LT_LINUX_SLL2 = 276

# Decode flags (pkt_t.flags)
cdef enum:
    PF_IP = 0x01          # an IP header was decoded (src/dst valid)
    PF_PROTO = 0x02       # proto is the final IP protocol (after extension headers)
    PF_PORTS = 0x04       # sport/dport valid (TCP, UDP, SCTP, first fragment)
    PF_FRAG = 0x08        # an IP fragment (first or not)
    PF_FRAG_FIRST = 0x10  # the first fragment (offset 0, more fragments set)
    PF_GRE = 0x20         # GRE header decoded: gre_ver, gre_ptype (gre_key for v1 call id)
    PF_SPI = 0x40         # ESP/AH SPI valid
    PF_PAYLOAD = 0x80     # l4_off/l4_len locate a (possibly empty) L4 payload

cdef enum:
    MAX_VLANS = 4         # VLAN ids stored; pkt_t.nvlan counts them all (capped decode)

# One decoded packet.  Filled by decode_packet() without allocation; addresses are
# kept both as 16 raw bytes (IPv6, or IPv4 in the first 4) and, for IPv4, as host-order
# integers so the LPM needs no byte swap at lookup time.
ctypedef struct pkt_t:
    uint16_t error        # error reason id (decode.pxi ERROR_NAMES); 0 = fully decoded
    uint8_t  ipver        # 0 (no IP), 4 or 6
    uint8_t  proto        # IP protocol number (valid with PF_PROTO)
    uint16_t flags        # PF_*
    uint8_t  nvlan        # number of VLAN tags seen (restored tag included)
    uint8_t  tcp_flags
    uint16_t vlan[MAX_VLANS]  # VLAN ids, outermost first
    uint16_t sport, dport
    uint8_t  gre_ver
    uint16_t gre_ptype    # GRE protocol type (0x880B for PPTP's enhanced GRE)
    uint32_t gre_key      # GRE key (v0 with K bit) or call id (v1)
    uint32_t spi          # ESP / AH security parameter index
    uint32_t src4, dst4   # IPv4 addresses in host byte order (ipver == 4)
    uint8_t  src[16]      # raw address bytes (IPv4: first 4 bytes)
    uint8_t  dst[16]
    uint32_t l3_off       # offset of the (outer) IP header in the frame
    uint32_t l4_off       # offset of the L4 payload (after TCP/UDP/SCTP header)
    uint32_t l4_len       # captured bytes of L4 payload (<= caplen - l4_off)
    uint32_t frag_id      # IP fragment identification (IPv4: 16 bits, IPv6: 32), with PF_FRAG

# Zero a struct in place: `NKS_ZERO(p)` is a zeroed vector register and a few
# stores (6 for the 88-byte pkt_t), written out with SSE2 intrinsics because both
# memset() and a zero compound literal of such a struct compile (gcc, generic tuning)
# to `rep stosq`, whose start-up cost on current x86 cores was about 3 ns a packet;
# copying from an all-zero global costs a load per store.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline __attribute__((always_inline)) void nks_zero_bytes(void* p, size_t n) {
        /* n is a compile-time constant at every use: the loops unroll away */
        char* c = (char*)p;
        size_t i = 0;
        const __m128i z = _mm_setzero_si128();
        for (; i + 16 <= n; i += 16) _mm_storeu_si128((__m128i*)(c + i), z);
        for (; i + 8 <= n; i += 8) { const uint64_t z8 = 0; memcpy(c + i, &z8, 8); }
        for (; i < n; i++) c[i] = 0;
    }
    #else
    static inline void nks_zero_bytes(void* p, size_t n) { memset(p, 0, n); }
    #endif
    #define NKS_ZERO(p) nks_zero_bytes((p), sizeof(*(p)))
    """
    void NKS_ZERO(...) nogil

# Direction of a packet relative to the watch table (DESIGN.md vocabulary).
cdef enum:
    DIR_TRANSIT = 0       # neither side watched
    DIR_OUTBOUND = 1      # src watched
    DIR_INBOUND = 2       # dst watched
    DIR_INTERNAL = 3      # both watched
DIRECTION_NAMES = ("transit", "outbound", "inbound", "internal")

# Which build this is (setup.py: NKSTREAM_DEBUG=1 defines NKSTREAM_DEBUG and turns the
# Cython bounds checks back on), so test runs can say what they tested.
cdef extern from *:
    """
    #ifdef NKSTREAM_DEBUG
    #define NKS_DEBUG_BUILD 1
    #else
    #define NKS_DEBUG_BUILD 0
    #endif
    """
    int NKS_DEBUG_BUILD
DEBUG_BUILD = bool(NKS_DEBUG_BUILD)
