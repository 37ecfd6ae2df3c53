"""Snapshot files: the counters of one window, written atomically as msgpack.

A snapshot is one msgpack map, self-describing and versioned (``format``,
``version``), with the counters stored column by column as typed little-endian
arrays (msgpack ``bin`` plus a numpy dtype string) rather than a map per row, so a
window of 200k keys is a few megabytes written and read in milliseconds, and a
user without nkstream can still read it with any msgpack library.  The schema is
documented field by field in docs/snapshot-format.md.

The writer never imports pandas (the ``classify`` CLI starts fast); pandas is
imported only by :meth:`Snapshot.to_pandas` and :func:`load_snapshots`.

Readers treat files as untrusted: a size cap on the file, msgpack's own limits on
every string, bin, array and map, and a check of every column's byte length against
its dtype and the declared row count before ``np.frombuffer``.  Peak memory of a load
is about twice the file size plus the label strings, whatever the file declares.
"""
import collections
import collections.abc
import datetime
import os
import pathlib
import socket
import tempfile

import msgpack
import numpy as np

FORMAT = "nkstream-snapshot"
VERSION = 1
SUFFIX = ".msgpack"

# Reader limits (docs/snapshot-format.md "Limits").  The default table holds at most
# 196,608 keys (35 bytes each in columns, ~7 MB); the cap leaves room for tables 30x
# bigger and for large label dictionaries while keeping a hostile file's cost bounded.
DEFAULT_MAX_BYTES = 256 * 2**20
MAX_STR_LEN = 2**20            # one label, host name, error name ...
MAX_ARRAY_LEN = 2**24          # labels of one kind; per-worker lists
MAX_MAP_LEN = 2**16            # totals, errors, columns, sensor fields ...

# Key and value columns, with the dtypes this version writes and requires.
KEY_COLUMNS = (("watch", "<u4"), ("direction", "<u1"), ("peer", "<u4"), ("tag", "<u2"))
VALUE_COLUMNS = (("packets", "<u8"), ("bytes", "<u8"), ("flows", "<u8"))
REQUIRED_COLUMNS = ("watch", "direction", "peer", "tag", "packets", "bytes")
# dtypes a reader accepts for extra (future) columns; anything else is corrupt.
ALLOWED_DTYPES = frozenset(("|u1", "<u1", "<u2", "<u4", "<u8", "|i1", "<i1", "<i2",
                            "<i4", "<i8", "<f4", "<f8"))

# The overflow bucket's reserved ids (nkstream/core/aggregate.pxi OVERFLOW_KEY).
OVERFLOW_IDS = {"watch": 0xFFFFFFFF, "direction": 0xFF, "peer": 0xFFFFFFFF, "tag": 0xFFFF}
OVERFLOW_LABEL = "(overflow)"
OVERFLOW_CATEGORY = "overflow"
# Label id 0 of the watch and peer tables is "no match" (None in the dictionaries).
NONE_LABEL = "(none)"
# Mirrors DIRECTION_NAMES in nkstream/core/types.pxi (checked by the tests); kept here
# so that writing a snapshot does not load the native extension.
DIRECTION_NAMES = ("transit", "outbound", "inbound", "internal")

Window = collections.namedtuple("Window", "start end")
Window.__doc__ = "A snapshot's time window: start and end in ns since the Unix epoch."


