"""Native counters (nkstream/core/aggregate.pxi) held against a plain dict model."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nkstream import _core

OVF = _core.OVERFLOW_KEY


class ReferenceCounters:
    """Obviously correct model: a dict of keys, refusing new keys past *max_keys*."""

    def __init__(self, max_keys):
        self.max_keys = max_keys
        self.keys = {}
        self.overflow = [0, 0, 0]

    def add(self, key, packets, nbytes, flows):
        if key != OVF and (key in self.keys or len(self.keys) < self.max_keys):
            c = self.keys.setdefault(key, [0, 0, 0])
            c[0] += packets
            c[1] += nbytes
            c[2] += flows
            return 0
        self.overflow[0] += packets
        self.overflow[1] += nbytes
        self.overflow[2] += flows
        return 1

    def rows(self):
        out = {k: tuple(v) for k, v in self.keys.items()}
        if any(self.overflow):
            out[OVF] = tuple(self.overflow)
        return out


def snapshot_rows(snap):
    c = snap["columns"]
    keys = zip(c["watch"].tolist(), c["direction"].tolist(), c["peer"].tolist(), c["tag"].tolist())
    vals = zip(c["packets"].tolist(), c["bytes"].tolist(), c["flows"].tolist())
    return dict(zip(keys, vals))


# Small label ranges make repeated keys (and so hits, misses and probing chains) common;
# occasional huge ids exercise the packing of the 32-bit halves.
labels = st.one_of(st.integers(0, 7), st.integers(0, 2**32 - 2))
keys = st.tuples(labels, st.integers(0, 3), labels, st.one_of(st.integers(0, 5), st.integers(0, 0xFFFE)))
adds = st.lists(
    st.tuples(keys, st.integers(0, 2**20), st.integers(0, 2**40), st.integers(0, 3)),
    max_size=300,
)


def apply(counters, model, stream):
    if not stream:
        return 0
    k, p, b, f = zip(*stream)
    w, d, pe, t = zip(*k)
    ovf = counters.add_many(w, d, pe, t, p, b, f)
    ovf_ref = sum(model.add(*item) for item in stream)
    assert ovf == ovf_ref
    return ovf


@settings(max_examples=200, deadline=None)
@given(capacity=st.sampled_from([2, 4, 8, 16, 1024]), stream=adds)
def test_matches_dict_model_including_overflow(capacity, stream):
    c = _core.Counters(capacity)
    model = ReferenceCounters(c.max_keys)
    apply(c, model, stream)
    assert len(c) == len(model.keys)
    snap = c.snapshot()
    assert snapshot_rows(snap) == model.rows()
    # The invariant the pipeline relies on: every add lands in exactly one row.
    cols = snap["columns"]
    assert int(cols["packets"].sum()) == sum(p for _, p, _, _ in stream)
    assert int(cols["bytes"].sum(dtype=np.uint64)) == sum(b for _, _, b, _ in stream) % 2**64
    assert snap["totals"]["overflow_packets"] == model.overflow[0]
    assert snap["totals"]["overflow_bytes"] == model.overflow[1]
    assert snap["totals"]["overflow_flows"] == model.overflow[2]
    # Sorted by key, so files are reproducible.
    order = np.lexsort((cols["tag"], cols["peer"], cols["direction"], cols["watch"]))
    assert (order == np.arange(len(order))).all()
    # reset=True zeroed everything, in place.
    assert len(c) == 0
    empty = c.snapshot()
    assert len(empty["columns"]["watch"]) == 0
    assert all(v == 0 for v in empty["totals"].values())


@settings(max_examples=100, deadline=None)
@given(a=adds, b=adds, capacity=st.sampled_from([4, 64]))
def test_merge_counters_and_snapshot_dicts(a, b, capacity):
    ca, cb = _core.Counters(capacity), _core.Counters(capacity)
    ma, mb = ReferenceCounters(ca.max_keys), ReferenceCounters(cb.max_keys)
    apply(ca, ma, a)
    apply(cb, mb, b)
    cb.add_totals({"packets": 7, "unmatched": 2})
    cb.add_errors([0, 3, 1])
    # Model of the merge: b's rows added to a's, in b's order of keys (any order gives
    # the same result while keys fit; with overflow the first keys in win, so compare
    # against the same order the table iterates: b's snapshot is sorted by key).
    expected = ReferenceCounters(ca.max_keys)
    for k, v in ma.keys.items():
        expected.keys[k] = list(v)
    expected.overflow = list(ma.overflow)
    snap_b = cb.snapshot(reset=False)
    for key, (p, by, f) in snapshot_rows(snap_b).items():
        expected.add(key, p, by, f)

    merged_dict = _core.Counters(capacity)
    merged_dict.merge(ca.snapshot(reset=False))
    merged_dict.merge(snap_b)
    got = merged_dict.snapshot()
    assert snapshot_rows(got) == expected.rows()
    assert got["totals"]["packets"] == 7 and got["totals"]["unmatched"] == 2
    assert got["errors"][:3].tolist() == [0, 3, 1]
    assert got["totals"]["overflow_packets"] == expected.overflow[0]

    # Counters into Counters: same sums; the rows agree whenever nothing overflowed
    # (table iteration order is hash order, not key order).
    ca.merge(cb)
    direct = ca.snapshot()
    cols = direct["columns"]
    assert int(cols["packets"].sum()) == sum(p for _, p, _, _ in a + b)
    assert direct["totals"]["packets"] == 7
    if expected.overflow == [0, 0, 0]:
        assert snapshot_rows(direct) == expected.rows()


class CountersMachine(RuleBasedStateMachine):
    """Interleaved adds, non-resetting snapshots, resets and merges on a tiny table."""

    def __init__(self):
        super().__init__()
        self.c = _core.Counters(8)
        self.model = ReferenceCounters(self.c.max_keys)

    @rule(stream=adds)
    def add(self, stream):
        apply(self.c, self.model, stream)

    @rule(key=keys, p=st.integers(0, 5), b=st.integers(0, 9000))
    def add_one(self, key, p, b):
        assert self.c.add_many(*([x] for x in key), [p], [b]) == self.model.add(key, p, b, 0)

    @rule()
    def peek(self):
        assert snapshot_rows(self.c.snapshot(reset=False)) == self.model.rows()

    @rule()
    def snapshot_reset(self):
        assert snapshot_rows(self.c.snapshot()) == self.model.rows()
        self.model = ReferenceCounters(self.c.max_keys)

    @rule(stream=adds)
    def merge_other(self, stream):
        other = _core.Counters(64)
        apply(other, ReferenceCounters(other.max_keys), stream)
        for key, (p, b, f) in snapshot_rows(other.snapshot(reset=False)).items():
            self.model.add(key, p, b, f)
        self.c.merge(other.snapshot())

    @invariant()
    def sizes(self):
        assert len(self.c) == len(self.model.keys) <= self.c.max_keys


TestCountersMachine = CountersMachine.TestCase
TestCountersMachine.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)


def test_overflow_key_always_goes_to_the_bucket():
    c = _core.Counters(1024)
    assert c.add_many([OVF[0]], [OVF[1]], [OVF[2]], [OVF[3]], [5], [500], [1]) == 1
    assert len(c) == 0
    snap = c.snapshot()
    assert snapshot_rows(snap) == {OVF: (5, 500, 1)}
    assert snap["totals"]["overflow_packets"] == 5


def test_capacity_rounding_memory_and_bounds():
    c = _core.Counters(1000, load_factor=0.5)
    assert c.capacity == 1024 and c.max_keys == 512
    assert c.memory_bytes >= 1024 * 40
    d = _core.Counters()
    assert d.capacity == _core.AGG_DEFAULT_CAPACITY == 262144
    assert d.max_keys == 196608
    assert 10 * 2**20 <= d.memory_bytes < 11 * 2**20
    tiny = _core.Counters(2, load_factor=0.99)
    assert tiny.max_keys == 1            # one slot always stays empty
    for bad in (0, 1, -5, 2**41):
        with pytest.raises(ValueError):
            _core.Counters(bad)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError):
            _core.Counters(16, load_factor=bad)


def test_fills_to_max_keys_then_overflows_exactly():
    c = _core.Counters(4096)
    n = c.max_keys
    ids = np.arange(n + 100, dtype=np.uint32)
    ovf = c.add_many(ids, np.ones_like(ids, dtype=np.uint8), ids, np.zeros_like(ids, dtype=np.uint16),
                     np.ones(n + 100, np.uint64), np.full(n + 100, 60, np.uint64))
    assert ovf == 100 and len(c) == n
    # Existing keys still count after the table is full.
    assert c.add_many([0], [1], [0], [0], [1], [60]) == 0
    snap = c.snapshot()
    assert snap["totals"]["overflow_packets"] == 100
    assert int(snap["columns"]["packets"].sum()) == n + 101
    assert int(snap["columns"]["bytes"].sum()) == (n + 101) * 60


def test_totals_and_error_counters_per_packet():
    c = _core.Counters(16)
    wire = [60, 1514, 90, 42]
    cap = [60, 96, 90, 42]
    err = [0, 0, 3, 70]            # 70 is beyond ERR_N: counted in the last slot
    watched = [1, 0, 1, 0]
    c.count_packets(wire, cap, err, watched)
    t = c.totals_dict()
    assert t["packets"] == 4 and t["bytes"] == sum(wire) and t["capbytes"] == sum(cap)
    assert t["decoded"] == 2 and t["error_packets"] == 2 and t["unmatched"] == 2
    e = c.errors_array()
    assert e[3] == 1 and e[63] == 1 and int(e.sum()) == 2
    with pytest.raises(ValueError):
        c.add_totals({"overflow_packets": 1})
    with pytest.raises(ValueError):
        c.add_totals({"no such total": 1})
    c.reset()
    assert all(v == 0 for v in c.totals_dict().values()) and c.errors_array().sum() == 0


def test_merge_rejects_other_types_and_self():
    c = _core.Counters(16)
    with pytest.raises(TypeError):
        c.merge([1, 2, 3])
    with pytest.raises(ValueError):
        c.merge(c)
    with pytest.raises(ValueError):
        c.add_many([1, 2], [1], [1], [1], [1], [1])


def test_total_names_layout():
    names = _core.TOTAL_NAMES
    assert names[:7] == ("packets", "bytes", "capbytes", "decoded", "unmatched",
                         "error_packets", "overflow_packets")
    assert len(names) == 16 and len(set(n for n in names if n)) == len([n for n in names if n])
