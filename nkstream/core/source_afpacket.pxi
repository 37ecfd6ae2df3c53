# AF_PACKET TPACKET_V3 capture engine (Linux): a memory-mapped receive ring of blocks
# the kernel fills with packets and hands over whole; one block is one batch.
#
# Kernel references: Documentation/networking/packet_mmap.rst (TPACKET_V3, fanout,
# PACKET_STATISTICS) and include/uapi/linux/if_packet.h; the life cycle follows
# Suricata's source-af-packet.c (AFPReadFromRingV3): wait for the block at the ring
# cursor to turn TP_STATUS_USER, walk it, give it back with TP_STATUS_KERNEL, always,
# on error paths too.
#
# Defaults: 64 blocks of 1 MiB (a 64 MiB ring per worker) with a 10 ms block timeout.
# Suricata's af-packet v3 defaults to 32 KiB..1 MiB blocks (block-size) and a 10 ms
# block-timeout, Zeek's af_packet plugin to a 128 MiB buffer split into 32 KiB
# blocks with a 10 ms timeout.  Big blocks mean few polls and few Python calls per
# second (one per block) at high rates; the timeout bounds latency at low rates, since
# the kernel retires a partly filled block when it expires (empty blocks are not
# retired).  64 MiB rides out a ~50 ms stall at 10 Gbit/s.

from nkstream.includes cimport linux_if_packet as lp
from nkstream.includes cimport sys_socket as so
from nkstream.includes cimport sys_mman as mm
from nkstream.includes cimport poll as pl
from nkstream.includes cimport linux_filter as lf
from nkstream.includes cimport net_if
from cpython.buffer cimport PyBUF_WRITABLE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR, ENETDOWN

import errno as _errno
import os as _os

cdef extern from *:
    """
    /* The block status word is shared with the kernel: read it with acquire
       semantics before reading the block, and hand the block back with a release
       store after we are done with it (packet_mmap.rst: the kernel uses
       smp_wmb()/flush_dcache_page around it). */
    static inline unsigned int nk_load_acquire_u32(const volatile unsigned int *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void nk_store_release_u32(volatile unsigned int *p, unsigned int v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline void nk_prefetch_ro(const void *p) { __builtin_prefetch(p, 0, 3); }
    """
    uint32_t nk_load_acquire_u32(const uint32_t* p) noexcept nogil
    void nk_store_release_u32(uint32_t* p, uint32_t v) noexcept nogil
    void nk_prefetch_ro(const void* p) noexcept nogil

# The packets of a block are laid out one after the other, but each header says
# where the next one is, so a plain walk is a chain of dependent loads through
# memory the kernel wrote from another CPU: one cache miss per packet (~130 ns here).
# Prefetching the block sequentially this far ahead of the walk turns that into a
# stream (and leaves the frames in cache for the classifier that reads them next).
cdef enum:
    AFP_PREFETCH_AHEAD = 4096


class InterfaceDownError(OSError):
    """The capture interface went down (the kernel reported ENETDOWN on the socket).

    The socket stays bound: Linux re-attaches it when the interface comes back up
    (af_packet.c packet_notifier, NETDEV_UP), so the caller waits and reads on.
    """


FANOUT_MODES = {"hash": lp.PACKET_FANOUT_HASH, "lb": lp.PACKET_FANOUT_LB,
                "cpu": lp.PACKET_FANOUT_CPU}

# ARPHRD_* (include/uapi/linux/if_arp.h) -> LINKTYPE_* of the frames a SOCK_RAW
# packet socket delivers on that kind of interface.
_ARPHRD_LINKTYPE = {1: LT_EN10MB, 772: LT_EN10MB, 65534: LT_RAW}


cdef int _raise_os(str what, int err, object ifname) except -1:
    """Every failing system call of the engine becomes an OSError here."""
    if err == ENETDOWN:
        raise InterfaceDownError(err, f"{ifname}: {what}: {_os.strerror(err)}")
    raise OSError(err, f"{ifname}: {what}: {_os.strerror(err)}")