class SnapshotError(ValueError):
    """A snapshot file that cannot be read (or data that cannot be written)."""

    def __init__(self, path, message):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class Snapshot:
    """The counters of one window (or of several merged): columns, labels, totals.

    Attributes: ``columns`` (name -> numpy array, one element per key),
    ``labels`` (``watch``, ``peer``: lists indexed by label id, [0] None;
    ``tag``: tag names by tag id; ``category``: category of each tag id;
    ``direction``: direction names), ``window`` (:class:`Window`, ns),
    ``totals`` (name -> int; at least ``packets`` and ``bytes``),
    ``errors`` (reason -> packets), ``sensor`` (dict), ``drops`` (name -> total),
    ``drops_per_worker`` (name -> list), ``lost`` (name -> int),
    ``sources`` (for merged snapshots: the sensor and window of each part),
    ``created_ns``, ``path`` (where it was read from or last written).
    """

    def __init__(self, columns, labels, window, totals, errors=None, sensor=None,
                 drops=None, lost=None, sources=None, created_ns=None, path=None):
        self.columns = dict(columns)
        self.labels = {k: list(v) for k, v in labels.items()}
        self.window = Window(int(window[0]), int(window[1]))
        self.totals = {k: int(v) for k, v in totals.items()}
        self.errors = {k: int(v) for k, v in (errors or {}).items()}
        self.sensor = dict(sensor or {})
        self.drops_per_worker = {k: [int(x) for x in v] for k, v in (drops or {}).items()}
        self.lost = {k: int(v) for k, v in (lost or {}).items()}
        self.sources = list(sources or [])
        self.created_ns = created_ns
        self.path = None if path is None else pathlib.Path(path)

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_counters(cls, snap, *, start_ns, end_ns, watch_labels, peer_labels, tags,
                      categories, direction_names=DIRECTION_NAMES, error_names=None,
                      sensor=None, drops=None, lost=None, flows=None):
        """Build a Snapshot from ``Counters.snapshot()`` plus the dictionaries that give
        its ids names.

        *watch_labels*, *peer_labels*: the PrefixTables' ``labels`` (index 0 None);
        *tags*: tag names by tag id; *categories*: category per tag id (a sequence) or
        ``{tag: category}`` (tags missing from it get ``unknown``); *error_names*: names
        by error id (default: the counters' own ``error_names``, i.e. the decoder's
        ``ERROR_NAMES``); *sensor*: ``host`` (default this host), ``interfaces``,
        ``nkstream_version`` (default this version), ``workers``, ``engine`` and any
        other str/int fields; *drops*: ``{name: count or [count per worker]}`` (e.g.
        ``kernel``, ``ifdrop``); *lost*: ``{name: count}`` (e.g. ``workers_died``);
        *flows*: include the ``flows`` column (None: only if any flow was counted; a
        sensor with flow state on should pass True).
        """
        cols = snap["columns"]
        n = len(cols["watch"])
        columns = {}
        for name, dtype in KEY_COLUMNS + VALUE_COLUMNS:
            if name == "flows":
                if name not in cols:
                    continue
                if flows is None:
                    if not np.any(cols[name]):
                        continue
                elif not flows:
                    continue
            arr = np.ascontiguousarray(cols[name]).astype(dtype, copy=False)
            if arr.shape != (n,):
                raise SnapshotError(None, f"column {name}: {arr.shape} rows, expected ({n},)")
            columns[name] = arr
        tags = [str(t) for t in tags]
        if isinstance(categories, collections.abc.Mapping):
            cats = [str(categories.get(t, "unknown")) for t in tags]
        else:
            cats = [str(c) for c in categories]
            if len(cats) != len(tags):
                raise SnapshotError(None, f"{len(cats)} categories for {len(tags)} tags")
        labels = {
            "watch": _label_list(watch_labels, "watch"),
            "peer": _label_list(peer_labels, "peer"),
            "tag": tags,
            "category": cats,
            "direction": [str(d) for d in direction_names],
        }
        totals = dict(snap.get("totals", {}))
        errs = {}
        arr = snap.get("errors")
        if arr is not None:
            names = error_names if error_names is not None else snap.get("error_names")
            for i, v in enumerate(np.asarray(arr).tolist()):
                if v:
                    name = names[i] if names is not None and i < len(names) and names[i] else f"error.{i}"
                    errs[str(name)] = errs.get(str(name), 0) + int(v)
        return cls(columns, labels, (start_ns, end_ns), totals, errs,
                   sensor=_sensor_defaults(sensor), drops=_drops_lists(drops), lost=lost)

    # -- views ------------------------------------------------------------------
    def __len__(self):
        return len(self.columns["watch"])

    def __repr__(self):
        return (f"<Snapshot {len(self)} keys, window {_iso(self.window.start)} .. "
                f"{_iso(self.window.end)}, {self.totals.get('packets', 0)} packets, "
                f"host {self.sensor.get('host')!r}>")

    @property
    def drops(self):
        """Capture drops by counter name, summed over workers."""
        return {k: sum(v) for k, v in self.drops_per_worker.items()}

    @property
    def has_flows(self):
        return "flows" in self.columns

    def names(self, column):
        """Per-row label names for a key column, or ``category`` (object array).  Id 0
        of watch/peer (no match) is ``(none)``, the overflow row ``(overflow)``."""
        if column == "category":
            tag_names = self.labels["category"] + [OVERFLOW_CATEGORY]
            ids = self.columns["tag"]
            reserved = OVERFLOW_IDS["tag"]
        elif column in OVERFLOW_IDS:
            tag_names = [NONE_LABEL if x is None else x for x in self.labels[column]]
            tag_names = tag_names + [OVERFLOW_LABEL]
            ids = self.columns[column]
            reserved = OVERFLOW_IDS[column]
        else:
            raise KeyError(f"no label column {column!r} (one of watch, direction, peer, tag, category)")
        table = np.array(tag_names, dtype=object)
        idx = np.where(ids == reserved, len(tag_names) - 1, ids)
        return table[idx.astype(np.intp)]

    def to_pandas(self):
        """One row per key: ``watch, direction, peer, tag, category`` (str), ``packets``,
        ``bytes`` (and ``flows`` when counted)."""
        pd = _pandas()

        data = {c: self.names(c) for c in ("watch", "direction", "peer", "tag", "category")}
        for c in ("packets", "bytes", "flows"):
            if c in self.columns:
                data[c] = self.columns[c]
        return pd.DataFrame(data)

    # -- writing ----------------------------------------------------------------
    def to_msgpack(self, created_ns=None):
        """The file's bytes."""
        n = len(self)
        cols = {}
        for name, arr in self.columns.items():
            arr = np.asarray(arr)
            arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
            if arr.shape != (n,):
                raise SnapshotError(self.path, f"column {name}: shape {arr.shape}, expected ({n},)")
            cols[name] = {"dtype": arr.dtype.str, "data": arr.tobytes()}
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "created_ns": int(created_ns if created_ns is not None else _now_ns()),
            "window": {"start_ns": self.window.start, "end_ns": self.window.end},
            "sensor": self.sensor,
            "labels": self.labels,
            "rows": n,
            "columns": cols,
            "totals": self.totals,
            "errors": self.errors,
            "drops": self.drops_per_worker,
            "lost": self.lost,
        }
        if self.sources:
            doc["sources"] = self.sources
        try:
            return msgpack.packb(doc, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(self.path, f"cannot encode snapshot: {exc}") from None

    def write(self, path):
        """Write atomically (see :func:`atomic_write`); returns the path."""
        path = atomic_write(path, self.to_msgpack())
        self.path = path
        return path


# -- writer ------------------------------------------------------------------------
def write_snapshot(path, snap, **meta):
    """Write a snapshot atomically and return its path.

    *snap* is a :class:`Snapshot` (no *meta* then) or the dict from
    ``Counters.snapshot()``, with *meta* the keywords of :meth:`Snapshot.from_counters`
    (``start_ns, end_ns, watch_labels, peer_labels, tags, categories`` required).
    """
    if not isinstance(snap, Snapshot):
        snap = Snapshot.from_counters(snap, **meta)
    elif meta:
        raise TypeError(f"write_snapshot: unexpected keywords for a Snapshot: {sorted(meta)}")
    return snap.write(path)


def atomic_write(path, data):
    """Write *data* to *path* so that readers see the old file or the whole new one,
    never a part: a temporary file in the same directory, written, flushed and
    fsync'd, renamed over *path* (rename(2) is atomic within a filesystem), then the
    directory fsync'd so the rename itself survives a crash.  On any failure the
    temporary file is removed and *path* is left as it was."""
    path = pathlib.Path(path)
    directory = path.parent if str(path.parent) else pathlib.Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


def _fsync_dir(directory):
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:  # some filesystems refuse fsync on directories; the data is safe
        pass
    finally:
        os.close(dfd)


def snapshot_filename(start_ns, host=None, prefix="nkstream"):
    """A file name for a window's snapshot: ``nkstream-HOST-20261128T203000Z.msgpack``;
    a sub-second window start adds its ns as ``T203000_500000000Z`` ('_' sorts after
    'Z', so names sort by time per host)."""
    host = host or socket.gethostname()
    host = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in host)
    sec, frac = divmod(int(start_ns), 10**9)
    stamp = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    if frac:
        stamp += f"_{frac:09d}"
    return f"{prefix}-{host}-{stamp}Z{SUFFIX}"


