"""Snapshot files: round trips, plain-msgpack readability, merges, bad and hostile files,
atomic writes."""
import collections
import os
import pathlib
import struct
import subprocess
import sys
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nkstream import _core, snapshot as S
from synthetic_snapshots import (CATEGORIES, PEER, T0, TAGS, WATCH, make_snapshot,
                                 mixed_rows, rng)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def by_names(snap):
    """Reference view: {(watch, direction, peer, tag): [packets, bytes]} built with
    plain Python from the label lists, independent of Snapshot.names/to_pandas."""
    lab = snap.labels
    out = collections.defaultdict(lambda: [0, 0])
    c = snap.columns
    for w, d, p, t, pk, by in zip(*(c[k].tolist() for k in
                                    ("watch", "direction", "peer", "tag", "packets", "bytes"))):
        key = (
            "(overflow)" if w == 0xFFFFFFFF else (lab["watch"][w] or "(none)"),
            "(overflow)" if d == 0xFF else lab["direction"][d],
            "(overflow)" if p == 0xFFFFFFFF else (lab["peer"][p] or "(none)"),
            "(overflow)" if t == 0xFFFF else lab["tag"][t],
        )
        out[key][0] += pk
        out[key][1] += by
    return dict(out)


rows_st = st.lists(
    st.tuples(st.integers(0, len(WATCH) - 1), st.integers(0, 3), st.integers(0, len(PEER) - 1),
              st.integers(0, len(TAGS) - 1), st.integers(0, 2**32), st.integers(0, 2**50),
              st.integers(0, 9)),
    max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, capacity=st.sampled_from([4, 256]))
def test_round_trip(tmp_path, rows, capacity):
    snap = make_snapshot(rows, capacity=capacity, flows=True, errors=[0, 4, 0, 1],
                         error_names=[None, "l2.truncated", "ipv4.bad_ihl", "tcp.bad_offset"],
                         drops={"kernel": [3, 4], "ifdrop": 1}, lost={"workers_died": 1})
    path = snap.write(tmp_path / "a.msgpack")
    back = S.load_snapshot(path)
    assert back.path == path
    for name in ("watch", "direction", "peer", "tag", "packets", "bytes", "flows"):
        assert back.columns[name].dtype == snap.columns[name].dtype
        assert back.columns[name].tolist() == snap.columns[name].tolist()
    assert back.labels == snap.labels
    assert back.labels["category"] == [CATEGORIES[t] for t in TAGS]
    assert back.window == (T0, T0 + 60 * 10**9)
    assert back.totals == snap.totals
    assert back.errors == {"l2.truncated": 4, "tcp.bad_offset": 1}
    assert back.drops == {"kernel": 7, "ifdrop": 1}
    assert back.drops_per_worker == {"kernel": [3, 4], "ifdrop": [1]}
    assert back.lost == {"workers_died": 1}
    assert back.sensor["host"] == "sensor-a" and back.sensor["interfaces"] == ["eth0"]
    assert back.sensor["nkstream_version"]
    # Every row of the input is in the file under its names, overflow included.
    expected = collections.defaultdict(lambda: [0, 0])
    model_keys = set()
    c = _core.Counters(capacity)
    for w, d, p, t, pk, by, fl in rows:
        fits = (w, d, p, t) in model_keys or len(model_keys) < c.max_keys
        if fits:
            model_keys.add((w, d, p, t))
            key = (WATCH[w] or "(none)", S.DIRECTION_NAMES[d], PEER[p] or "(none)", TAGS[t])
        else:
            key = ("(overflow)",) * 4
        expected[key][0] += pk
        expected[key][1] += by
    assert by_names(back) == dict(expected)
    df = back.to_pandas()
    assert list(df.columns) == ["watch", "direction", "peer", "tag", "category", "packets",
                                "bytes", "flows"]
    assert int(df["packets"].sum()) == sum(r[4] for r in rows)
    assert int(df["flows"].sum()) == sum(r[6] for r in rows)
    got = {tuple(r[:4]): [r[5], r[6]] for r in df.itertuples(index=False)}
    assert got == dict(expected)
    assert all(df.loc[df["tag"] == t, "category"].eq(CATEGORIES[t]).all() for t in TAGS)


