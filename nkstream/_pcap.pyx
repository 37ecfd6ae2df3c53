# cython: language_level=3
"""libpcap capture engine and BPF compiler (optional extension, linked with libpcap).

``PcapSource`` captures from a live interface through libpcap (pcap_create ...
pcap_activate), for portability and for users who want libpcap's semantics
(its VLAN handling, its buffer sizing, its filter optimiser).  Packets are copied by a
C callback into one batch buffer plus rec_t records, so a whole ``pcap_dispatch`` is
one Python call, never one per packet; a batch is ``(data, recs)`` exactly like the
other sources (docs/architecture.md "The batch").

``compile_bpf(expr)`` compiles a tcpdump filter expression into the raw
``struct sock_filter`` array the AF_PACKET engine attaches with SO_ATTACH_FILTER.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.errno cimport errno, EINTR
from cpython.exc cimport PyErr_CheckSignals

cimport numpy as cnp
import numpy as np

from nkstream.includes cimport pcap as pc
from nkstream.includes cimport poll as pl
from nkstream.includes cimport sys_socket as so
from nkstream.includes cimport linux_if_packet as lp

import errno as _errno
import os as _os

from nkstream import _core

cnp.import_array()

# The batch record of the native core (nkstream/core/types.pxi rec_t), declared again
# here because this is a separate extension; checked against _core.REC_DTYPE below.
ctypedef struct rec_t:
    int64_t  ts_ns
    uint64_t off
    uint32_t caplen
    uint32_t wirelen
    uint16_t linktype
    uint16_t vlan_tci
    uint16_t vlan_tpid
    uint16_t iface


def _check_rec_layout():
    cdef rec_t r
    cdef size_t base = <size_t>&r
    ours = {"ts_ns": <size_t>&r.ts_ns - base, "off": <size_t>&r.off - base,
            "caplen": <size_t>&r.caplen - base, "wirelen": <size_t>&r.wirelen - base,
            "linktype": <size_t>&r.linktype - base, "vlan_tci": <size_t>&r.vlan_tci - base,
            "vlan_tpid": <size_t>&r.vlan_tpid - base, "iface": <size_t>&r.iface - base}
    dt = _core.REC_DTYPE
    if dt.itemsize != sizeof(rec_t) or {k: dt.fields[k][1] for k in dt.names} != ours:
        raise ImportError("nkstream._pcap was built against a different rec_t layout than "
                          "nkstream._core.REC_DTYPE; rebuild both")


_check_rec_layout()

REC_DTYPE = _core.REC_DTYPE
InterfaceDownError = _core.InterfaceDownError
FANOUT_MODES = _core.FANOUT_MODES

LIB_VERSION = (<bytes>pc.pcap_lib_version()).decode("ascii", "replace")


class PcapError(OSError):
    """libpcap reported an error (message from pcap_geterr / pcap_statustostr)."""


def compile_bpf(expr, int linktype=1, int snaplen=262144):
    """Compile a tcpdump filter expression to raw ``struct sock_filter`` bytes.

    The program is compiled for ``linktype`` frames as they sit in a capture file.
    On an AF_PACKET socket the kernel has already taken the outer VLAN tag off a
    tagged frame when the filter runs, so ``udp`` also matches 802.1Q-tagged UDP there
    (and ``vlan`` expressions do not work as on a file); ``PcapSource`` compiles on
    the live handle, where libpcap knows this.  Raises ValueError naming the
    expression and libpcap's complaint."""
    cdef pc.pcap_t* p
    cdef pc.bpf_program prog
    cdef bytes e = str(expr).encode()
    cdef bytes out
    p = pc.pcap_open_dead(linktype, snaplen)
    if p == NULL:
        raise MemoryError("pcap_open_dead failed")
    try:
        if pc.pcap_compile(p, &prog, e, 1, pc.PCAP_NETMASK_UNKNOWN) < 0:
            msg = (<bytes>pc.pcap_geterr(p)).decode("utf-8", "replace")
            raise ValueError(f"bad BPF filter {expr!r}: {msg}")
        try:
            out = (<char*>prog.bf_insns)[:prog.bf_len * sizeof(pc.bpf_insn)]
        finally:
            pc.pcap_freecode(&prog)
    finally:
        pc.pcap_close(p)
    return out