# -- reader ------------------------------------------------------------------------
def load_snapshot(path, *, max_bytes=DEFAULT_MAX_BYTES):
    """Read one snapshot file.  Raises :class:`SnapshotError` naming the file for a
    file that is not a snapshot, of an unknown version, corrupt, truncated or larger
    than *max_bytes*."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise SnapshotError(path, f"file is {size} bytes, over the limit of {max_bytes} "
                                          "(load_snapshot(path, max_bytes=...))")
            data = f.read(max_bytes + 1)
    except IsADirectoryError:
        raise SnapshotError(path, "is a directory (use load_snapshots for directories)") from None
    if len(data) > max_bytes:
        raise SnapshotError(path, f"file is over the limit of {max_bytes} bytes")
    return decode_snapshot(data, path=path, max_bytes=max_bytes)


def decode_snapshot(data, path=None, *, max_bytes=DEFAULT_MAX_BYTES):
    """Decode a snapshot from bytes (see :func:`load_snapshot`)."""
    where = path if path is not None else "<bytes>"
    if len(data) == 0:
        raise SnapshotError(where, "empty file, not an nkstream snapshot")
    if len(data) > max_bytes:
        raise SnapshotError(where, f"{len(data)} bytes, over the limit of {max_bytes}")
    first = data[0]
    if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        raise SnapshotError(where, "not an nkstream snapshot (does not start with a msgpack map)")
    try:
        doc = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_STR_LEN, max_bin_len=max_bytes, max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN, max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise SnapshotError(where, f"corrupt: {len(exc.extra)} trailing bytes after the "
                                   "snapshot") from None
    except (ValueError, msgpack.UnpackException, TypeError, UnicodeDecodeError,
            RecursionError) as exc:
        msg = str(exc) or type(exc).__name__
        if "incomplete" in msg.lower():
            raise SnapshotError(where, "truncated: the file ends inside the snapshot "
                                       f"({len(data)} bytes read)") from None
        if FORMAT.encode() not in data[:64]:  # the writer puts "format" first
            raise SnapshotError(where, f"not an nkstream snapshot ({msg})") from None
        raise SnapshotError(where, f"corrupt msgpack: {msg}") from None
    return _from_doc(doc, where)


def _from_doc(doc, where):
    v = _Validator(where)
    v.map(doc, "top level")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise SnapshotError(where, f"not an nkstream snapshot (format is {fmt!r}, "
                                   f"expected {FORMAT!r})")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SnapshotError(where, f"corrupt: version is {version!r}, expected an integer")
    if version != VERSION:
        raise SnapshotError(where, f"snapshot format version {version} is not supported "
                                   f"(this nkstream reads version {VERSION})")
    window = v.map(v.get(doc, "window"), "window")
    start = v.int(v.get(window, "start_ns", "window"), "window.start_ns", signed=True)
    end = v.int(v.get(window, "end_ns", "window"), "window.end_ns", signed=True)
    if end < start:
        raise SnapshotError(where, f"corrupt: window ends ({end}) before it starts ({start})")
    labels = v.map(v.get(doc, "labels"), "labels")
    lab = {}
    for kind in ("watch", "peer"):
        lab[kind] = v.str_list(v.get(labels, kind, "labels"), f"labels.{kind}", nullable=True)
    for kind in ("tag", "category", "direction"):
        lab[kind] = v.str_list(v.get(labels, kind, "labels"), f"labels.{kind}")
    if len(lab["category"]) != len(lab["tag"]):
        raise SnapshotError(where, f"corrupt: {len(lab['category'])} categories for "
                                   f"{len(lab['tag'])} tags")
    rows = v.int(v.get(doc, "rows"), "rows")
    colmap = v.map(v.get(doc, "columns"), "columns")
    columns = {}
    for name, spec in colmap.items():
        spec = v.map(spec, f"columns.{name}")
        dtype_s = v.get(spec, "dtype", f"columns.{name}")
        data = v.get(spec, "data", f"columns.{name}")
        if not isinstance(dtype_s, str) or dtype_s not in ALLOWED_DTYPES:
            raise SnapshotError(where, f"corrupt: column {name!r} has dtype {dtype_s!r} "
                                       f"(allowed: {', '.join(sorted(ALLOWED_DTYPES))})")
        if not isinstance(data, bytes):
            raise SnapshotError(where, f"corrupt: column {name!r} data is "
                                       f"{type(data).__name__}, expected msgpack bin")
        dtype = np.dtype(dtype_s)
        if len(data) != rows * dtype.itemsize:
            raise SnapshotError(where, f"corrupt: column {name!r} holds {len(data)} bytes, "
                                       f"expected {rows} rows x {dtype.itemsize} bytes")
        columns[name] = np.frombuffer(data, dtype=dtype)
    expected = dict(KEY_COLUMNS + VALUE_COLUMNS)
    for name in REQUIRED_COLUMNS + (("flows",) if "flows" in columns else ()):
        if name not in columns:
            raise SnapshotError(where, f"corrupt: required column {name!r} is missing")
        if columns[name].dtype != np.dtype(expected[name]):
            raise SnapshotError(where, f"corrupt: column {name!r} has dtype "
                                       f"{columns[name].dtype.str}, expected {expected[name]}")
    for name, kind in (("watch", "watch"), ("peer", "peer"), ("tag", "tag"),
                       ("direction", "direction")):
        ids = columns[name]
        ok = (ids < len(lab[kind])) | (ids == OVERFLOW_IDS[name])
        if not ok.all():
            bad = int(ids[~ok][0])
            raise SnapshotError(where, f"corrupt: column {name!r} has id {bad}, beyond the "
                                       f"{len(lab[kind])} entries of labels.{kind}")
    totals = v.int_map(v.get(doc, "totals"), "totals")
    for need in ("packets", "bytes"):
        if need not in totals:
            raise SnapshotError(where, f"corrupt: totals.{need} is missing")
    errors = v.int_map(doc.get("errors", {}), "errors")
    sensor = v.map(doc.get("sensor", {}), "sensor")
    drops_raw = v.map(doc.get("drops", {}), "drops")
    drops = {}
    for name, per in drops_raw.items():
        if not isinstance(per, list) or not all(_is_uint(x) for x in per):
            raise SnapshotError(where, f"corrupt: drops.{name} must be a list of counts")
        drops[name] = per
    lost = v.int_map(doc.get("lost", {}), "lost")
    sources = doc.get("sources", [])
    if not isinstance(sources, list):
        raise SnapshotError(where, "corrupt: sources must be a list")
    created = doc.get("created_ns")
    return Snapshot(columns, lab, (start, end), totals, errors, sensor=sensor, drops=drops,
                    lost=lost, sources=sources,
                    created_ns=created if isinstance(created, int) else None,
                    path=where if isinstance(where, pathlib.Path) else None)


class _Validator:
    def __init__(self, where):
        self.where = where

    def fail(self, msg):
        raise SnapshotError(self.where, f"corrupt: {msg}")

    def map(self, x, what):
        if not isinstance(x, dict):
            self.fail(f"{what} is {type(x).__name__}, expected a map")
        return x

    def get(self, m, key, what=None):
        if key not in m:
            self.fail(f"{what + '.' if what else ''}{key} is missing")
        return m[key]

    def int(self, x, what, signed=False):
        if not isinstance(x, int) or isinstance(x, bool) or (not signed and x < 0):
            self.fail(f"{what} is {x!r}, expected {'an' if signed else 'a non-negative'} integer")
        return x

    def int_map(self, m, what):
        self.map(m, what)
        for k, x in m.items():
            if not _is_uint(x):
                self.fail(f"{what}.{k} is {x!r}, expected a non-negative integer")
        return m

    def str_list(self, x, what, nullable=False):
        if not isinstance(x, list):
            self.fail(f"{what} is {type(x).__name__}, expected a list of strings")
        for i, s in enumerate(x):
            if not (isinstance(s, str) or (nullable and s is None)):
                self.fail(f"{what}[{i}] is {type(s).__name__}, expected a string")
        return x


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# -- several snapshots ---------------------------------------------------------------
def snapshot_paths(paths):
    """Expand files and directories (their ``*.msgpack`` files, sorted) into a list."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = pathlib.Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix == SUFFIX and q.is_file())
            if not found:
                raise SnapshotError(p, f"no snapshot files (*{SUFFIX}) in this directory")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise SnapshotError(p, "no such file or directory")
    return out


