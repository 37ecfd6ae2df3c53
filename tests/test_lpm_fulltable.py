"""Native LPM against references on the full 2014 IPv4 routing table (512,621 prefixes)
and the 2015 IPv6 table (27,693 prefixes).

Two references, neither sharing code with the trie:
* nkstream.reference.ReferencePrefixTable (ipaddress + a dict per length) on a sample;
* a vectorised form of the same algorithm for 1M+ addresses: for every prefix length
  from /32 down to /0, mask the addresses and binary-search the sorted networks of that
  length; the first length that hits gives the label.
The table file is parsed here with `ipaddress`, independently of the loaders.
"""
import gzip
import ipaddress

import numpy as np
import pytest

from nkstream._core import PrefixCore
from nkstream.prefixes import PrefixTable
from nkstream.reference import ReferencePrefixTable


def _parse(path, family):
    nets, lens, asns = [], [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith(";") or not line.strip():
                continue
            pfx, asn = line.split()
            net = ipaddress.ip_network(pfx)
            if net.version == family:
                nets.append(int(net.network_address))
                lens.append(net.prefixlen)
                asns.append(f"AS{int(asn)}")
    return nets, lens, asns


def _per_length_reference(nets, lens, labels, addrs):
    """Label (object array, None = no match) for each uint32 address."""
    nets = np.asarray(nets, np.uint64)
    lens = np.asarray(lens)
    labels = np.asarray(labels, dtype=object)
    a = addrs.astype(np.uint64)
    out = np.full(len(a), None, dtype=object)
    done = np.zeros(len(a), bool)
    for ln in range(32, -1, -1):
        sel = lens == ln
        if not sel.any():
            continue
        order = np.argsort(nets[sel], kind="stable")
        keys, labs = nets[sel][order], labels[sel][order]
        mask = np.uint64(((1 << ln) - 1) << (32 - ln))
        q = a & mask
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        hit = (keys[pos] == q) & ~done
        out[hit] = labs[pos[hit]]
        done |= hit
    return out


@pytest.fixture(scope="module")
def full4(data_dir):
    path = data_dir / "ipasn_20140513.dat.gz"
    nets, lens, asns = _parse(path, 4)
    assert len(nets) == 512621
    return PrefixTable.load(path), nets, lens, asns


def _addresses(nets, lens, n, seed):
    """Uniform random addresses plus the first, last, first-1 and last+1 address of a
    sample of prefixes (where tries go wrong)."""
    rng = np.random.default_rng(seed)
    uni = rng.integers(0, 1 << 32, n, dtype=np.uint64)
    k = rng.choice(len(nets), n // 8, replace=False)
    first = np.asarray(nets, np.uint64)[k]
    size = np.uint64(1) << (np.uint64(32) - np.asarray(lens, np.uint64)[k])
    last = first + size - np.uint64(1)
    edge = np.concatenate([first, last, first - np.uint64(1), last + np.uint64(1)])
    edge = edge[edge < (1 << 32)]
    return np.concatenate([uni, edge]).astype(np.uint32)


def test_full_table_1m_random_vs_vectorised_reference(full4):
    table, nets, lens, asns = full4
    addrs = _addresses(nets, lens, 1_000_000, seed=2014)
    got_ids = table.lookup_many(addrs)
    names = np.array(table.labels, dtype=object)
    got = names[got_ids]
    want = _per_length_reference(nets, lens, asns, addrs)
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, [(str(ipaddress.IPv4Address(int(addrs[i]))), got[i], want[i]) for i in bad[:5]]
    assert (got_ids != 0).sum() > 300_000     # the sample hits the table a lot


def test_full_table_sample_vs_ipaddress_reference(full4):
    table, nets, lens, asns = full4
    ref = ReferencePrefixTable()
    for n, ln, lab in zip(nets, lens, asns):
        ref.add(str(ipaddress.IPv4Network((n, ln))), lab)
    addrs = _addresses(nets, lens, 16_000, seed=5)
    for a in addrs.tolist():
        text = str(ipaddress.IPv4Address(a))
        want = ref.match(text)
        assert table.match(text) == want, text
        assert table.lookup(text) == (want[0] if want else None), text


def test_full_table_24bit_first_level_agrees(full4):
    table, nets, lens, asns = full4
    n4, l4, i4, n6, l6, i6 = table._arrays()
    c16 = table.core
    c24 = PrefixCore(n4, l4, i4, n6, l6, i6, stride4=24)
    assert c16.stride4 == 16 and c24.stride4 == 24
    addrs = _addresses(nets, lens, 1_000_000, seed=24)
    assert np.array_equal(c16.lookup_many_v4(addrs), c24.lookup_many_v4(addrs))


def test_full_ipv6_table_vs_reference(data_dir):
    path = data_dir / "ipasn6_20151101.dat.gz"
    nets, lens, asns = _parse(path, 6)
    assert len(nets) == 27693
    table = PrefixTable.load(path)
    ref = ReferencePrefixTable()
    for n, ln, lab in zip(nets, lens, asns):
        ref.add(str(ipaddress.IPv6Network((n, ln))), lab)
    rng = np.random.default_rng(6)
    addrs = []
    for k in rng.choice(len(nets), 6000, replace=False).tolist():
        first, size = nets[k], 1 << (128 - lens[k])
        addrs += [first, first + size - 1, first - 1, first + size,
                  first + int.from_bytes(rng.bytes(16), "big") % size]
    addrs += [int.from_bytes(rng.bytes(16), "big") for _ in range(5000)]
    addrs = [a for a in addrs if 0 <= a < 1 << 128]
    arr = np.frombuffer(b"".join(a.to_bytes(16, "big") for a in addrs), np.uint8).reshape(-1, 16)
    names = table.labels
    got = table.lookup_many(arr).tolist()
    for a, lid in zip(addrs, got):
        text = str(ipaddress.IPv6Address(a))
        assert names[lid] == ref.lookup(text), text