# State the dispatch callback fills; lives inside the PcapSource object.
ctypedef struct batch_t:
    pc.pcap_t* p
    uint8_t* buf
    size_t cap
    size_t used
    rec_t* recs
    uint32_t rcap
    uint32_t n
    uint16_t linktype
    uint16_t iface
    int64_t ts_mul            # 1 (ns precision) or 1000 (us)
    uint8_t* stash            # the packet that did not fit, carried to the next batch
    uint32_t stash_len
    uint32_t stash_wire
    int64_t stash_ts
    bint stashed
    uint64_t overflow         # packets neither copied nor stashed (cannot happen: see below)


cdef inline void _append(batch_t* b, const uint8_t* data, uint32_t caplen,
                         uint32_t wirelen, int64_t ts) noexcept nogil:
    cdef rec_t* r = &b.recs[b.n]
    memcpy(b.buf + b.used, data, caplen)
    r.ts_ns = ts
    r.off = b.used
    r.caplen = caplen
    r.wirelen = wirelen
    r.linktype = b.linktype
    r.vlan_tci = 0            # libpcap re-inserts stripped VLAN tags into the data
    r.vlan_tpid = 0
    r.iface = b.iface
    b.used += caplen
    b.n += 1


cdef void _on_packet(unsigned char* user, const pc.pcap_pkthdr* h,
                     const unsigned char* data) noexcept nogil:
    cdef batch_t* b = <batch_t*>user
    cdef int64_t ts = <int64_t>h.ts.tv_sec * 1000000000 + <int64_t>h.ts.tv_usec * b.ts_mul
    if b.n < b.rcap and b.used + h.caplen <= b.cap:
        _append(b, data, h.caplen, h.len, ts)
        return
    # Batch full: keep this packet for the next batch and stop the dispatch.
    # libpcap checks break_loop before delivering the next packet, so at most one
    # packet per dispatch lands here; the stash holds up to snaplen bytes.
    if not b.stashed:
        memcpy(b.stash, data, h.caplen)
        b.stash_len = h.caplen
        b.stash_wire = h.len
        b.stash_ts = ts
        b.stashed = True
    else:
        b.overflow += 1
    pc.pcap_breakloop(b.p)