def load_snapshots(paths, *, max_bytes=DEFAULT_MAX_BYTES):
    """Load snapshot files and/or directories into one tidy pandas DataFrame: one row
    per key per snapshot, columns ``start, end`` (UTC timestamps), ``watch,
    direction, peer, tag, category, packets, bytes``, ``flows`` where counted, and
    the sensor's ``sensor`` (host) and ``interfaces``."""
    pd = _pandas()

    frames = []
    for p in snapshot_paths(paths):
        snap = load_snapshot(p, max_bytes=max_bytes)
        df = snap.to_pandas()
        df.insert(0, "start", pd.Timestamp(snap.window.start, unit="ns", tz="UTC"))
        df.insert(1, "end", pd.Timestamp(snap.window.end, unit="ns", tz="UTC"))
        df["sensor"] = _sensor_text(snap.sensor.get("host"))
        df["interfaces"] = _sensor_text(snap.sensor.get("interfaces"))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if "flows" in df:
        df["flows"] = df["flows"].astype("UInt64")  # missing where a file had no flows
    cols = ["start", "end", "watch", "direction", "peer", "tag", "category", "packets", "bytes"]
    cols += [c for c in ("flows",) if c in df] + ["sensor", "interfaces"]
    return df[cols]


def merge_snapshots(snaps):
    """Merge snapshots (Snapshot objects or paths) of several sensors and/or windows
    into one Snapshot.  Labels are remapped by name (the union of the dictionaries),
    rows with the same named key are summed, totals, errors and lost counts summed,
    drops summed per worker index; the window spans all inputs; ``sources`` lists
    each input's sensor, window and file.  The ``flows`` column is kept only if every
    input has it.  A tag that two inputs put in different categories is an error."""
    snaps = [s if isinstance(s, Snapshot) else load_snapshot(s) for s in snaps]
    if not snaps:
        raise SnapshotError(None, "merge_snapshots: nothing to merge")
    labels = {"watch": [], "peer": [], "tag": [], "direction": []}
    index = {k: {} for k in labels}
    category_of = {}
    remapped = []
    for s in snaps:
        maps = {}
        for kind in labels:
            lst, idx = labels[kind], index[kind]
            m = np.empty(len(s.labels[kind]), dtype=np.int64)
            for i, name in enumerate(s.labels[kind]):
                if name not in idx:
                    idx[name] = len(lst)
                    lst.append(name)
                m[i] = idx[name]
            maps[kind] = m
        for tag, cat in zip(s.labels["tag"], s.labels["category"]):
            prev = category_of.setdefault(tag, cat)
            if prev != cat:
                raise SnapshotError(s.path, f"tag {tag!r} is in category {cat!r} here but "
                                            f"{prev!r} in another snapshot being merged")
        cols = {}
        for name, _ in KEY_COLUMNS:
            ids = s.columns[name].astype(np.int64)
            ovf = ids == OVERFLOW_IDS[name]
            m = maps[name]
            cols[name] = np.where(ovf, OVERFLOW_IDS[name], m[np.where(ovf, 0, ids)] if len(m) else 0)
        for name in ("packets", "bytes", "flows"):
            if name in s.columns:
                cols[name] = s.columns[name].astype(np.uint64)
        remapped.append(cols)
    # Index 0 of watch/peer stays "no match" when the first input had it so.
    with_flows = all("flows" in c for c in remapped)
    cat = {k: np.concatenate([c[k] for c in remapped]) for k, _ in KEY_COLUMNS}
    vals = {k: np.concatenate([c[k] for c in remapped])
            for k in ("packets", "bytes") + (("flows",) if with_flows else ())}
    columns = _sum_by_key(cat, vals)
    out_labels = dict(labels)
    out_labels["category"] = [category_of[t] for t in labels["tag"]]
    totals, errors, lost = collections.Counter(), collections.Counter(), collections.Counter()
    drops = {}
    sources = []
    for s in snaps:
        totals.update(s.totals)
        errors.update(s.errors)
        lost.update(s.lost)
        for name, per in s.drops_per_worker.items():
            acc = drops.setdefault(name, [])
            acc.extend([0] * (len(per) - len(acc)))
            for i, x in enumerate(per):
                acc[i] += x
        if s.sources:
            sources.extend(s.sources)
        else:
            sources.append({"sensor": s.sensor, "window": {"start_ns": s.window.start,
                                                           "end_ns": s.window.end},
                            "file": str(s.path) if s.path else None})
    window = (min(s.window.start for s in snaps), max(s.window.end for s in snaps))
    return Snapshot(columns, out_labels, window, dict(totals), dict(errors),
                    sensor=_merge_sensors([s.sensor for s in snaps]), drops=drops,
                    lost=dict(lost), sources=sources)


