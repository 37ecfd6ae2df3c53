"""Labelled prefix tables: longest-prefix match for IPv4 and IPv6, and their loaders.

A :class:`PrefixTable` holds ``(prefix, label)`` pairs.  Labels are interned to small
integers (``labels[0]`` is None = no match); the native core looks addresses up by
the integer and the snapshot carries the names.

Structure (nkstream/core/lpm.pxi)
---------------------------------
A multibit trie with a direct-indexed first level and 8-bit strides below it, leaf
pushed, one uint32 per entry (a label id, or bit 31 + the index of a 256-entry group):

* IPv4 -- "DIR-16-8-8": a 65,536-entry first level (256 KiB) indexed by the top 16
  bits, then up to two levels of 256-entry groups (1 KiB each) for the next 8 + 8
  bits.  A lookup is 1-3 dependent loads; the first level stays in L2, so a lookup
  against the full routing table costs about one cache miss, the same as DPDK's
  DIR-24-8 (rte_lpm) whose 64 MiB tbl24 is itself one miss.  Unlike DIR-24-8 the
  memory scales with the table: a 3-prefix watch table costs 256 KiB + 3 KiB instead
  of 64 MiB, which matters because every worker looks each packet up in two tables.
  Only when the 16-bit build needs 65,536 or more groups (64 MiB, the size of a
  tbl24) is the table rebuilt with a 24-bit first level, which then needs far fewer
  groups and saves a dependent load.  ``PrefixCore(..., stride4=16|24)`` forces either.
* IPv6 -- the same trie with a 16-bit first level and 8-bit strides (up to 15 loads
  for a /128; 3-5 for the /32-/48 prefixes that make up the routing table).

Memory = 4 bytes x (2^S + 256 x groups); groups = number of distinct (/S+8k)-aligned
blocks that contain a prefix longer than that block's level.  Measured:

======================================  =========  =======  ========
table                                    prefixes   groups    memory
======================================  =========  =======  ========
shipped watch table, IPv4                       3        3  0.25 MiB
service-prefixes-2024-10, IPv4             19,201    4,472  4.62 MiB
service-prefixes-2024-10, IPv6             12,677   12,391  12.4 MiB
APNIC delegated 2024-11-09, IPv4           51,925    2,138  2.34 MiB
full 2014 routing table, IPv4 (S=16)      512,621   22,305  22.0 MiB
same, forced S=24                         512,621    1,982  65.9 MiB
2015 routing table, IPv4 (S=16)           606,138   26,473  26.1 MiB
2015 routing table, IPv6                   27,693   12,434  12.4 MiB
200k IPv6 (2015 + synthetic)              200,000  ~92,000  90.8 MiB
1M IPv4 (2015 + synthetic, S=24)        1,000,000   12,704  76.4 MiB
======================================  =========  =======  ========

An empty family costs its first level only (256 KiB).  The worst case is many long
prefixes scattered over distinct /24s (or, in IPv6, distinct /40s ...): each costs up
to one group per level below the first, 1 KiB each, like rte_lpm's tbl8 groups.

(docs/prefix-tables.md has the full table and how it was measured.)

Build: prefixes are deduplicated with numpy (the later entry wins), then the C build
applies them in order of increasing length (a stable counting sort), so every write
of a longer prefix overwrites a shorter one; 1M prefixes build in well under a second.

Merge policy
------------
Longest prefix wins at lookup time.  The same prefix added twice keeps the label of
the *later* add (``add``, ``load`` or ``update`` in call order; within a file, the
later line).  Several sources therefore merge into one table by loading them in order
of increasing priority.

Loaders
-------
``PrefixTable.load(path, format=None, **opts)`` called on the class returns a new
table; called on a table (``table.load(path)``, or its explicit spelling
``table.load_into(path)``) it merges the file into that table and returns it;
``table.update(other)`` merges another table.  Formats (sniffed when not given; gzip is recognised by its magic bytes):

``csv``    ``cidr,label`` or ``cidr label``; ``#`` comments; an address without /len is
           a /32 or /128.  ``label=`` gives the label for rows that have none.
``rir``    RIR delegated-stats (``registry|cc|type|start|value|date|status[|...]``);
           IPv4 ``value`` is a count of addresses (turned into the minimal CIDR set),
           IPv6 ``value`` a prefix length; label = country code.  Options
           ``statuses=('allocated', 'assigned')``, ``registries=None``, ``countries=None``.
``ipasn``  pyasn IPASN (``prefix<TAB>asn``, ``;`` comments), label ``AS<n>``; with
           ``asnames=PATH`` (pyasn's asnames.json[.gz]) label by the AS handle (see
           :func:`as_short_name`).
``tor``    Tor exit lists: ``ExitAddress a.b.c.d ...`` lines of the bulk list with
           descriptors, or bare addresses one per line; label ``tor`` (``label=``).
``mmdb``   MaxMind DB (GeoLite2/GeoIP2 Country, ASN) via the ``maxminddb`` package;
           label by country ISO code or AS organisation (``label_by='country' |
           'asn_org' | 'asn'``, default from the database type).

A bad row raises :class:`PrefixFileError` (a ValueError) whose message is one line,
``FILE:LINE: what was wrong``.
"""
import bisect
import gzip
import io
import ipaddress
import json
import os
import re
import socket