def test_plain_msgpack_reading_as_documented(tmp_path):
    """What docs/snapshot-format.md tells a user without nkstream to do."""
    snap = make_snapshot([(1, 1, 3, 5, 10, 5000), (2, 2, 1, 1, 4, 400)])
    path = snap.write(tmp_path / "s.msgpack")
    with open(path, "rb") as f:
        doc = msgpack.unpackb(f.read(), raw=False)
    assert doc["format"] == "nkstream-snapshot" and doc["version"] == 1
    cols = {name: np.frombuffer(c["data"], dtype=c["dtype"]) for name, c in doc["columns"].items()}
    assert doc["rows"] == 2
    assert {c["dtype"] for c in doc["columns"].values()} == {"<u4", "|u1", "<u2", "<u8"}
    watch = [doc["labels"]["watch"][i] for i in cols["watch"]]
    assert watch == ["KP-allocated", "KP-via-China-Netcom"]
    assert [doc["labels"]["tag"][i] for i in cols["tag"]] == ["tor", "https"]
    assert cols["bytes"].tolist() == [5000, 400]
    assert doc["totals"]["packets"] == 14 and doc["window"]["end_ns"] - doc["window"]["start_ns"] == 60 * 10**9


def test_flows_column_only_when_counted(tmp_path):
    no_flows = make_snapshot([(1, 1, 1, 1, 1, 100)])
    assert "flows" not in no_flows.columns
    assert "flows" not in S.load_snapshot(no_flows.write(tmp_path / "a.msgpack")).to_pandas()
    forced = make_snapshot([(1, 1, 1, 1, 1, 100)], flows=True)
    assert forced.columns["flows"].tolist() == [0]
    auto = make_snapshot([(1, 1, 1, 1, 1, 100, 2)])
    assert auto.columns["flows"].tolist() == [2]


def test_merge_two_sensors_with_different_dictionaries(tmp_path):
    r = rng(1)
    a = make_snapshot(mixed_rows(r), host="sensor-a")
    # Sensor b: another order of the same labels plus labels a has never seen.
    watch_b = [None, "KP-via-SatGate", "KP-allocated", "KP-new-range"]
    peer_b = [None, "AS4134", "tor", "netflix", "facebook"]
    tags_b = ["unknown", "tor", "wireguard", "https"]
    cats_b = {"tor": "vpn-obfuscation", "wireguard": "vpn-obfuscation", "https": "browsing-email-downloads"}
    rows_b = [(w, d, p, t, 7 + w + p, 1000 * (t + 1)) for w in range(4) for d in (1, 2)
              for p in range(5) for t in range(4)]
    b = make_snapshot(rows_b, start=T0 + 60 * 10**9, watch=watch_b, peer=peer_b, tags=tags_b,
                      categories=cats_b, host="sensor-b", drops={"kernel": [1, 2]},
                      lost={"workers_died": 1})
    pa, pb = a.write(tmp_path / "a.msgpack"), b.write(tmp_path / "b.msgpack")
    m = S.merge_snapshots([pa, pb])
    expected = collections.defaultdict(lambda: [0, 0])
    for s in (a, b):
        for k, (pk, by) in by_names(s).items():
            expected[k][0] += pk
            expected[k][1] += by
    assert by_names(m) == dict(expected)
    assert m.window == (T0, T0 + 120 * 10**9)
    assert m.totals["packets"] == a.totals["packets"] + b.totals["packets"]
    assert m.sensor["host"] == ["sensor-a", "sensor-b"] and m.sensor["engine"] == "afpacket"
    assert [s["sensor"]["host"] for s in m.sources] == ["sensor-a", "sensor-b"]
    assert m.drops == {"kernel": 3} and m.lost == {"workers_died": 1}
    assert dict(zip(m.labels["tag"], m.labels["category"]))["wireguard"] == "vpn-obfuscation"
    # Rows are unique per key and sorted; the merge survives its own round trip.
    back = S.load_snapshot(m.write(tmp_path / "m.msgpack"))
    assert by_names(back) == dict(expected)
    keys = list(zip(*(back.columns[k].tolist() for k in ("watch", "direction", "peer", "tag"))))
    assert keys == sorted(set(keys))
    # Merging a merge equals merging everything at once.
    c = make_snapshot(mixed_rows(rng(2)), start=T0 + 120 * 10**9, host="sensor-a")
    assert by_names(S.merge_snapshots([m, c])) == by_names(S.merge_snapshots([a, b, c]))


def test_merge_rejects_conflicting_categories():
    a = make_snapshot([(1, 1, 1, 1, 1, 100)])
    cats = dict(CATEGORIES, https="video-gaming")
    b = make_snapshot([(1, 1, 1, 1, 1, 100)], categories=cats)
    with pytest.raises(S.SnapshotError, match="https"):
        S.merge_snapshots([a, b])
    with pytest.raises(S.SnapshotError):
        S.merge_snapshots([])