def _sum_by_key(keys, vals):
    """Rows with equal keys summed (exactly, in uint64), sorted by key."""
    order = np.lexsort((keys["tag"], keys["peer"], keys["direction"], keys["watch"]))
    k = {name: keys[name][order] for name in keys}
    n = len(order)
    if n:
        new = np.ones(n, dtype=bool)
        new[1:] = ((k["watch"][1:] != k["watch"][:-1]) | (k["direction"][1:] != k["direction"][:-1])
                   | (k["peer"][1:] != k["peer"][:-1]) | (k["tag"][1:] != k["tag"][:-1]))
        starts = np.flatnonzero(new)
    else:
        starts = np.zeros(0, dtype=np.intp)
    out = {}
    for name, dtype in KEY_COLUMNS:
        out[name] = k[name][starts].astype(dtype)
    for name, v in vals.items():
        v = v[order]
        out[name] = (np.add.reduceat(v, starts) if n else v[:0]).astype("<u8")
    return out


def _merge_sensors(sensors):
    out = {}
    keys = []
    for s in sensors:
        keys.extend(k for k in s if k not in keys)
    for k in keys:
        values = []
        for s in sensors:
            x = s.get(k)
            if x not in values:
                values.append(x)
        out[k] = values[0] if len(values) == 1 else values
    return out


