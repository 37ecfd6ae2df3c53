"""Capture files -> batches for the native core.

``open_capture(path_or_dash)`` reads classic pcap (microsecond and nanosecond
timestamps, either byte order, and the 24-byte-header "modified" variant) and pcapng
(any number of sections, each in its own byte order; several interfaces with their own
link type, ``if_tsresol`` and ``if_tsoffset``; enhanced, simple and obsolete packet
blocks; every other block skipped by its length), plain or gzip-compressed (detected
by its magic, not its name), from a file or from standard input (``-``), so
``tcpdump -w - | nkstream decode -`` works.

It yields ``Batch(data, recs)``: ``recs`` is a ``REC_DTYPE`` array filled by the
native walker (``nkstream._core.RecordWalker``) in one call per batch, and ``data``
the bytes the records point into (``recs['off']`` is relative to ``data``).  No Python
object is made per packet.

Two ways of reading, chosen per file:
- a regular uncompressed file is mmap'd; each batch's ``data`` is a zero-copy view of
  the mapping.  Memory: the page cache, plus one ``batch_packets`` * 32-byte record
  array per batch.
- a pipe, a gzip stream, anything that cannot be mapped, or any file with
  ``use_mmap=False`` is read in chunks (``chunk_size``, 8 MiB by default); a record cut
  by a chunk boundary is carried into the next chunk.  A chunk is reused only once no
  batch refers to it, so batches handed out earlier stay valid.  Memory: the chunks
  the caller still holds plus at most four others, each ``chunk_size`` (or one record
  or pcapng block, if larger: at most 16 MiB), plus the record array.

Damage policy (the same for both ways of reading, and independent of where chunk
boundaries fall):
- every good packet before the damage is yielded first;
- then a damaged file raises ``CaptureError(path, offset, message)`` whose text is
  ``PATH: offset N: what was wrong`` -- bad magic, an unsupported version, a pcapng
  block length that is not a multiple of 4, too short or inconsistent with its
  trailing copy, a record length over 256 KiB (262144, libpcap's maximum snap length)
  or longer than its block, a packet referring to an undefined interface, or a record
  whose length runs beyond the end of the file when that length cannot be right (a
  pcap caplen above the snap length or the wire length; a pcapng block far larger than
  its packet);
- a *truncated last record* -- the file ends inside a record whose header is
  self-consistent, as when a capture is cut while being written -- is not an error:
  iteration ends normally, the packets before it are kept, and a message of the same
  form is appended to ``capture.warnings`` (the CLI prints it on stderr).
"""
import io
import mmap
import os
import stat
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import numpy as np

from . import _core

REC_DTYPE = _core.REC_DTYPE
_W = _core.WALK_STATUS
_STATUS_NAMES = {v: k for k, v in _W.items()}

# Small enough that a batch's frames (16,384 x ~500 B = 8 MiB) and its record array
# (512 KiB) are still in cache when the classifier goes over them right after the
# walk: the per-packet path ran 3-4 ns faster than with 65,536-packet batches on the
# 10M-packet benchmark capture (docs/benchmarks.md), and the Python work per batch
# stays below 0.1 ns a packet.
DEFAULT_BATCH_PACKETS = 16384
DEFAULT_CHUNK_SIZE = 8 << 20
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)   # linux/mman.h
_POPULATE_WINDOW = 32 << 20
_POPULATE_AHEAD = 96 << 20      # > the bytes of one batch of 65536 full-size frames (4x the default batch)

# First four bytes of the file -> (big-endian, nanosecond, record header length).
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, False, 16),
    b"\xa1\xb2\xc3\xd4": (True, False, 16),
    b"\x4d\x3c\xb2\xa1": (False, True, 16),
    b"\xa1\xb2\x3c\x4d": (True, True, 16),
    # Alexey Kuznetzov's "modified" pcap: 8 more bytes per record header
    # (ifindex, protocol, pkt_type, pad), microsecond timestamps.
    b"\x34\xcd\xb2\xa1": (False, False, 24),
    b"\xa1\xb2\xcd\x34": (True, False, 24),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_GZIP_MAGIC = b"\x1f\x8b"