import numpy as np

__all__ = [
    "PrefixTable", "PrefixFileError", "FORMATS", "default_watch", "default_peers",
    "as_short_name", "range_to_cidrs", "parse_prefix", "parse_address",
]

FORMATS = ("csv", "rir", "ipasn", "tor", "mmdb")
_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_MMDB_MARKER = b"\xab\xcd\xefMaxMind.com"


class PrefixFileError(ValueError):
    """A prefix file that cannot be loaded; str() is ``FILE:LINE: what was wrong``."""

    def __init__(self, path, line, message):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- parsing

def _is_uint(s):
    """ASCII decimal digits only (str.isdigit also accepts '²' and other scripts)."""
    return s.isascii() and s.isdigit()


def parse_address(text):
    """(version, integer) for an IPv4 or IPv6 address in text; ValueError if not one."""
    if not isinstance(text, str):
        if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return text.version, int(text)
        raise TypeError(f"expected an address string, got {type(text).__name__}")
    if ":" in text:
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except OSError:
            pass
    else:
        try:
            # inet_pton, unlike inet_aton, accepts only the dotted quad.
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        except OSError:
            pass
    raise ValueError(f"not an IP address: {text!r}")


def parse_prefix(text):
    """(version, network integer, length) for 'a.b.c.d/len', 'x::/len' or a bare address
    (a /32 or /128).  Host bits set below the length are an error, as in ipaddress."""
    addr, sep, plen = text.partition("/")
    ver, net = parse_address(addr.strip())
    bits = 32 if ver == 4 else 128
    if sep:
        plen = plen.strip()
        if not _is_uint(plen) or len(plen) > 3:
            raise ValueError(f"bad prefix length in {text!r}")
        ln = int(plen)
        if ln > bits:
            raise ValueError(f"prefix length /{ln} is longer than /{bits} in {text!r}")
    else:
        ln = bits
    if net & ((1 << (bits - ln)) - 1):
        raise ValueError(f"host bits set in {text!r}")
    return ver, net, ln


def range_to_cidrs(first, last, bits=32):
    """Minimal list of (network, length) covering [first, last] (inclusive integers):
    repeatedly take the largest aligned block starting at `first` that fits."""
    if first > last or first < 0 or last >= (1 << bits):
        raise ValueError("bad address range")
    out = []
    while first <= last:
        # largest power of two that divides first (alignment) and fits the remainder
        size = (first & -first) if first else (1 << bits)
        while size > last - first + 1:
            size >>= 1
        ln = bits - (size.bit_length() - 1)
        out.append((first, ln))
        first += size
    return out