# Walk one TPACKET_V3 block into rec_t records; frames are located relative to the
# block start.  Every offset the kernel wrote is checked against the block size
# before it is used; a header that points outside the block ends the walk and is
# counted in *bad (never seen from a correct kernel; a guard, not a code path).
cdef uint32_t afp_walk_block(const uint8_t* blk, uint32_t block_size, rec_t* out,
                             uint32_t cap, uint16_t linktype, uint16_t iface,
                             uint64_t* bad) noexcept nogil:
    cdef const lp.tpacket_block_desc* bd = <const lp.tpacket_block_desc*>blk
    cdef uint32_t n = bd.hdr.bh1.num_pkts
    cdef uint64_t off = bd.hdr.bh1.offset_to_first_pkt
    cdef uint64_t mac
    cdef uint32_t i, k = 0
    cdef const lp.tpacket3_hdr* h
    cdef rec_t* r
    cdef uint64_t pf = off
    for i in range(n):
        while pf < off + AFP_PREFETCH_AHEAD and pf < block_size:
            nk_prefetch_ro(blk + pf)
            pf += 64
        if k >= cap or off + sizeof(lp.tpacket3_hdr) > block_size:
            bad[0] += n - i
            break
        h = <const lp.tpacket3_hdr*>(blk + off)
        mac = off + h.tp_mac
        if mac + h.tp_snaplen > block_size or h.tp_snaplen > h.tp_len:
            bad[0] += n - i
            break
        r = &out[k]
        r.ts_ns = <int64_t>h.tp_sec * 1000000000 + h.tp_nsec
        r.off = mac
        r.caplen = h.tp_snaplen
        r.wirelen = h.tp_len
        r.linktype = linktype
        r.iface = iface
        if h.tp_status & lp.TP_STATUS_VLAN_VALID:
            # The NIC or the kernel (skb_vlan_untag) took the outer tag off the frame
            # and left it in the skb; the decoder puts it back (decode.pxi
            # restore_vlan) so the packet decodes as it did on the wire.
            r.vlan_tci = <uint16_t>h.hv1.tp_vlan_tci
            # tp_len counts the frame without the tag; on the wire it had 4 more
            # bytes (libpcap adds them back too).  caplen stays what is in the block.
            r.wirelen = h.tp_len + 4
            if h.tp_status & lp.TP_STATUS_VLAN_TPID_VALID:
                r.vlan_tpid = h.hv1.tp_vlan_tpid
            else:
                r.vlan_tpid = lp.ETH_P_8021Q    # kernels before 4.0 report no TPID
        else:
            r.vlan_tci = 0
            r.vlan_tpid = 0
        k += 1
        if h.tp_next_offset == 0:
            if i + 1 < n:
                bad[0] += n - i - 1
            break
        off += h.tp_next_offset
    return k


cdef uint64_t _sum_wirelen(object recs) except? 0:
    cdef cnp.ndarray arr = recs
    cdef const rec_t* r = <const rec_t*>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t i, n = arr.shape[0]
    cdef uint64_t s = 0
    for i in range(n):
        s += r[i].wirelen
    return s


def walk_block(const uint8_t[::1] block, uint16_t linktype=LT_EN10MB, uint16_t iface=0):
    """Walk one TPACKET_V3 block (its bytes, from the block descriptor on) with the
    engine's native walker; returns (recs, bad).  For tests, which hold it against
    nkstream.reference_afpacket on real and on damaged blocks."""
    cdef uint32_t size = <uint32_t>block.shape[0]
    cdef uint32_t cap = size // 64 + 1
    cdef uint64_t bad = 0
    cdef uint32_t n
    if size < sizeof(lp.tpacket_block_desc):
        raise ValueError(f"a block is at least {sizeof(lp.tpacket_block_desc)} bytes, got {size}")
    out = np.zeros(cap, dtype=REC_DTYPE)
    cdef cnp.ndarray arr = out
    with nogil:
        n = afp_walk_block(&block[0], size, <rec_t*>cnp.PyArray_DATA(arr), cap, linktype, iface, &bad)
    return out[:n], bad