class CaptureError(Exception):
    """A damaged or unreadable capture: names the file and the byte offset.

    ``kind`` names the damage for programs (a key of ``nkstream._core.WALK_STATUS``
    such as ``caplen_too_big``, or ``bad_file_magic``, ``pcap_version``, ``empty``,
    ``short_header``, ``gzip``, ``open``)."""

    def __init__(self, path, offset, message, kind=None):
        super().__init__(path, offset, message)
        self.path = path
        self.offset = offset
        self.message = message
        self.kind = kind

    def __str__(self):
        if self.offset is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}: offset {self.offset}: {self.message}"


class CaptureWarning(CaptureError):
    """A condition reported without stopping: a truncated last record (the packets
    before it are kept).  Collected in ``Capture.warnings``; ``str()`` has the same
    ``PATH: offset N: message`` form as CaptureError."""


class Batch(NamedTuple):
    """``data``: a uint8 numpy array; ``recs``: REC_DTYPE records indexing into it."""
    data: np.ndarray
    recs: np.ndarray


@dataclass
class CaptureStats:
    packets: int = 0        # records read
    bytes: int = 0          # sum of on-wire lengths (what capinfos counts)
    caplen_bytes: int = 0   # sum of captured lengths


def _describe(status, w, fmt):
    """Message for a walker status (WERR_* or WALK_TRUNCATED)."""
    v, v2 = w.err_val, w.err_val2
    unit = "block" if fmt == "pcapng" else "record"
    if status == _W["truncated"]:
        if v:
            return f"truncated last {unit}: length {v} but only {v2} bytes left in the file"
        return f"truncated last {unit}: only {v2} bytes left in the file"
    if status == _W["bad_magic"]:
        return f"bad pcapng byte-order magic 0x{v:08x} in section header"
    if status == _W["version"]:
        return f"unsupported pcapng major version {v}"
    if status == _W["block_align"]:
        return f"block length {v} is not a multiple of 4"
    if status == _W["block_short"]:
        return f"block length {v} is shorter than the minimum {v2} for its type"
    if status == _W["block_trailer"]:
        return f"block length {v} does not match its trailing length {v2}"
    if status == _W["block_too_big"]:
        return f"block length {v} exceeds {_core.MAX_PCAPNG_BLOCK >> 20} MiB"
    if status == _W["caplen_too_big"]:
        return f"record length {v} exceeds 256 KiB"
    if status == _W["caplen_block"]:
        return f"record length {v} exceeds its block ({v2} bytes of data space)"
    if status == _W["beyond_eof"]:
        return f"{unit} length {v} runs beyond the end of the file ({v2} bytes left)"
    if status == _W["bad_iface"]:
        if v2 == 0:
            return f"packet refers to interface {v} but no interface is defined in this section"
        return f"packet refers to undefined interface {v} (section defines {v2})"
    if status == _W["too_many_ifaces"]:
        return "more than 65535 interfaces"
    if status == _W["nomem"]:
        return "out of memory for interface table"
    if status == _W["tsresol"]:
        return f"unsupported if_tsresol 0x{v:02x}"
    if status == _W["option"]:
        return f"interface option {v} runs past the end of its block"
    if status == _W["not_shb"]:
        return f"pcapng data does not start with a section header (block type 0x{v:08x})"
    return f"reader status {status}"


class _GzipStream:
    """Streaming gzip decompression (all members of a multi-member file) with
    ``readinto``; the raw stream is read in 1 MiB pieces."""

    def __init__(self, raw, prefix=b""):
        self.raw = raw
        self.pending = prefix          # compressed bytes not yet fed
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.member_started = False
        self.eof = False
        self.cut = False               # input ended inside a member
        self.consumed = 0              # compressed bytes fed

    def readinto(self, mv):
        n = 0
        total = len(mv)
        while n < total and not self.eof:
            src = self.d.unconsumed_tail
            if not src:
                src = self.pending or self.raw.read(1 << 20)
                self.pending = b""
                if not src:
                    if self.member_started and not self.d.eof:
                        self.cut = True
                    self.eof = True
                    break
                self.consumed += len(src)
            self.member_started = True
            out = self.d.decompress(src, total - n)
            mv[n:n + len(out)] = out
            n += len(out)
            if self.d.eof:
                rest = self.d.unused_data
                self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.member_started = False
                # Trailing zero padding after the last member (some tools write it).
                if rest.strip(b"\0"):
                    self.pending = rest
        return n


