"""The native LPM held against the pure-Python reference by a Hypothesis state machine.

Rules add random prefixes of every length (/0, /32 and /128 included), prefixes nested
inside ones already present, and re-adds of existing prefixes with a new label (the
later add wins); invariants look up the boundary addresses of every prefix (first,
last, first-1, last+1) and random addresses through all three native paths
(lookup -> native single lookup, lookup_many -> the batch loop, match -> the matched
prefix) and compare with nkstream.reference.ReferencePrefixTable.
"""
import ipaddress

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nkstream.prefixes import PrefixTable
from nkstream.reference import ReferencePrefixTable

LABELS = st.sampled_from(["a", "b", "c", "KP", "AS15169", "tor", "x-y"])
BITS = {4: 32, 6: 128}


def _net(ver, addr, ln):
    bits = BITS[ver]
    net = addr & (((1 << ln) - 1) << (bits - ln)) if ln else 0
    return ipaddress.ip_network((net, ln)) if ver == 6 else ipaddress.IPv4Network((net, ln))


def _addr_text(ver, a):
    return str(ipaddress.IPv4Address(a) if ver == 4 else ipaddress.IPv6Address(a))


class LPMMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.table = PrefixTable()
        self.ref = ReferencePrefixTable()
        self.nets = []  # ipaddress networks added (with repeats)

    def _add(self, net, label):
        self.table.add(str(net), label)
        self.ref.add(str(net), label)
        self.nets.append(net)

    @rule(ver=st.sampled_from([4, 6]), data=st.data(), label=LABELS)
    def add_random(self, ver, data, label):
        bits = BITS[ver]
        # Lengths: every length possible, with the edges (/0, /bits) and the trie's
        # level boundaries (/16, /24 and their neighbours) drawn often.
        edges = [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32]
        if ver == 6:
            edges += [33, 47, 48, 63, 64, 65, 120, 127, 128]
        ln = data.draw(st.one_of(st.integers(0, bits), st.sampled_from(edges)), label="len")
        addr = data.draw(st.integers(0, (1 << bits) - 1), label="addr")
        self._add(_net(ver, addr, ln), label)

    @rule(data=st.data(), label=LABELS)
    def add_nested(self, data, label):
        if not self.nets:
            return
        outer = data.draw(st.sampled_from(self.nets), label="outer")
        bits = outer.max_prefixlen
        ln = data.draw(st.integers(outer.prefixlen, bits), label="len")
        off = data.draw(st.integers(0, outer.num_addresses - 1), label="offset")
        self._add(_net(outer.version, int(outer.network_address) + off, ln), label)

    @rule(data=st.data(), label=LABELS)
    def readd(self, data, label):
        if not self.nets:
            return
        self._add(data.draw(st.sampled_from(self.nets), label="again"), label)

    @rule(data=st.data(), labels=st.lists(LABELS, min_size=1, max_size=3))
    def merge_table(self, data, labels):
        """table.update(other): the other table's entries win on equal prefixes."""
        other = PrefixTable()
        for label in labels:
            ver = data.draw(st.sampled_from([4, 6]), label="ver")
            if self.nets and data.draw(st.booleans(), label="reuse"):
                net = data.draw(st.sampled_from(self.nets), label="same")
            else:
                bits = BITS[ver]
                net = _net(ver, data.draw(st.integers(0, (1 << bits) - 1)), data.draw(st.integers(0, bits)))
            other.add(str(net), label)
            self.ref.add(str(net), label)
            self.nets.append(net)
        ids_before = {name: self.table.label_id(name) for name in self.table.labels[1:]}
        self.table.update(other)
        # label ids are stable across merges and rebuilds
        assert all(self.table.labels[i] == name for name, i in ids_before.items())

    def _probe_addrs(self):
        out = {4: set(), 6: set()}
        for net in self.nets:
            bits = net.max_prefixlen
            first = int(net.network_address)
            last = int(net.broadcast_address)
            for a in (first, last, first - 1, last + 1, (first + last) // 2):
                if 0 <= a < (1 << bits):
                    out[net.version].add(a)
        return out

    @invariant()
    def agrees_with_reference(self):
        probes = self._probe_addrs()
        rng = np.random.default_rng(len(self.nets))
        probes[4].update(int(x) for x in rng.integers(0, 1 << 32, 64, dtype=np.uint64))
        probes[6].update(int.from_bytes(rng.bytes(16), "big") for _ in range(64))
        assert len(self.table) == len(self.ref)
        labels = self.table.labels
        for ver in (4, 6):
            addrs = sorted(probes[ver])
            if ver == 4:
                ids = self.table.lookup_many(np.array(addrs, dtype=np.uint32))
            else:
                arr = np.frombuffer(b"".join(a.to_bytes(16, "big") for a in addrs), np.uint8).reshape(-1, 16)
                ids = self.table.lookup_many(arr)
            for a, lid in zip(addrs, ids.tolist()):
                text = _addr_text(ver, a)
                want = self.ref.match(text)
                assert labels[lid] == (want[0] if want else None), (text, labels[lid], want)
                assert self.table.lookup(text) == (want[0] if want else None), text
                assert self.table.match(text) == want, text


LPMMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLPMStateMachine = LPMMachine.TestCase


def test_forced_strides_agree():
    """The 24-bit IPv4 first level (used for very large tables) gives the same answers
    as the 16-bit one, on nested prefixes around every level boundary."""
    from nkstream._core import PrefixCore

    rng = np.random.default_rng(7)
    nets, lens = [], []
    for ln in list(range(0, 33)) * 40:
        a = int(rng.integers(0, 1 << 32))
        nets.append(a & (((1 << ln) - 1) << (32 - ln)) if ln else 0)
        lens.append(ln)
    ids = np.arange(1, len(nets) + 1, dtype=np.uint32)
    n4 = np.array(nets, np.uint32)
    l4 = np.array(lens, np.uint8)
    e6 = np.zeros((0, 16), np.uint8)
    c16 = PrefixCore(n4, l4, ids, e6, np.zeros(0, np.uint8), np.zeros(0, np.uint32), stride4=16)
    c24 = PrefixCore(n4, l4, ids, e6, np.zeros(0, np.uint8), np.zeros(0, np.uint32), stride4=24)
    assert c16.stride4 == 16 and c24.stride4 == 24
    probe = np.concatenate([n4, n4 - np.uint32(1), n4 + np.uint32(1),
                            rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)])
    got16 = c16.lookup_many_v4(probe)
    got24 = c24.lookup_many_v4(probe)
    ref = ReferencePrefixTable()
    for n, ln, i in zip(nets, lens, ids.tolist()):
        ref.add(str(ipaddress.IPv4Network((n, ln))), i)
    want = [ref.lookup(str(ipaddress.IPv4Address(int(a)))) or 0 for a in probe[:3000]]
    assert got16[:3000].tolist() == want
    assert np.array_equal(got16, got24)