def test_load_snapshots_dataframe(tmp_path):
    for i in range(3):
        make_snapshot(mixed_rows(rng(i)), start=T0 + i * 60 * 10**9).write(
            tmp_path / S.snapshot_filename(T0 + i * 60 * 10**9, host="sensor-a"))
    (tmp_path / "notes.txt").write_text("not a snapshot")
    df = S.load_snapshots(tmp_path)
    assert list(df.columns) == ["start", "end", "watch", "direction", "peer", "tag", "category",
                                "packets", "bytes", "sensor", "interfaces"]
    assert df["start"].nunique() == 3 and str(df["start"].dt.tz) == "UTC"
    assert df["start"].min().value == T0
    total = sum(S.load_snapshot(p).totals["packets"] for p in sorted(tmp_path.glob("*.msgpack")))
    assert int(df["packets"].sum()) == total
    assert set(df["sensor"]) == {"sensor-a"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(S.SnapshotError, match="no snapshot files"):
        S.load_snapshots(tmp_path / "empty")
    with pytest.raises(S.SnapshotError, match="no such file"):
        S.load_snapshots([tmp_path / "missing.msgpack"])


def test_snapshot_filename_sorts_by_time():
    names = [S.snapshot_filename(T0 + i * 10**9 // 2, host="h/1") for i in range(4)]
    assert names == sorted(names) and len(set(names)) == 4
    assert names[0].startswith("nkstream-h_1-2026") and names[0].endswith("Z.msgpack")


def test_direction_names_match_core():
    assert tuple(S.DIRECTION_NAMES) == tuple(_core.DIRECTION_NAMES)
    assert tuple(S.OVERFLOW_IDS[k] for k in ("watch", "direction", "peer", "tag")) == _core.OVERFLOW_KEY


# -- bad files ----------------------------------------------------------------------
def good_bytes():
    return make_snapshot(mixed_rows(rng(3), n=20), flows=True).to_msgpack()


def doc_of(data):
    return msgpack.unpackb(data, raw=False)


def write(tmp_path, data, name="bad.msgpack"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_unknown_version_and_format_name_the_file(tmp_path):
    doc = doc_of(good_bytes())
    doc["version"] = 2
    p = write(tmp_path, msgpack.packb(doc), "v2.msgpack")
    with pytest.raises(S.SnapshotError, match=r"v2\.msgpack: snapshot format version 2 is not supported"):
        S.load_snapshot(p)
    doc["version"] = 1
    doc["format"] = "something-else"
    with pytest.raises(S.SnapshotError, match="not an nkstream snapshot"):
        S.load_snapshot(write(tmp_path, msgpack.packb(doc)))
    with pytest.raises(S.SnapshotError, match="not an nkstream snapshot"):
        S.load_snapshot(write(tmp_path, b"\x89PNG\r\n\x1a\n"))   # 0x89: a msgpack fixmap
    with pytest.raises(S.SnapshotError, match="not an nkstream snapshot"):
        S.load_snapshot(write(tmp_path, b"GIF89a"))
    with pytest.raises(S.SnapshotError, match="empty"):
        S.load_snapshot(write(tmp_path, b""))


def test_every_truncation_is_a_clear_error(tmp_path):
    data = good_bytes()
    for cut in list(range(1, 64)) + list(range(64, len(data), max(1, len(data) // 200))):
        with pytest.raises(S.SnapshotError) as exc:
            S.decode_snapshot(data[:cut], path="t.msgpack")
        assert str(exc.value).startswith("t.msgpack: ")
        assert "truncated" in str(exc.value) or "corrupt" in str(exc.value)
    with pytest.raises(S.SnapshotError, match="trailing bytes"):
        S.decode_snapshot(data + b"\x00")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_bytes_never_escape_as_other_errors(data):
    raw = bytearray(good_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        snap = S.decode_snapshot(bytes(raw))
    except S.SnapshotError:
        return
    # It still decoded: then it must be fully usable.
    snap.to_pandas()
    assert len(snap.names("category")) == len(snap)


def test_semantic_corruption_is_detected():
    base = doc_of(good_bytes())

    def fails(mutate, match):
        doc = doc_of(msgpack.packb(base))
        mutate(doc)
        with pytest.raises(S.SnapshotError, match=match):
            S.decode_snapshot(msgpack.packb(doc, use_bin_type=True), path="x")

    fails(lambda d: d["columns"]["peer"].update(data=d["columns"]["peer"]["data"][:-4]), "peer.*bytes")
    fails(lambda d: d.update(rows=d["rows"] + 1), "expected")
    fails(lambda d: d["columns"]["watch"].update(dtype="<i4"), "watch.*dtype <i4, expected <u4")
    fails(lambda d: d["columns"]["watch"].update(dtype="O"), "dtype")
    fails(lambda d: d["columns"].pop("bytes"), "bytes.*missing")
    fails(lambda d: d["labels"]["tag"].pop(), "categories for")
    fails(lambda d: d["labels"].update(watch=[None]), "beyond the 1 entries of labels.watch")
    fails(lambda d: d["totals"].pop("packets"), "totals.packets")
    fails(lambda d: d["totals"].update(packets=-1), "totals.packets")
    fails(lambda d: d["window"].update(end_ns=d["window"]["start_ns"] - 1), "before it starts")
    fails(lambda d: d["labels"]["peer"].__setitem__(1, 5), r"labels.peer\[1\]")
    fails(lambda d: d.update(version="1"), "version")
    fails(lambda d: d["drops"].update(kernel=[1, "x"]), "drops.kernel")


def test_hostile_lengths_are_refused_with_bounded_memory(tmp_path):
    prefix = b"\x81\xa6format"      # {"format": ...
    hostile = [
        prefix + b"\xc6\xff\xff\xff\xff" + b"x" * 100,          # bin32 of 4 GiB
        prefix + b"\xdd\xff\xff\xff\xff" + b"\xc0" * 100,       # array32 of 4G elements
        prefix + b"\xdf\xff\xff\xff\xff" + b"\xa1a\xc0" * 50,   # map32 of 4G pairs
        prefix + b"\xdb\x7f\xff\xff\xff" + b"y" * 100,          # str32 of 2 GiB
        b"\xdf\xff\xff\xff\xff",                                 # top-level map of 4G
        b"\x81" + b"\xa1a" + b"\x91" * 100_000 + b"\xc0",        # 100k-deep nesting
    ]
    doc = doc_of(good_bytes())
    doc["rows"] = 10**12                                       # rows declared huge
    hostile.append(msgpack.packb(doc, use_bin_type=True))
    tracemalloc.start()
    try:
        for data in hostile:
            with pytest.raises(S.SnapshotError):
                S.decode_snapshot(data, path="hostile")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak} bytes"
    big = write(tmp_path, good_bytes(), "big.msgpack")
    with pytest.raises(S.SnapshotError, match="over the limit"):
        S.load_snapshot(big, max_bytes=100)


# -- atomic writes ---------------------------------------------------------------------
def test_atomic_write_leaves_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "snap.msgpack"
    old = make_snapshot([(1, 1, 1, 1, 1, 100)])
    old.write(target)
    before = target.read_bytes()
    new = make_snapshot([(2, 2, 2, 2, 9, 900)])

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S.os, "replace", failing_replace)
    with pytest.raises(OSError):
        new.write(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.msgpack"]


def test_atomic_write_interrupted_mid_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "fresh.msgpack"
    real_write = os.write
    calls = []

    def short_then_interrupt(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_write(fd, bytes(data[: len(data) // 2]))  # a short write first

    monkeypatch.setattr(S.os, "write", short_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        make_snapshot([(1, 1, 1, 1, 1, 100)] * 3).write(target)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # A full write after a short one completes the file.
    calls.clear()
    monkeypatch.setattr(S.os, "write", lambda fd, data: real_write(fd, bytes(data[: max(1, len(data) // 3)])))
    snap = make_snapshot([(1, 1, 1, 1, 1, 100)])
    snap.write(target)
    monkeypatch.undo()
    assert S.load_snapshot(target).totals == snap.totals
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_write_snapshot_from_counters_dict(tmp_path):
    c = _core.Counters(64)
    c.add_many([1], [1], [2], [5], [3], [300])
    c.count_packets([100, 100, 100], [100, 100, 100], [0, 0, 0], [1, 1, 1])
    p = S.write_snapshot(tmp_path / "w.msgpack", c.snapshot(), start_ns=T0, end_ns=T0 + 10**9,
                         watch_labels=WATCH, peer_labels=PEER, tags=TAGS, categories=CATEGORIES,
                         sensor={"host": "h", "interfaces": "eth1"})
    s = S.load_snapshot(p)
    assert s.totals["packets"] == 3 and s.totals["bytes"] == 300
    assert s.sensor["interfaces"] == ["eth1"]
    assert by_names(s) == {("KP-allocated", "outbound", "youtube", "tor"): [3, 300]}
    with pytest.raises(TypeError):
        S.write_snapshot(tmp_path / "x.msgpack", s, start_ns=1)


def test_writer_does_not_import_pandas(tmp_path):
    code = (
        "import sys; from nkstream import _core; from nkstream.snapshot import write_snapshot\n"
        "c = _core.Counters(16); c.add_many([1], [1], [1], [0], [1], [60])\n"
        f"write_snapshot({str(tmp_path / 'p.msgpack')!r}, c.snapshot(), start_ns=0, end_ns=1,\n"
        "    watch_labels=[None, 'w'], peer_labels=[None, 'p'], tags=['unknown'], categories=['unknown'])\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert S.load_snapshot(tmp_path / "p.msgpack").totals["packets"] == 0