class Capture:
    """An open capture; iterate it once for its batches (see the module docstring)."""

    def __init__(self, path, batch_packets=DEFAULT_BATCH_PACKETS, chunk_size=DEFAULT_CHUNK_SIZE,
                 use_mmap=True):
        if batch_packets < 1:
            raise ValueError("batch_packets must be at least 1")
        self.path = "<stdin>" if path == "-" else os.fspath(path)
        self.batch_packets = int(batch_packets)
        self.use_mmap = bool(use_mmap)
        # (tiny chunks are allowed so tests can put chunk boundaries anywhere)
        self.chunk_size = max(int(chunk_size), 64)
        self.format: Optional[str] = None
        self.compressed = False
        self.linktypes: List[int] = []     # link type of each interface, in definition order
        self.interfaces: List[dict] = []
        self.warnings: List[CaptureWarning] = []
        self._walker = _core.RecordWalker()
        self._file = None
        self._owns_file = False
        self._mm = None
        self._stream = None
        self._prefix = b""
        self._first = None
        self._pop_to = 0
        self._recs_pool = []
        self.fcs_bits = None
        self._iterated = False
        self._closed = False
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------
    def _open(self, path):
        if path == "-":
            self._file = sys.stdin.buffer
            raw = self._file
            regular = False
        else:
            try:
                self._file = open(path, "rb", buffering=0)
            except OSError as exc:
                raise CaptureError(self.path, None, exc.strerror or str(exc), "open") from None
            self._owns_file = True
            raw = self._file
            try:
                regular = stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)
            except (OSError, io.UnsupportedOperation):
                regular = False
        head = self._read_some(raw, 4)
        if head[:2] == _GZIP_MAGIC:
            self.compressed = True
            self._stream = _GzipStream(raw, head)
            self._begin_stream()
            return
        if regular and head and self.use_mmap:
            size = os.fstat(self._file.fileno()).st_size
            try:
                self._mm = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self._mm = None
            if self._mm is not None:
                if hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                    try:
                        self._mm.madvise(mmap.MADV_SEQUENTIAL)
                    except OSError:
                        pass
                buf = np.frombuffer(self._mm, dtype=np.uint8)
                self._first = (buf, len(buf), True, self._start(buf, len(buf)))
                return
        self._stream = raw
        self._prefix = head
        self._begin_stream()

    def _begin_stream(self):
        buf = np.empty(self.chunk_size, dtype=np.uint8)
        end, eof = self._fill(buf, 0)
        self._first = (buf, end, eof, self._start(buf, end))

    @staticmethod
    def _read_some(raw, n):
        out = b""
        while len(out) < n:
            piece = raw.read(n - len(out))
            if not piece:
                break
            out += piece
        return out

    def _fill(self, buf, start):
        """Fill ``buf[start:]`` from the stream; returns (end, eof)."""
        mv = memoryview(buf)
        pos = start
        if self._prefix:
            k = min(len(self._prefix), len(buf) - pos)
            mv[pos:pos + k] = self._prefix[:k]
            self._prefix = self._prefix[k:]
            pos += k
        while pos < len(buf):
            try:
                got = self._stream.readinto(mv[pos:])
            except zlib.error as exc:
                raise CaptureError(self.path, None, f"gzip data error: {exc}", "gzip") from None
            if not got:
                return pos, True
            pos += got
        return pos, False

    # -- header --------------------------------------------------------------
    def _start(self, buf, end):
        """Parse the file header at the start of the first buffer; returns the
        position of the first record."""
        head = bytes(buf[:min(end, 24)])
        if end == 0:
            raise CaptureError(self.path, 0, "empty file: no pcap or pcapng header", "empty")
        magic = head[:4]
        if magic == _PCAPNG_MAGIC:
            self.format = "pcapng"
            self._walker.set_pcapng()
            return 0
        if magic in _PCAP_MAGICS:
            big, nsec, hdrlen = _PCAP_MAGICS[magic]
            if end < 24:
                raise CaptureError(self.path, 0, f"file too short for a pcap header ({end} of 24 bytes)",
                                   "short_header")
            major, minor, _zone, _sigfigs, snaplen, network = struct.unpack(
                (">" if big else "<") + "HHiIII", head[4:24])
            if major != 2:
                raise CaptureError(self.path, 4, f"unsupported pcap version {major}.{minor}",
                                   "pcap_version")
            # The link type is the low 16 bits; bits 16-31 carry FCS length information
            # (draft-ietf-opsawg-pcap "LinkType and additional information").
            linktype = network & 0xFFFF
            self.format = "pcap"
            self._walker.set_pcap(big, nsec, hdrlen, linktype, snaplen)
            self.linktypes = [linktype]
            self.interfaces = [dict(self._walker.interface(0))]
            self.fcs_bits = (network >> 28) * 16 if network & 0x04000000 else None
            return 24
        if magic[:2] == _GZIP_MAGIC and self.compressed:
            raise CaptureError(self.path, 0, "gzip stream contains another gzip stream",
                               "bad_file_magic")
        raise CaptureError(self.path, 0,
                           f"bad magic 0x{magic.hex()}: not a pcap or pcapng file", "bad_file_magic")

    # -- iteration -----------------------------------------------------------
    def __iter__(self):
        return self.processed(None)

    def processed(self, core):
        """Iterate as ``iter(capture)`` does, every batch already counted by `core` (a
        native ``nkstream._core.Classifier``, as ``core.process(batch.data,
        batch.recs)`` would count it; do not process the batches again).  For a
        mapped file the classification runs inside the walk
        (``Classifier.walk_process``: each chunk of records is classified while its
        frames are still in cache); a stream is walked, then processed, batch by
        batch.  `core` None: the plain batches, which is what ``iter(capture)`` is."""
        if self._iterated:
            raise RuntimeError("a Capture can be iterated only once")
        self._iterated = True
        if self._closed:
            raise ValueError("capture is closed")
        if self._mm is not None:
            return self._iter_mmap(core)
        return self._iter_stream() if core is None else self._process_stream(core)

    def _process_stream(self, core):
        for batch in self._iter_stream():
            core.process(batch.data, batch.recs)
            yield batch

    def _harvest_interfaces(self):
        w = self._walker
        if self.format == "pcapng":
            while len(self.interfaces) < w.n_interfaces:
                info = w.interface(len(self.interfaces))
                self.interfaces.append(info)
                self.linktypes.append(info["linktype"])

    def _status(self, status, file_base):
        """After a walk that stopped for `status`: raise on damage, warn on truncation.
        Returns True when reading is over."""
        w = self._walker
        if status in (_W["full"], _W["end"], _W["more"]):
            return False
        msg = _describe(status, w, self.format)
        offset = file_base + w.err_off
        if status == _W["truncated"]:
            if getattr(self._stream, "cut", False):
                msg += " (gzip stream ended early)"
            msg += f"; the {w.packets} packets before it are kept"
            self.warnings.append(CaptureWarning(self.path, offset, msg, "truncated"))
            return True
        raise CaptureError(self.path, offset, msg, _STATUS_NAMES.get(status))

    def _recs_array(self):
        """A record array for the next batch: one of the last few whose batches the
        consumer has dropped (no view of it left), else a new one.  Saves a fresh
        2 MiB allocation (and its page faults) per batch in the usual loop; an array
        still referenced by a batch is never reused."""
        pool = self._recs_pool
        for i in range(len(pool)):
            if sys.getrefcount(pool[i]) <= 2:
                recs = pool.pop(i)
                break
        else:
            recs = np.empty(self.batch_packets, dtype=REC_DTYPE)
        pool.append(recs)
        if len(pool) > 4:
            del pool[0]
        return recs

    def _populate(self, pos, end):
        """Map the file's pages ahead of the walker in large windows
        (MADV_POPULATE_READ, Linux 5.14+): one system call per window instead of a page
        fault per 64 KiB fault-around region, and the walker's prefetches (which never
        fault) then find the pages mapped.  Only page-table entries are made; the pages
        are the page cache's.  Silently off where the kernel lacks it."""
        while self._pop_to < end and self._pop_to < pos + _POPULATE_AHEAD:
            length = min(_POPULATE_WINDOW, end - self._pop_to)
            try:
                self._mm.madvise(_MADV_POPULATE_READ, self._pop_to, length)
            except (OSError, ValueError):
                self._pop_to = end
                return
            self._pop_to += length

    def _iter_mmap(self, core=None):
        buf, end, _eof, pos = self._first
        self._first = None
        w = self._walker
        # the whole file, the same buffer for every walk: records may be walked
        # ahead of the batch (RecordWalker.chains)
        w.chains = True
        self._pop_to = 0
        while True:
            recs = self._recs_array()
            self._populate(pos, end)
            if core is None:
                n, status = w.walk(buf, pos, recs, pos, True)
            else:
                n, status = core.walk_process(w, buf, pos, recs, pos, True)
            self._harvest_interfaces()
            newpos = w.pos
            if n:
                yield Batch(buf[pos:newpos], recs[:n])
            pos = newpos
            if status == _W["full"]:
                continue
            if status == _W["end"] or self._status(status, 0):
                return

    def _iter_stream(self):
        w = self._walker
        chunk = self.chunk_size
        buf, end, eof, pos = self._first
        self._first = None
        retired = []
        file_base = 0          # file offset of buf[0]
        while True:
            status = _W["end"]
            while True:
                recs = self._recs_array()
                n, status = w.walk(buf[:end], pos, recs, pos, eof)
                self._harvest_interfaces()
                newpos = w.pos
                if n:
                    yield Batch(buf[pos:newpos], recs[:n])
                pos = newpos
                if status != _W["full"]:
                    break
            if self._status(status, file_base):
                return
            if eof:
                return
            # Carry the unread tail (a record cut by the chunk boundary) into a fresh
            # buffer: batches already handed out keep pointing at the old one.
            tail = end - pos
            size = max(chunk, tail + 1)
            if status == _W["more"]:
                size = max(size, int(w.need))
            # Reuse a retired chunk that no batch refers to any more (the consumer has
            # dropped every view of it: only `retired` and this loop hold it), saving the
            # page faults and zeroing of a fresh allocation; a chunk still referenced is
            # never written, so batches handed out stay valid.
            nbuf = None
            for i in range(len(retired)):
                if len(retired[i]) >= size and sys.getrefcount(retired[i]) <= 2:
                    nbuf = retired.pop(i)
                    break
            if nbuf is None:
                nbuf = np.empty(size, dtype=np.uint8)
            nbuf[:tail] = buf[pos:end]
            file_base += pos
            retired.append(buf)
            if len(retired) > 3:
                del retired[0]
            buf = nbuf
            pos = 0
            end, eof = self._fill(buf, tail)

    # -- bookkeeping ---------------------------------------------------------
    @property
    def stats(self):
        w = self._walker
        return CaptureStats(packets=int(w.packets), bytes=int(w.wirebytes),
                            caplen_bytes=int(w.capbytes))

    def close(self):
        self._closed = True
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                # Batches still reference the mapping; it is unmapped when they go.
                pass
            self._mm = None
        if self._owns_file and self._file is not None:
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<Capture {self.path!r} format={self.format} packets={self._walker.packets}>"


def open_capture(path, batch_packets=DEFAULT_BATCH_PACKETS, chunk_size=DEFAULT_CHUNK_SIZE,
                 use_mmap=True):
    """Open a pcap / pcapng file (optionally gzip-compressed), or ``'-'`` for stdin.

    Returns a :class:`Capture`: iterate it for :class:`Batch` objects; ``.format``,
    ``.linktypes``, ``.stats`` and ``.warnings`` describe what was read.  Raises
    :class:`CaptureError` for a file that cannot be opened or is damaged (after every
    good packet before the damage has been yielded).
    """
    return Capture(path, batch_packets=batch_packets, chunk_size=chunk_size, use_mmap=use_mmap)