def as_short_name(asn, desc):
    """The label an analyst recognises for an AS: its handle, the first word of the
    pyasn asnames description ('GOOGLE - Google Inc., US' -> 'GOOGLE',
    'CNNIC-TENCENT-NET-AP Shenzhen Tencent ..., CN' -> 'CNNIC-TENCENT-NET-AP').  The
    handle is what whois, bgp.he.net and looking glasses show next to the number.
    Reserved or unnamed ASes ('-Reserved AS-, ZZ', empty) fall back to 'AS<n>'."""
    if desc:
        word = desc.strip().split(None, 1)[0].rstrip(",") if desc.strip() else ""
        if word and not word.startswith("-"):
            return word
    return f"AS{asn}"


# --------------------------------------------------------------------------- the table

class _HybridMethod:
    """`PrefixTable.load(...)` builds a new table; `table.load(...)` merges into it."""

    def __init__(self, func):
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj, cls):
        func = self.func
        if obj is None:
            def bound(*args, **kwargs):
                return func(cls(), *args, **kwargs)
        else:
            def bound(*args, **kwargs):
                return func(obj, *args, **kwargs)
        bound.__doc__ = func.__doc__
        bound.__name__ = func.__name__
        return bound


class PrefixTable:
    """IPv4 + IPv6 labelled prefixes with longest-prefix match (module docstring)."""

    def __init__(self, name=None):
        self.name = name
        self._labels = [None]
        self._label_ids = {}
        # Chunks of (nets, lens, ids) numpy arrays in add order; rows added one by one
        # wait in the pending lists.  _compact() merges them (later wins).
        self._chunks4 = []
        self._chunks6 = []
        self._pend4 = ([], [], [])
        self._pend6 = ([], [], [])
        self._compact4 = self._compact6 = True  # chunks hold one row per prefix
        self._core = None
        self._index = None

    # ---- labels
    @property
    def labels(self):
        """Label names by id; labels[0] is None (no match)."""
        return tuple(self._labels)

    def label_id(self, name):
        """The id of label `name`, interning it if new (ids are stable)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a label is a non-empty string, got {name!r}")
        i = self._label_ids.get(name)
        if i is None:
            i = len(self._labels)
            if i > 0x7FFFFFFF:
                raise ValueError("too many labels")
            self._labels.append(name)
            self._label_ids[name] = i
            self._core = None  # core.labels would be stale
        return i

    # ---- adding
    def add(self, cidr, label):
        """Add one prefix ('10.0.0.0/8', '2001:db8::/32', or an address = /32, /128)."""
        if isinstance(cidr, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            ver, net, ln = cidr.version, int(cidr.network_address), cidr.prefixlen
        else:
            ver, net, ln = parse_prefix(cidr)
        self._add_int(ver, net, ln, self.label_id(label))
        return self

    def _add_int(self, ver, net, ln, lid):
        p = self._pend4 if ver == 4 else self._pend6
        p[0].append(net)
        p[1].append(ln)
        p[2].append(lid)
        self._core = None
        self._index = None

    def _add_arrays4(self, nets, lens, ids):
        self._flush()
        self._chunks4.append((np.asarray(nets, np.uint32), np.asarray(lens, np.uint8),
                              np.asarray(ids, np.uint32)))
        self._compact4 = False
        self._core = None
        self._index = None

    def _add_arrays6(self, nets16, lens, ids):
        self._flush()
        self._chunks6.append((np.asarray(nets16, np.uint8).reshape(-1, 16),
                              np.asarray(lens, np.uint8), np.asarray(ids, np.uint32)))
        self._compact6 = False
        self._core = None
        self._index = None

    def update(self, other):
        """Merge another PrefixTable into this one (its entries win on equal prefixes)."""
        remap = np.zeros(len(other._labels), np.uint32)
        for i, name in enumerate(other._labels[1:], 1):
            remap[i] = self.label_id(name)
        n4, l4, i4, n6, l6, i6 = other._arrays()
        self._add_arrays4(n4, l4, remap[i4])
        self._add_arrays6(n6, l6, remap[i6])
        return self

    def _flush(self):
        if self._pend4[0]:
            n, l, i = self._pend4
            self._chunks4.append((np.array(n, np.uint32), np.array(l, np.uint8), np.array(i, np.uint32)))
            self._pend4 = ([], [], [])
            self._compact4 = False
        if self._pend6[0]:
            n, l, i = self._pend6
            nets = np.frombuffer(b"".join(x.to_bytes(16, "big") for x in n), np.uint8).reshape(-1, 16)
            self._chunks6.append((nets, np.array(l, np.uint8), np.array(i, np.uint32)))
            self._pend6 = ([], [], [])
            self._compact6 = False

    def _compact(self):
        """Merge all chunks into one per family, one row per prefix, the later row of
        equal prefixes winning, sorted by (network, length)."""
        self._flush()
        if self._chunks4 and not self._compact4:
            nets = np.concatenate([c[0] for c in self._chunks4])
            lens = np.concatenate([c[1] for c in self._chunks4])
            ids = np.concatenate([c[2] for c in self._chunks4])
            key = (nets.astype(np.uint64) << np.uint64(8)) | lens.astype(np.uint64)
            # np.unique keeps the first occurrence: look at the rows reversed so the
            # first seen is the last added.
            _, first = np.unique(key[::-1], return_index=True)
            keep = len(key) - 1 - first
            self._chunks4 = [(nets[keep].copy(), lens[keep].copy(), ids[keep].copy())]
        self._compact4 = True
        if self._chunks6 and not self._compact6:
            nets = np.concatenate([c[0] for c in self._chunks6])
            lens = np.concatenate([c[1] for c in self._chunks6])
            ids = np.concatenate([c[2] for c in self._chunks6])
            be = nets.view(">u8")
            hi, lo = be[:, 0], be[:, 1]
            n = len(lens)
            later_first = np.arange(n - 1, -1, -1)
            order = np.lexsort((later_first, lens, lo, hi))
            h, l_, ln = hi[order], lo[order], lens[order]
            first = np.ones(n, bool)
            first[1:] = (h[1:] != h[:-1]) | (l_[1:] != l_[:-1]) | (ln[1:] != ln[:-1])
            keep = order[first]
            self._chunks6 = [(nets[keep].copy(), lens[keep].copy(), ids[keep].copy())]
        self._compact6 = True

    def _arrays(self):
        self._compact()
        if self._chunks4:
            n4, l4, i4 = self._chunks4[0]
        else:
            n4, l4, i4 = np.zeros(0, np.uint32), np.zeros(0, np.uint8), np.zeros(0, np.uint32)
        if self._chunks6:
            n6, l6, i6 = self._chunks6[0]
        else:
            n6, l6, i6 = np.zeros((0, 16), np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.uint32)
        return n4, l4, i4, n6, l6, i6

    # ---- the built core
    @property
    def core(self):
        """The built native tables (nkstream._core.PrefixCore), rebuilt lazily after
        any change.  The pipeline reads ``core.v4`` / ``core.v6`` (lpm4_t* / lpm6_t*)."""
        if self._core is None:
            from ._core import PrefixCore

            n4, l4, i4, n6, l6, i6 = self._arrays()
            self._core = PrefixCore(n4, l4, i4, np.ascontiguousarray(n6), l6, i6,
                                    labels=self._labels)
        return self._core

    def __len__(self):
        n4, _, _, n6, _, _ = self._arrays()
        return len(n4) + len(n6)

    def __getstate__(self):
        # The native core is not picklable; workers started with 'spawn' rebuild it.
        self._compact()
        state = dict(self.__dict__)
        state["_core"] = None
        state["_index"] = None
        return state

    def __repr__(self):
        n4, _, _, n6, _, _ = self._arrays()
        name = f" {self.name!r}" if self.name else ""
        return f"<PrefixTable{name}: {len(n4)} IPv4 + {len(n6)} IPv6 prefixes, {len(self._labels) - 1} labels>"

    def prefixes(self):
        """Iterate (cidr text, label) in address order (IPv4 first)."""
        n4, l4, i4, n6, l6, i6 = self._arrays()
        for net, ln, lid in zip(n4.tolist(), l4.tolist(), i4.tolist()):
            yield f"{socket.inet_ntop(socket.AF_INET, net.to_bytes(4, 'big'))}/{ln}", self._labels[lid]
        for k in range(len(l6)):
            yield f"{socket.inet_ntop(socket.AF_INET6, n6[k].tobytes())}/{int(l6[k])}", self._labels[int(i6[k])]

    # ---- lookups
    def lookup(self, addr):
        """The label of the longest prefix containing `addr` (text or ipaddress), or None."""
        ver, a = parse_address(addr)
        core = self.core
        lid = core.lookup_v4(a) if ver == 4 else core.lookup_v6(a.to_bytes(16, "big"))
        return self._labels[lid] if lid else None

    def match(self, addr):
        """(label, matched prefix as text) for `addr`, or None."""
        ver, a = parse_address(addr)
        if self._index is None:
            self._index = self._build_index()
        bits = 32 if ver == 4 else 128
        for ln, nets, ids in self._index[ver]:
            key = (a >> (bits - ln)) << (bits - ln) if ln else 0
            k = bisect.bisect_left(nets, key)
            if k < len(nets) and nets[k] == key:
                text = str(ipaddress.IPv6Address(key) if ver == 6 else ipaddress.IPv4Address(key))
                return self._labels[ids[k]], f"{text}/{ln}"
        return None

    def _build_index(self):
        """Per family, per length (longest first): sorted network integers and ids."""
        n4, l4, i4, n6, l6, i6 = self._arrays()
        idx = {4: [], 6: []}
        for ln in sorted(set(l4.tolist()), reverse=True):
            m = l4 == ln
            order = np.argsort(n4[m], kind="stable")
            idx[4].append((ln, n4[m][order].tolist(), i4[m][order].tolist()))
        nets6 = [int.from_bytes(r.tobytes(), "big") for r in n6]
        by_len = {}
        for net, ln, lid in zip(nets6, l6.tolist(), i6.tolist()):
            by_len.setdefault(ln, []).append((net, lid))
        for ln in sorted(by_len, reverse=True):
            rows = sorted(by_len[ln])
            idx[6].append((ln, [r[0] for r in rows], [r[1] for r in rows]))
        return idx

    def lookup_many(self, addrs):
        """Label ids (numpy uint32, 0 = no match) for a uint32 array of IPv4 addresses
        in host order, or an (N, 16) uint8 array of IPv6 addresses.  Runs without the GIL."""
        a = np.asarray(addrs)
        if a.ndim == 1 and a.dtype == np.uint32:
            return self.core.lookup_many_v4(np.ascontiguousarray(a))
        if a.ndim == 2 and a.shape[1] == 16 and a.dtype == np.uint8:
            return self.core.lookup_many_v6(np.ascontiguousarray(a))
        raise TypeError("lookup_many takes a uint32 array (IPv4, host order) or an (N, 16) uint8 array (IPv6)")

    # ---- loading
    @_HybridMethod
    def load(self, path, format=None, **opts):
        """Load a prefix file into this table (``table.load``) or into a new one
        (``PrefixTable.load``); returns the table.  See the module docstring."""
        path = os.fspath(path)
        fmt = format or sniff_format(path)
        if fmt not in _LOADERS:
            raise ValueError(f"unknown prefix file format {fmt!r} (one of {', '.join(FORMATS)})")
        _LOADERS[fmt](self, path, **opts)
        return self


    def load_into(self, path, format=None, **opts):
        """Merge a prefix file into this table (same as ``table.load(...)``)."""
        return self.load(path, format=format, **opts)


# --------------------------------------------------------------------------- files

def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_text(path):
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def sniff_format(path):
    """Guess a file's format from its first meaningful lines (mmdb by its marker)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not _is_gzip(path):
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 128 * 1024))
            if _MMDB_MARKER in f.read():
                return "mmdb"
    lines = []
    try:
        with _open_text(path) as f:
            for line in f:
                s = line.strip()
                if not s or s.startswith("#"):
                    continue
                lines.append(s)
                if len(lines) >= 20:
                    break
    except (OSError, EOFError) as exc:
        raise PrefixFileError(path, None, f"cannot read: {exc}") from None
    if not lines:
        return "csv"
    first = lines[0]
    if first.startswith(";") or all("\t" in s and s.split("\t")[-1].strip().isdigit() for s in lines[:5]):
        return "ipasn"
    if "|" in first:
        return "rir"
    if first.split()[0] in ("ExitNode", "ExitAddress", "Published", "LastStatus"):
        return "tor"
    base = os.path.basename(path).lower()
    if all(len(s.replace(",", " ").split()) == 1 for s in lines) and re.search(r"(^|[^a-z])(tor|exit)", base):
        return "tor"
    return "csv"