# -- helpers ---------------------------------------------------------------------------
def _label_list(labels, kind):
    out = []
    for i, x in enumerate(labels):
        if x is not None and not isinstance(x, str):
            raise SnapshotError(None, f"{kind} label {i} is {type(x).__name__}, expected str or None")
        out.append(x)
    return out


def _sensor_defaults(sensor):
    out = {"host": socket.gethostname(), "interfaces": [], "nkstream_version": _version()}
    out.update(sensor or {})
    if isinstance(out.get("interfaces"), str):
        out["interfaces"] = [out["interfaces"]]
    return out


def _drops_lists(drops):
    out = {}
    for name, v in (drops or {}).items():
        out[str(name)] = [int(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else [int(v)]
    return out


def _sensor_text(x):
    if isinstance(x, (list, tuple)):
        return ",".join(str(i) for i in x)
    return "" if x is None else str(x)


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("nkstream snapshots -> DataFrame needs pandas: "
                          "pip install 'nkstream[analysis]'") from None
    return pandas


def _version():
    from nkstream import __version__

    return __version__


def _now_ns():
    import time

    return time.time_ns()


def _iso(ns):
    sec, frac = divmod(int(ns), 10**9)
    try:
        t = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(ns)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        s += f".{frac:09d}".rstrip("0")
    return s + "Z"