cdef class AfPacketRing:
    """A TPACKET_V3 receive ring on one interface (root or CAP_NET_RAW to open).

    ``AfPacketRing(ifname, block_size=1 MiB, block_count=64, frame_size=2048,
    block_timeout_ms=10, promisc=True, fanout=None, fanout_group=0,
    fanout_defrag=True, bpf=None, worker=0)``

    ``next_block(timeout_ms)`` waits for the next block the kernel has filled and
    returns ``(data, recs)``: ``data`` a read-only, zero-copy memoryview over the
    whole block and ``recs`` a REC_DTYPE array whose ``off`` is relative to the block
    start; or None when nothing arrived in time.  Both stay valid until
    ``release_block()`` hands the block back to the kernel (after that the kernel
    overwrites it).  ``process_blocks()`` does next -> process -> release in a loop.

    ``fanout`` ('hash', 'cpu', 'lb') joins PACKET_FANOUT group ``fanout_group``;
    every ring in the group gets a share of the interface's packets.  ``bpf`` is a
    classic BPF program as raw ``struct sock_filter`` bytes
    (``nkstream._pcap.compile_bpf``), attached before the socket is bound so no
    unfiltered packet gets in.  The socket, the mapping and the promiscuous
    membership are released by ``close()`` (the kernel also drops the membership when
    the last descriptor of the socket closes).
    """
    cdef int fd
    cdef uint8_t* ring
    cdef size_t ring_len
    cdef int exports             # live buffer exports (data views) of the mapping
    cdef bint unmap_pending      # close() ran while a data view was alive
    cdef uint32_t _block_size, _block_count, _frame_size, _block_timeout_ms
    cdef uint32_t cur            # ring cursor: the block we read next
    cdef bint held               # block `cur` is ours until release_block()
    cdef bint resync             # find the oldest user block before trusting `cur`
    cdef uint16_t _linktype, _worker
    cdef int _ifindex
    cdef bint _promisc, promisc_joined
    cdef object _ifname, _fanout
    cdef int _fanout_group
    cdef object _recs            # preallocated REC_DTYPE array (capacity per block)
    cdef uint32_t rec_cap
    cdef uint64_t _blocks, _packets, _bytes, _bad
    cdef uint64_t k_packets, k_drops, k_freeze     # PACKET_STATISTICS, accumulated

    def __cinit__(self):
        self.fd = -1
        self.ring = NULL

    def __init__(self, ifname, *, uint32_t block_size=1 << 20, uint32_t block_count=64,
                 uint32_t frame_size=2048, uint32_t block_timeout_ms=10,
                 bint promisc=True, fanout=None, int fanout_group=0,
                 bint fanout_defrag=True, bpf=None, int worker=0):
        cdef long page = so.sysconf(so._SC_PAGESIZE)
        cdef int val, err
        cdef lp.tpacket_req3 req
        cdef lp.sockaddr_ll sll
        cdef lp.packet_mreq mreq
        cdef lf.sock_fprog fprog
        cdef const uint8_t[::1] prog
        cdef bytes name_b
        cdef void* m
        if self.fd >= 0:
            raise RuntimeError("AfPacketRing is already open")
        self._ifname = str(ifname)
        name_b = self._ifname.encode()
        if not name_b or len(name_b) >= net_if.IF_NAMESIZE:
            raise ValueError(f"bad interface name {self._ifname!r}")
        if block_size == 0 or block_size % page:
            raise ValueError(f"block_size {block_size} is not a multiple of the page size {page}")
        if block_count == 0:
            raise ValueError("block_count must be at least 1")
        if frame_size < lp.TPACKET3_HDRLEN or frame_size % lp.TPACKET_ALIGNMENT or frame_size > block_size:
            raise ValueError(f"frame_size {frame_size} must be a multiple of {lp.TPACKET_ALIGNMENT} "
                             f"between {lp.TPACKET3_HDRLEN} and block_size")
        if fanout is not None and fanout not in FANOUT_MODES:
            raise ValueError(f"fanout mode {fanout!r}: expected one of {', '.join(FANOUT_MODES)}")
        if not 0 <= fanout_group <= 0xFFFF:
            raise ValueError(f"fanout group {fanout_group} out of range 0..65535")
        if not 0 <= worker <= 0xFFFF:
            raise ValueError(f"worker {worker} out of range 0..65535")
        self._block_size = block_size
        self._block_count = block_count
        self._frame_size = frame_size
        self._block_timeout_ms = block_timeout_ms
        self._promisc = promisc
        self._fanout = fanout
        self._fanout_group = fanout_group
        self._worker = <uint16_t>worker
        self._ifindex = <int>net_if.if_nametoindex(name_b)
        if self._ifindex == 0:
            raise OSError(_errno.ENODEV, f"{self._ifname}: no such interface")
        try:
            with open(f"/sys/class/net/{self._ifname}/type") as f:
                hatype = int(f.read())
        except OSError:
            hatype = 1
        if hatype not in _ARPHRD_LINKTYPE:
            raise ValueError(f"{self._ifname}: link type ARPHRD {hatype} is not supported "
                             "(Ethernet, loopback and raw-IP interfaces are)")
        self._linktype = _ARPHRD_LINKTYPE[hatype]

        # Protocol 0: the socket receives nothing until bind() names the protocol and
        # the interface, so no packet of another interface slips into the ring.
        self.fd = so.socket(so.AF_PACKET, so.SOCK_RAW | so.SOCK_CLOEXEC, 0)
        if self.fd < 0:
            err = errno
            self.fd = -1
            _raise_os("socket(AF_PACKET)", err, self._ifname)
        try:
            val = lp.TPACKET_V3
            if so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_VERSION, &val, sizeof(val)) < 0:
                _raise_os("PACKET_VERSION TPACKET_V3", errno, self._ifname)
            if bpf is not None:
                prog = bpf
                if len(prog) == 0 or len(prog) % sizeof(lf.sock_filter) or \
                        len(prog) // sizeof(lf.sock_filter) > lf.BPF_MAXINSNS:
                    raise ValueError(f"BPF program of {len(prog)} bytes is not a sock_filter array")
                fprog.len = <unsigned short>(len(prog) // sizeof(lf.sock_filter))
                fprog.filter = <lf.sock_filter*>&prog[0]
                if so.setsockopt(self.fd, so.SOL_SOCKET, so.SO_ATTACH_FILTER, &fprog, sizeof(fprog)) < 0:
                    _raise_os("SO_ATTACH_FILTER", errno, self._ifname)
            memset(&req, 0, sizeof(req))
            req.tp_block_size = block_size
            req.tp_block_nr = block_count
            req.tp_frame_size = frame_size
            req.tp_frame_nr = (block_size // frame_size) * block_count
            req.tp_retire_blk_tov = block_timeout_ms
            if so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_RX_RING, &req, sizeof(req)) < 0:
                _raise_os(f"PACKET_RX_RING {block_count} x {block_size} bytes", errno, self._ifname)
            self.ring_len = <size_t>block_size * block_count
            m = mm.mmap(NULL, self.ring_len, mm.PROT_READ | mm.PROT_WRITE, mm.MAP_SHARED, self.fd, 0)
            if m == mm.MAP_FAILED:
                _raise_os(f"mmap of {self.ring_len} bytes", errno, self._ifname)
            self.ring = <uint8_t*>m
            memset(&sll, 0, sizeof(sll))
            sll.sll_family = so.AF_PACKET
            sll.sll_protocol = so.htons(lp.ETH_P_ALL)
            sll.sll_ifindex = self._ifindex
            if so.bind(self.fd, <so.sockaddr*>&sll, sizeof(sll)) < 0:
                _raise_os("bind", errno, self._ifname)
            if promisc:
                memset(&mreq, 0, sizeof(mreq))
                mreq.mr_ifindex = self._ifindex
                mreq.mr_type = lp.PACKET_MR_PROMISC
                if so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) < 0:
                    _raise_os("PACKET_ADD_MEMBERSHIP promiscuous", errno, self._ifname)
                self.promisc_joined = True
            if fanout is not None:
                # Joined after bind: the kernel requires a bound, running socket, and
                # every member of a group must use the same mode and flags.
                # The option is an int holding u16 id | u16 (mode|flags) << 16; with
                # FLAG_DEFRAG (0x8000) it only fits as a wrapped unsigned value.
                val = <int><uint32_t>(fanout_group | ((FANOUT_MODES[fanout] |
                                       (lp.PACKET_FANOUT_FLAG_DEFRAG if fanout_defrag else 0)) << 16))
                if so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_FANOUT, &val, sizeof(val)) < 0:
                    _raise_os(f"PACKET_FANOUT {fanout} group {fanout_group}", errno, self._ifname)
        except BaseException:
            self._teardown()
            raise
        # A packet takes at least its TPACKET3 header plus sockaddr_ll (TPACKET_ALIGN'd)
        # in a block, so this bounds the packets one block can hold.
        self.rec_cap = block_size // 64 + 1
        self._recs = np.zeros(self.rec_cap, dtype=REC_DTYPE)
        self.cur = 0
        self.held = False
        self.resync = False

    # -- buffer protocol: the mapping, exported read-only, so data views keep it alive
    def __getbuffer__(self, Py_buffer* buf, int flags):
        if self.ring == NULL or self.unmap_pending:
            raise ValueError("AfPacketRing is closed")
        if flags & PyBUF_WRITABLE:
            raise BufferError("the AF_PACKET ring is exported read-only")
        buf.buf = self.ring
        buf.obj = self
        buf.len = <Py_ssize_t>self.ring_len
        buf.readonly = 1
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = NULL
        buf.strides = NULL
        buf.suboffsets = NULL
        buf.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        self.exports -= 1
        if self.exports == 0 and self.unmap_pending:
            self._unmap()

    cdef void _unmap(self) noexcept:
        if self.ring != NULL:
            mm.munmap(self.ring, self.ring_len)
            self.ring = NULL
        self.unmap_pending = False

    cdef void _teardown(self) noexcept:
        cdef lp.packet_mreq mreq
        if self.fd >= 0:
            if self.promisc_joined:
                memset(&mreq, 0, sizeof(mreq))
                mreq.mr_ifindex = self._ifindex
                mreq.mr_type = lp.PACKET_MR_PROMISC
                so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_DROP_MEMBERSHIP, &mreq, sizeof(mreq))
                self.promisc_joined = False
            so.close(self.fd)
            self.fd = -1
        if self.exports > 0:
            self.unmap_pending = True       # a data view is alive: unmap when it goes
        else:
            self._unmap()

    def __dealloc__(self):
        self._teardown()

    def close(self):
        """Hand back the held block, leave the promiscuous mode, close the socket.

        The mapping is unmapped now, or when the last data view is released."""
        cdef lp.tpacket_block_desc* bd
        if self.held and self.ring != NULL:
            bd = <lp.tpacket_block_desc*>(self.ring + <size_t>self.cur * self._block_size)
            nk_store_release_u32(&bd.hdr.bh1.block_status, lp.TP_STATUS_KERNEL)
            self.held = False
        self._teardown()

    def detach(self):
        """Drop this process's descriptor and mapping of a ring that another process
        owns (a worker's copy of a sibling's ring, inherited through fork), leaving
        the socket alone: no membership dropped, no block handed back."""
        if self.fd >= 0:
            so.close(self.fd)
            self.fd = -1
        self.promisc_joined = False
        self.held = False
        if self.exports > 0:
            self.unmap_pending = True
        else:
            self._unmap()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef inline lp.tpacket_block_desc* _block(self, uint32_t i) noexcept nogil:
        return <lp.tpacket_block_desc*>(self.ring + <size_t>i * self._block_size)

    cdef bint _find_oldest_user_block(self) noexcept nogil:
        # After a fork from a process whose cursor is stale (a restarted worker), the
        # block to read next is the user-owned block with the lowest sequence number.
        cdef uint32_t i
        cdef uint64_t best = 0
        cdef bint found = False
        cdef lp.tpacket_block_desc* bd
        for i in range(self._block_count):
            bd = self._block(i)
            if nk_load_acquire_u32(&bd.hdr.bh1.block_status) & lp.TP_STATUS_USER:
                if not found or bd.hdr.bh1.seq_num < best:
                    best = bd.hdr.bh1.seq_num
                    self.cur = i
                    found = True
        return found

    def mark_resync(self):
        """Distrust the ring cursor (call in a process that inherited the ring from
        another reader, e.g. a worker restarted after its predecessor died)."""
        if self.held:
            raise RuntimeError("release_block() the held block first")
        self.resync = True

    def next_block(self, int timeout_ms=-1):
        """Wait up to ``timeout_ms`` (-1: forever) for the next filled block.

        Returns ``(data, recs)`` or None on timeout or when a signal interrupted the
        wait (its Python handler has run by then).  Raises InterfaceDownError when
        the interface went down (ENETDOWN)."""
        cdef lp.tpacket_block_desc* bd
        cdef pl.pollfd pfd
        cdef int rc, err = 0, tries
        cdef so.socklen_t elen = sizeof(int)
        cdef uint32_t n
        cdef uint64_t bad = 0
        cdef rec_t* recs
        cdef cnp.ndarray arr
        if self.fd < 0:
            raise ValueError("AfPacketRing is closed")
        if self.held:
            raise RuntimeError("release_block() the held block before asking for the next")
        for tries in range(2):
            if self.resync:
                if self._find_oldest_user_block():
                    self.resync = False
            bd = self._block(self.cur)
            if not self.resync and nk_load_acquire_u32(&bd.hdr.bh1.block_status) & lp.TP_STATUS_USER:
                break
            if tries == 1:
                return None
            pfd.fd = self.fd
            pfd.events = pl.POLLIN | pl.POLLERR
            pfd.revents = 0
            with nogil:
                rc = pl.poll(&pfd, 1, timeout_ms)
            if rc < 0:
                err = errno
                if err == EINTR:
                    PyErr_CheckSignals()
                    return None
                _raise_os("poll", err, self._ifname)
            if rc == 0:
                return None
            if pfd.revents & pl.POLLNVAL:
                raise ValueError(f"{self._ifname}: the capture socket was closed")
            if pfd.revents & pl.POLLERR:
                err = 0
                so.getsockopt(self.fd, so.SOL_SOCKET, so.SO_ERROR, &err, &elen)
                if err:
                    _raise_os("capture", err, self._ifname)
        self.held = True
        arr = self._recs
        recs = <rec_t*>cnp.PyArray_DATA(arr)
        with nogil:
            n = afp_walk_block(<const uint8_t*>bd, self._block_size, recs, self.rec_cap,
                               self._linktype, self._worker, &bad)
        self._bad += bad
        self._blocks += 1
        self._packets += n
        start = <Py_ssize_t>self.cur * self._block_size
        return memoryview(self)[start:start + self._block_size], self._recs[:n]

    def release_block(self):
        """Hand the held block back to the kernel (TP_STATUS_KERNEL); no-op if none."""
        cdef lp.tpacket_block_desc* bd
        if not self.held:
            return
        bd = self._block(self.cur)
        nk_store_release_u32(&bd.hdr.bh1.block_status, lp.TP_STATUS_KERNEL)
        self.held = False
        self.cur = (self.cur + 1) % self._block_count

    def process_blocks(self, classifier, int max_blocks=64, int timeout_ms=100):
        """Feed up to ``max_blocks`` blocks to ``classifier.process(data, recs)``.

        Returns after ``max_blocks`` blocks or the first wait that times out (the
        caller's chance to do housekeeping); the block is returned to the kernel
        whatever ``process`` does.  Returns (blocks, packets, wire bytes)."""
        cdef int blocks = 0
        cdef uint64_t packets = 0, nbytes = 0
        while blocks < max_blocks:
            got = self.next_block(timeout_ms if blocks == 0 else 0)
            if got is None:
                break
            try:
                data, recs = got
                classifier.process(data, recs)
                packets += len(recs)
                nbytes += _sum_wirelen(recs)
            finally:
                data = recs = got = None      # drop the views before the kernel refills
                self.release_block()
            blocks += 1
        return blocks, packets, nbytes

    def stats(self):
        """Kernel counters of this socket since it was opened: ``packets`` (reached
        the socket, drops included), ``drops`` (the ring was full), ``freeze_q``
        (queue frozen), plus what user space walked: ``blocks``, ``walked`` packets
        and ``bad`` (headers pointing outside the block; 0 from a sane kernel).

        PACKET_STATISTICS resets on every read, so the deltas are accumulated here;
        only one process may read them for a given socket."""
        cdef lp.tpacket_stats_v3 st
        cdef so.socklen_t slen = sizeof(st)
        if self.fd >= 0:
            memset(&st, 0, sizeof(st))
            if so.getsockopt(self.fd, so.SOL_PACKET, lp.PACKET_STATISTICS, &st, &slen) < 0:
                _raise_os("PACKET_STATISTICS", errno, self._ifname)
            self.k_packets += st.tp_packets
            self.k_drops += st.tp_drops
            self.k_freeze += st.tp_freeze_q_cnt
        return {"packets": self.k_packets, "drops": self.k_drops, "freeze_q": self.k_freeze,
                "blocks": self._blocks, "walked": self._packets, "bad": self._bad}

    def fileno(self):
        return self.fd

    @property
    def closed(self):
        return self.fd < 0

    @property
    def ifname(self):
        return self._ifname

    @property
    def ifindex(self):
        return self._ifindex

    @property
    def linktype(self):
        return self._linktype

    @property
    def worker(self):
        return self._worker

    @property
    def config(self):
        return {"ifname": self._ifname, "block_size": self._block_size,
                "block_count": self._block_count, "frame_size": self._frame_size,
                "block_timeout_ms": self._block_timeout_ms, "promisc": self._promisc,
                "fanout": self._fanout, "fanout_group": self._fanout_group}