class _RowAdder:
    """Collects parsed rows into arrays (fast) and interns labels."""

    def __init__(self, table, path):
        self.table = table
        self.path = path
        self.n4, self.l4, self.i4 = [], [], []
        self.n6, self.l6, self.i6 = [], [], []
        self._lid = {}

    def lid(self, label):
        i = self._lid.get(label)
        if i is None:
            i = self._lid[label] = self.table.label_id(label)
        return i

    def add(self, ver, net, ln, label):
        lid = self.lid(label)
        if ver == 4:
            self.n4.append(net); self.l4.append(ln); self.i4.append(lid)
        else:
            self.n6.append(net); self.l6.append(ln); self.i6.append(lid)

    def error(self, lineno, msg):
        return PrefixFileError(self.path, lineno, msg)

    def finish(self):
        t = self.table
        if self.n4:
            t._add_arrays4(np.array(self.n4, np.uint32), np.array(self.l4, np.uint8), np.array(self.i4, np.uint32))
        if self.n6:
            nets = np.frombuffer(b"".join(x.to_bytes(16, "big") for x in self.n6), np.uint8).reshape(-1, 16)
            t._add_arrays6(nets, np.array(self.l6, np.uint8), np.array(self.i6, np.uint32))


def _lines(path):
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise PrefixFileError(path, None, f"cannot read: {exc}") from None