cdef class PcapSource:
    """Live capture through libpcap on one interface.

    ``PcapSource(ifname, snaplen=262144, promisc=True, buffer_size=64 MiB,
    immediate=False, timeout_ms=10, bpf=None, batch_bytes=4 MiB,
    batch_packets=16384, fanout=None, fanout_group=0, fanout_defrag=True, worker=0)``

    ``next_batch(timeout_ms)`` returns ``(data, recs)`` (numpy views over buffers
    that the next call reuses) or None when nothing arrived in time.  ``bpf`` is a
    tcpdump expression compiled on the live handle.  ``fanout`` joins an AF_PACKET
    fanout group with libpcap's own socket (Linux), so several processes can share
    an interface like the AF_PACKET engine's workers.
    """
    cdef pc.pcap_t* p
    cdef batch_t b
    cdef object _buf, _recs, _ifname
    cdef int fd
    cdef int _snaplen
    cdef uint64_t _batches, _packets
    cdef public object warning

    def __cinit__(self):
        self.p = NULL
        self.b.stash = NULL
        self.fd = -1

    def __init__(self, ifname, *, int snaplen=262144, bint promisc=True,
                 int buffer_size=64 << 20, bint immediate=False, int timeout_ms=10,
                 bpf=None, size_t batch_bytes=4 << 20, uint32_t batch_packets=16384,
                 fanout=None, int fanout_group=0, bint fanout_defrag=True, int worker=0):
        cdef char errbuf[256]
        cdef int rc, val
        cdef pc.bpf_program prog
        if self.p != NULL:
            raise RuntimeError("PcapSource is already open")
        self._ifname = str(ifname)
        if snaplen <= 0:
            raise ValueError("snaplen must be positive")
        if batch_bytes < <size_t>snaplen or batch_packets == 0:
            raise ValueError(f"batch_bytes ({batch_bytes}) must hold one packet of snaplen "
                             f"({snaplen}) and batch_packets must be positive")
        if fanout is not None and fanout not in FANOUT_MODES:
            raise ValueError(f"fanout mode {fanout!r}: expected one of {', '.join(FANOUT_MODES)}")
        if not 0 <= fanout_group <= 0xFFFF or not 0 <= worker <= 0xFFFF:
            raise ValueError("fanout group and worker must be in 0..65535")
        self._snaplen = snaplen
        errbuf[0] = 0
        self.p = pc.pcap_create(self._ifname.encode(), errbuf)
        if self.p == NULL:
            raise PcapError(_errno.ENODEV, f"{self._ifname}: {errbuf.decode('utf-8', 'replace')}")
        try:
            pc.pcap_set_snaplen(self.p, snaplen)
            pc.pcap_set_promisc(self.p, promisc)
            pc.pcap_set_timeout(self.p, timeout_ms)
            pc.pcap_set_buffer_size(self.p, buffer_size)
            pc.pcap_set_immediate_mode(self.p, immediate)
            self.b.ts_mul = 1000
            if pc.pcap_set_tstamp_precision(self.p, pc.PCAP_TSTAMP_PRECISION_NANO) == 0:
                self.b.ts_mul = 1
            rc = pc.pcap_activate(self.p)
            if rc < 0:
                self._raise_status(rc, "pcap_activate")
            self.warning = self._message(rc) if rc > 0 else None
            if pc.pcap_get_tstamp_precision(self.p) != pc.PCAP_TSTAMP_PRECISION_NANO:
                self.b.ts_mul = 1000
            if bpf is not None:
                if pc.pcap_compile(self.p, &prog, str(bpf).encode(), 1, pc.PCAP_NETMASK_UNKNOWN) < 0:
                    raise ValueError(f"bad BPF filter {bpf!r}: {self._geterr()}")
                try:
                    if pc.pcap_setfilter(self.p, &prog) < 0:
                        raise PcapError(_errno.EINVAL, f"{self._ifname}: pcap_setfilter: {self._geterr()}")
                finally:
                    pc.pcap_freecode(&prog)
            # Non-blocking: on Linux with TPACKET_V3 a blocking pcap_dispatch waits
            # forever when no packet comes (libpcap lets the kernel's block timeout
            # wake it, and empty blocks never time out); we poll the descriptor
            # ourselves with our own timeout so the caller can do its housekeeping.
            if pc.pcap_setnonblock(self.p, 1, errbuf) < 0:
                raise PcapError(_errno.EINVAL, f"{self._ifname}: pcap_setnonblock: {errbuf.decode('utf-8', 'replace')}")
            self.fd = pc.pcap_get_selectable_fd(self.p)
            if fanout is not None:
                # The option is an int holding u16 id | u16 (mode|flags) << 16; with
                # FLAG_DEFRAG (0x8000) it only fits as a wrapped unsigned value.
                val = <int><uint32_t>(fanout_group | ((FANOUT_MODES[fanout] |
                                       (lp.PACKET_FANOUT_FLAG_DEFRAG if fanout_defrag else 0)) << 16))
                if so.setsockopt(self.fd, so.SOL_PACKET, lp.PACKET_FANOUT, &val, sizeof(val)) < 0:
                    err = errno
                    raise PcapError(err, f"{self._ifname}: PACKET_FANOUT {fanout} group {fanout_group}: {_os.strerror(err)}")
            self._buf = np.empty(batch_bytes, dtype=np.uint8)
            self._recs = np.zeros(batch_packets, dtype=REC_DTYPE)
            self.b.stash = <uint8_t*>malloc(snaplen)
            if self.b.stash == NULL:
                raise MemoryError()
        except BaseException:
            self.close()
            raise
        self.b.p = self.p
        self.b.buf = <uint8_t*>cnp.PyArray_DATA(self._buf)
        self.b.cap = batch_bytes
        self.b.recs = <rec_t*>cnp.PyArray_DATA(self._recs)
        self.b.rcap = batch_packets
        self.b.linktype = <uint16_t>pc.pcap_datalink(self.p)
        self.b.iface = <uint16_t>worker
        self.b.stashed = False
        self.b.overflow = 0

    cdef str _geterr(self):
        return (<bytes>pc.pcap_geterr(self.p)).decode("utf-8", "replace")

    cdef str _message(self, int rc):
        msg = (<bytes>pc.pcap_statustostr(rc)).decode("utf-8", "replace")
        detail = self._geterr()
        return f"{msg} ({detail})" if detail else msg

    cdef int _raise_status(self, int rc, str what) except -1:
        """Every libpcap failure becomes an OSError subclass here."""
        err = {pc.PCAP_ERROR_NO_SUCH_DEVICE: _errno.ENODEV,
               pc.PCAP_ERROR_PERM_DENIED: _errno.EPERM,
               pc.PCAP_ERROR_PROMISC_PERM_DENIED: _errno.EPERM,
               pc.PCAP_ERROR_IFACE_NOT_UP: _errno.ENETDOWN}.get(rc, _errno.EIO)
        msg = f"{self._ifname}: {what}: {self._message(rc)}"
        if "disappeared" in msg:           # libpcap's words for a deleted interface
            err = _errno.ENODEV
        if err == _errno.ENETDOWN:
            raise InterfaceDownError(err, msg)
        raise PcapError(err, msg)

    def close(self):
        if self.p != NULL:
            pc.pcap_close(self.p)       # closes the socket: promiscuity and fanout go with it
            self.p = NULL
            self.fd = -1
        if self.b.stash != NULL:
            free(self.b.stash)
            self.b.stash = NULL

    def detach(self):
        """Drop this process's copy of a handle another process owns (inherited
        through fork).  pcap_close() is safe there: libpcap's request to free the
        ring fails with EBUSY while the owner still maps it, and promiscuous mode is
        a socket membership that lives as long as the owner's socket."""
        self.close()

    def __dealloc__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef int _dispatch(self) except -2:
        cdef int rc
        with nogil:
            rc = pc.pcap_dispatch(self.p, -1, _on_packet, <unsigned char*>&self.b)
        if rc == pc.PCAP_ERROR_BREAK:
            return 0
        if rc < 0:
            self._raise_status(rc, "pcap_dispatch")
        return rc

    def next_batch(self, int timeout_ms=-1):
        """Wait up to ``timeout_ms`` (-1: forever) and return the packets libpcap has
        as ``(data, recs)``, or None when none came in time (or a signal interrupted
        the wait; its Python handler has run).  Raises InterfaceDownError when the
        interface went down."""
        cdef pl.pollfd pfd
        cdef int rc, err = 0
        cdef so.socklen_t elen = sizeof(int)
        if self.p == NULL:
            raise ValueError("PcapSource is closed")
        self.b.used = 0
        self.b.n = 0
        if self.b.stashed:
            _append(&self.b, self.b.stash, self.b.stash_len, self.b.stash_wire, self.b.stash_ts)
            self.b.stashed = False
        self._dispatch()
        if self.b.n == 0:
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
                raise PcapError(err, f"{self._ifname}: poll: {_os.strerror(err)}")
            if rc == 0:
                return None
            if pfd.revents & pl.POLLERR:
                so.getsockopt(self.fd, so.SOL_SOCKET, so.SO_ERROR, &err, &elen)
                if err == _errno.ENETDOWN:
                    raise InterfaceDownError(err, f"{self._ifname}: capture: {_os.strerror(err)}")
                if err:
                    raise PcapError(err, f"{self._ifname}: capture: {_os.strerror(err)}")
            self._dispatch()
            if self.b.n == 0:
                return None
        self._batches += 1
        self._packets += self.b.n
        return self._buf[:self.b.used], self._recs[:self.b.n]

    def process_batches(self, classifier, int max_batches=64, int timeout_ms=100):
        """Feed up to ``max_batches`` batches to ``classifier.process(data, recs)``;
        returns (batches, packets, wire bytes) after ``max_batches`` or the first
        wait that times out."""
        cdef int batches = 0
        cdef uint64_t packets = 0, nbytes = 0
        while batches < max_batches:
            got = self.next_batch(timeout_ms if batches == 0 else 0)
            if got is None:
                break
            data, recs = got
            classifier.process(data, recs)
            packets += len(recs)
            nbytes += int(recs["wirelen"].sum(dtype=np.uint64))
            batches += 1
        return batches, packets, nbytes

    def stats(self):
        """libpcap's counters since open: ``packets`` (ps_recv: reached the filter,
        drops included on Linux), ``drops`` (ps_drop: no room in the buffer),
        ``ifdrops`` (ps_ifdrop: dropped by the interface), plus ``batches`` and
        ``walked`` packets handed out, and ``overflow`` (0; see _on_packet)."""
        cdef pc.pcap_stat st
        if self.p == NULL:
            raise ValueError("PcapSource is closed")
        memset(&st, 0, sizeof(st))
        if pc.pcap_stats(self.p, &st) < 0:
            raise PcapError(_errno.EIO, f"{self._ifname}: pcap_stats: {self._geterr()}")
        return {"packets": st.ps_recv, "drops": st.ps_drop, "ifdrops": st.ps_ifdrop,
                "batches": self._batches, "walked": self._packets, "overflow": self.b.overflow}

    def fileno(self):
        return self.fd

    @property
    def closed(self):
        return self.p == NULL

    @property
    def ifname(self):
        return self._ifname

    @property
    def linktype(self):
        return self.b.linktype

    @property
    def snaplen(self):
        return self._snaplen