_CSV_HEADERS = {"cidr", "prefix", "network", "net", "address", "addr", "ip"}


def _load_csv(table, path, label=None):
    """`cidr,label` or `cidr label` rows; `#` comments (whole line or trailing); a
    first row naming the columns (`cidr,label`, `prefix,label` ...) is skipped."""
    rows = _RowAdder(table, path)
    first = True
    for lineno, line in _lines(path):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        if "," in s:
            parts = [p.strip() for p in s.split(",")]
        else:
            parts = s.split()
        if first:
            first = False
            if parts[0].lower() in _CSV_HEADERS:
                continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            raise rows.error(lineno, f"expected 'cidr,label', got {s!r}")
        lab = parts[1] if len(parts) == 2 else label
        if not lab:
            raise rows.error(lineno, f"no label for {parts[0]!r} (expected 'cidr,label')")
        try:
            ver, net, ln = parse_prefix(parts[0])
        except ValueError as exc:
            raise rows.error(lineno, str(exc)) from None
        rows.add(ver, net, ln, lab)
    rows.finish()


def _load_rir(table, path, statuses=("allocated", "assigned"), registries=None, countries=None):
    """RIR delegated-stats (https://www.apnic.net/about-apnic/corporate-documents/documents/
    resource-guidelines/rir-statistics-exchange-format/): version line, summary lines,
    then `registry|cc|type|start|value|date|status[|opaque-id|extensions]`."""
    statuses = None if statuses is None else {s.lower() for s in statuses}
    registries = None if registries is None else {r.lower() for r in registries}
    countries = None if countries is None else {c.upper() for c in countries}
    rows = _RowAdder(table, path)
    for lineno, line in _lines(path):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        f = s.split("|")
        if _is_uint(f[0].replace(".", "")):
            continue  # version line: version|registry|serial|records|startdate|enddate|UTCoffset
        if len(f) >= 6 and f[1] == "*" and f[5] == "summary":
            continue  # summary line: registry|*|type|*|count|summary
        if len(f) < 7:
            raise rows.error(lineno, f"expected 'registry|cc|type|start|value|date|status', got {s!r}")
        reg, cc, typ, start, value, _date, status = f[:7]
        typ = typ.lower()
        if typ not in ("ipv4", "ipv6"):
            if typ == "asn":
                continue
            raise rows.error(lineno, f"unknown record type {typ!r}")
        if statuses is not None and status.lower() not in statuses:
            continue
        if registries is not None and reg.lower() not in registries:
            continue
        cc = cc.upper()
        if countries is not None and cc not in countries:
            continue
        if not _is_uint(value):
            raise rows.error(lineno, f"bad value {value!r} (an address count for ipv4, a prefix length for ipv6)")
        try:
            ver, net = parse_address(start)
        except ValueError as exc:
            raise rows.error(lineno, str(exc)) from None
        if ver != (4 if typ == "ipv4" else 6):
            raise rows.error(lineno, f"{start!r} is not an {typ} address")
        if not cc or cc == "*":
            continue  # unlabelled (reserved/available space in extended files)
        v = int(value)
        if ver == 4:
            if v == 0 or net + v > 1 << 32:
                raise rows.error(lineno, f"address count {v} from {start} leaves the IPv4 space")
            for n, ln in range_to_cidrs(net, net + v - 1, 32):
                rows.add(4, n, ln, cc)
        else:
            if v > 128:
                raise rows.error(lineno, f"IPv6 prefix length {v} > 128")
            if net & ((1 << (128 - v)) - 1):
                raise rows.error(lineno, f"host bits set in {start}/{v}")
            rows.add(6, net, v, cc)
    rows.finish()


def _load_asnames(path):
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as f:
                data = json.load(f)
        else:
            with open(path, "rb") as f:
                data = json.load(f)
    except (ValueError, OSError, EOFError) as exc:
        raise PrefixFileError(path, None, f"not an asnames JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise PrefixFileError(path, None, "not an asnames JSON object (ASN -> name)")
    return data


def _load_ipasn(table, path, asnames=None):
    """pyasn IPASN: `prefix<TAB>asn` lines, `;` comments."""
    names = _load_asnames(asnames) if asnames else None
    rows = _RowAdder(table, path)
    labels = {}
    inet_pton = socket.inet_pton
    for lineno, line in _lines(path):
        if not line.strip() or line.startswith(";"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise rows.error(lineno, f"expected 'prefix<TAB>asn', got {line.strip()!r}")
        pfx, asn = parts
        if not _is_uint(asn):
            raise rows.error(lineno, f"bad ASN {asn!r}")
        addr, sep, plen = pfx.partition("/")
        # Fast path for the common IPv4 row; the general parser for everything else.
        try:
            if sep and ":" not in addr and _is_uint(plen) and int(plen) <= 32:
                net = int.from_bytes(inet_pton(socket.AF_INET, addr), "big")
                ln = int(plen)
                if net & ((1 << (32 - ln)) - 1):
                    raise ValueError(f"host bits set in {pfx!r}")
                ver = 4
            else:
                ver, net, ln = parse_prefix(pfx)
        except (OSError, ValueError) as exc:
            msg = str(exc) if isinstance(exc, ValueError) else f"not an IP prefix: {pfx!r}"
            raise rows.error(lineno, msg) from None
        lab = labels.get(asn)
        if lab is None:
            n = int(asn)
            lab = labels[asn] = as_short_name(n, names.get(str(n))) if names is not None else f"AS{n}"
        rows.add(ver, net, ln, lab)
    rows.finish()


def _load_tor(table, path, label="tor"):
    """Tor exit lists: the bulk exit list with descriptors (`ExitNode FP`, `Published`,
    `LastStatus`, `ExitAddress a.b.c.d date time`) or bare addresses one per line."""
    rows = _RowAdder(table, path)
    for lineno, line in _lines(path):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        parts = s.split()
        if parts[0] in ("ExitNode", "Published", "LastStatus"):
            continue
        if parts[0] == "ExitAddress":
            if len(parts) < 2:
                raise rows.error(lineno, "ExitAddress without an address")
            addr = parts[1]
        elif len(parts) == 1:
            addr = parts[0]
        else:
            raise rows.error(lineno, f"expected 'ExitAddress a.b.c.d ...' or an address, got {s!r}")
        try:
            ver, net = parse_address(addr)
        except ValueError as exc:
            raise rows.error(lineno, str(exc)) from None
        rows.add(ver, net, 32 if ver == 4 else 128, label)
    rows.finish()


# IPv6 ranges under which an IPv6 MaxMind database repeats the IPv4 space (writers
# alias these subtrees to the IPv4 subtree at ::/96): IPv4-mapped ::ffff:0:0/96
# (RFC 4291 2.5.5.2), 6to4 2002::/16 (RFC 3056) and Teredo 2001::/32 (RFC 4380).
# They are not IPv6 networks with their own owners; loading them would give the
# IPv4 labels to IPv6 addresses that merely embed an IPv4 address.  The IPv4 space
# itself (::/96 in the tree) comes back from the reader as IPv4 networks.
_MMDB_ALIASES = tuple(ipaddress.ip_network(n) for n in ("::ffff:0:0/96", "2002::/16", "2001::/32"))


def _load_mmdb(table, path, label_by=None):
    try:
        import maxminddb
    except ImportError:
        raise PrefixFileError(path, None, "reading .mmdb files needs the maxminddb package (pip install maxminddb)") from None
    try:
        reader = maxminddb.open_database(path)
    except (ValueError, OSError, maxminddb.InvalidDatabaseError) as exc:
        raise PrefixFileError(path, None, f"not a MaxMind DB: {exc}") from None
    try:
        dbtype = reader.metadata().database_type or ""
        if label_by is None:
            label_by = "asn_org" if "ASN" in dbtype.upper() else "country"
        if label_by not in ("country", "asn_org", "asn"):
            raise ValueError(f"label_by must be 'country', 'asn_org' or 'asn', not {label_by!r}")
        rows = _RowAdder(table, path)
        for network, rec in reader:
            if network.version == 6 and any(network.subnet_of(a) for a in _MMDB_ALIASES):
                continue
            if not isinstance(rec, dict):
                continue
            if label_by == "country":
                lab = None
                for key in ("country", "registered_country"):
                    c = rec.get(key)
                    if isinstance(c, dict) and c.get("iso_code"):
                        lab = c["iso_code"]
                        break
            elif label_by == "asn_org":
                lab = rec.get("autonomous_system_organization")
                if not lab and rec.get("autonomous_system_number") is not None:
                    lab = f"AS{rec['autonomous_system_number']}"
            else:
                n = rec.get("autonomous_system_number")
                lab = f"AS{n}" if n is not None else None
            if not lab:
                continue
            rows.add(network.version, int(network.network_address), network.prefixlen, str(lab))
        rows.finish()
    except maxminddb.InvalidDatabaseError as exc:
        raise PrefixFileError(path, None, f"corrupt MaxMind DB: {exc}") from None
    finally:
        reader.close()


_LOADERS = {
    "csv": _load_csv,
    "rir": _load_rir,
    "ipasn": _load_ipasn,
    "tor": _load_tor,
    "mmdb": _load_mmdb,
}


# --------------------------------------------------------------------------- defaults

def default_watch():
    """The shipped watch table (nkstream/data/watch.csv): the study's three ranges."""
    return PrefixTable.load(os.path.join(_DATA_DIR, "watch.csv"), format="csv")


def default_peers():
    """The shipped sample peer table (nkstream/data/peers.csv.gz; see data/README.md)."""
    return PrefixTable.load(os.path.join(_DATA_DIR, "peers.csv.gz"), format="csv")
