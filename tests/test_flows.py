"""Flow state (issue 6, docs/flows.md): per-flow verdicts, pending accounting, the
bounded flow table (eviction, timeouts, FIN/RST), GRE/ESP/fragment keys, and the
native path held against the pure-Python model in tests/flow_model.py."""
import ipaddress
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nkstream import _core, synth
from nkstream.classify import (Classifier, classify_files, flow_fanout_warning,
                               resolve_flow_verdicts)
from nkstream.config import ConfigError, load_config
from nkstream.prefixes import PrefixTable
from nkstream.rules import Rules

from flow_model import PF_FRAG, PF_FRAG_FIRST, FlowModel, PyLpm  # noqa: E402

WATCH = [("10.0.0.0/8", "W"), ("10.9.0.0/16", "W2"), ("2001:db8:1::/48", "W6")]
PEERS = [("203.0.113.0/24", "P"), ("198.51.100.0/25", "Q"), ("2001:db8:2::/48", "P6")]
CLIENT, CLIENT2 = "10.0.0.1", "10.9.0.2"
SERVER, SERVER2, OTHER = "203.0.113.5", "198.51.100.7", "192.0.2.9"
CLIENT6, SERVER6 = "2001:db8:1::1", "2001:db8:2::2"
MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
SEC = 1_000_000_000
T0 = 1_767_225_600 * SEC      # 2026-01-01, capture time

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


# --- frames (RFC 791, RFC 8200, RFC 9293, RFC 768, RFC 2637 s4.1, RFC 4303) ---------

def ip(src, dst, proto, payload, ident=0, frag=0):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 6:
        return MAC + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(payload), proto, 64) \
            + s.packed + d.packed + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                      s.packed, d.packed)
    return MAC + b"\x08\x00" + hdr + payload


def tcp(src, dst, sport, dport, flags=ACK, payload=b""):
    return ip(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535,
                                       0, 0) + payload)


def udp(src, dst, sport, dport, payload=b"", ident=0, frag=0):
    return ip(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload,
              ident, frag)


def gre_pptp(src, dst, call_id, payload=b"\x00" * 20):
    # enhanced GRE: K set, version 1, protocol 0x880B, payload length, call id
    return ip(src, dst, 47, struct.pack("!HHHH", 0x2001, 0x880B, len(payload), call_id) + payload)


def esp(src, dst, spi):
    return ip(src, dst, 50, struct.pack("!II", spi, 1) + b"\x5a" * 32)


def icmp(src, dst):
    return ip(src, dst, 1, b"\x08\x00\x00\x00\x00\x01\x00\x01" + b"x" * 16)


def hello(sni="r3---sn-abc.googlevideo.com"):
    return synth.tls_client_hello(sni, random.Random(1).randbytes)


def batch(packets):
    """[(ts_ns, frame)] -> (data, recs)."""
    data = b"".join(f for _, f in packets)
    recs = np.zeros(len(packets), dtype=_core.REC_DTYPE)
    off = 0
    for i, (ts, f) in enumerate(packets):
        recs[i]["ts_ns"] = ts
        recs[i]["off"] = off
        recs[i]["caplen"] = recs[i]["wirelen"] = len(f)
        recs[i]["linktype"] = 1
        off += len(f)
    return np.frombuffer(data, dtype=np.uint8).copy() if data else np.zeros(0, np.uint8), recs


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env():
    watch, peers = PrefixTable(), PrefixTable()
    for c, lab in WATCH:
        watch.add(c, lab)
    for c, lab in PEERS:
        peers.add(c, lab)
    rules = Rules.load()
    rc = rules.compile(peers)
    return {"watch": watch, "peers": peers, "rules": rules, "rc": rc}


def make(env, capacity=1 << 12, flows=True, **opts):
    counters = _core.Counters(1 << 12)
    ft = _core.FlowTable(capacity, **opts) if flows else None
    core = _core.Classifier(env["watch"].core, env["peers"].core, env["rc"], counters, ft)
    return core, counters, ft


def rows(snap):
    c = snap["columns"]
    out = {}
    for i in range(len(c["watch"])):
        k = (int(c["watch"][i]), int(c["direction"][i]), int(c["peer"][i]), int(c["tag"][i]))
        out[k] = (int(c["packets"][i]), int(c["bytes"][i]), int(c["flows"][i]))
    return out


def check_invariants(snap, packets, nbytes):
    c, t = snap["columns"], snap["totals"]
    assert t["packets"] == packets and t["bytes"] == nbytes
    assert int(c["packets"].sum()) == packets
    assert int(c["bytes"].sum()) == nbytes
    assert int(c["flows"].sum()) == t["flows"]


def close(core, counters):
    core.close_window()
    return counters.snapshot()


def tid(env, name):
    return env["rules"].tag_id(name)


def lid(env, table, name):
    return list(env[table].labels).index(name)


def tls_flow(t0=T0, sport=40000, server=SERVER, sni="r3---sn-abc.googlevideo.com"):
    """Handshake, then the ClientHello as the client's third packet (the flow's
    fourth), then server data and client ACKs: both directions."""
    c, s = CLIENT, server
    return [
        (t0, tcp(c, s, sport, 443, SYN)),
        (t0 + 1_000_000, tcp(s, c, 443, sport, SYN | ACK)),
        (t0 + 2_000_000, tcp(c, s, sport, 443, ACK)),
        (t0 + 3_000_000, tcp(c, s, sport, 443, PSH | ACK, hello(sni))),
        (t0 + 4_000_000, tcp(s, c, 443, sport, PSH | ACK, b"\x16\x03\x03\x00\x10" + b"s" * 16)),
        (t0 + 5_000_000, tcp(s, c, 443, sport, PSH | ACK, b"\x17\x03\x03\x04\x00" + b"v" * 1024)),
        (t0 + 6_000_000, tcp(c, s, sport, 443, ACK)),
        (t0 + 7_000_000, tcp(s, c, 443, sport, PSH | ACK, b"\x17\x03\x03\x04\x00" + b"v" * 1024)),
    ]


# --- hand-built flows ------------------------------------------------------------------

def test_verdict_on_a_later_packet_covers_the_whole_flow_both_directions(env):
    pk = tls_flow()
    data, recs = batch(pk)
    core, counters, ft = make(env)
    core.process(data, recs)
    snap = close(core, counters)
    nbytes = sum(len(f) for _, f in pk)
    check_invariants(snap, len(pk), nbytes)
    video, yt, w = tid(env, "video-stream"), lid(env, "peers", "youtube"), lid(env, "watch", "W")
    out_b = sum(len(f) for _, f in pk if f[26:30] == ipaddress.ip_address(CLIENT).packed)
    assert rows(snap) == {
        (w, 1, yt, video): (4, out_b, 1),            # outbound: SYN, ACK, hello, ACK
        (w, 2, yt, video): (4, nbytes - out_b, 0),   # inbound: SYN-ACK and data
    }
    t = snap["totals"]
    assert (t["flows"], t["flows_active"], t["pending_packets"], t["flow_evictions"]) == (1, 1, 0, 0)

    # flow state off: only the hello itself is video; the rest is https to P
    core0, counters0, _ = make(env, flows=False)
    core0.process(data, recs)
    r0 = rows(counters0.snapshot())
    assert r0[(w, 1, yt, video)][0] == 1
    assert r0[(w, 1, lid(env, "peers", "P"), tid(env, "https"))][0] == 3


def test_window_closing_before_the_verdict_counts_pending(env):
    pk = tls_flow()
    core, counters, ft = make(env)
    d1, r1 = batch(pk[:2])                        # SYN, SYN-ACK ... then the window closes
    core.process(d1, r1)
    s1 = close(core, counters)
    check_invariants(s1, 2, sum(len(f) for _, f in pk[:2]))
    https, p, w = tid(env, "https"), lid(env, "peers", "P"), lid(env, "watch", "W")
    assert rows(s1) == {(w, 1, p, https): (1, len(pk[0][1]), 1),
                        (w, 2, p, https): (1, len(pk[1][1]), 0)}
    t1 = s1["totals"]
    assert (t1["pending_packets"], t1["pending_bytes"]) == (2, len(pk[0][1]) + len(pk[1][1]))
    assert (t1["flows"], t1["flows_active"]) == (1, 1)

    d2, r2 = batch(pk[2:])                        # ACK, hello, data: next window
    core.process(d2, r2)
    s2 = close(core, counters)
    check_invariants(s2, len(pk) - 2, sum(len(f) for _, f in pk[2:]))
    video, yt = tid(env, "video-stream"), lid(env, "peers", "youtube")
    assert set(rows(s2)) == {(w, 1, yt, video), (w, 2, yt, video)}
    assert sum(v[2] for v in rows(s2).values()) == 0          # started in window 1
    assert (s2["totals"]["flows"], s2["totals"]["pending_packets"]) == (0, 0)


def test_flow_ending_before_a_verdict_is_pending_under_its_own_tag(env):
    core, counters, ft = make(env, udp_timeout=10)
    pk = [(T0, udp(CLIENT, SERVER, 5000, 53, b"\x12\x34\x01\x00" + b"\x00" * 12))]
    pk.append((T0 + 11 * SEC, udp(CLIENT, SERVER, 5000, 53, b"\x12\x35\x01\x00" + b"\x00" * 12)))
    data, recs = batch(pk)
    core.process(data, recs)
    snap = close(core, counters)
    check_invariants(snap, 2, sum(len(f) for _, f in pk))
    t = snap["totals"]
    assert (t["flows"], t["flow_timeouts"], t["flows_active"]) == (2, 1, 1)
    # both single packets ended pending: one at the timeout, one at the window close
    assert t["pending_packets"] == 2
    assert rows(snap) == {(lid(env, "watch", "W"), 1, lid(env, "peers", "P"), tid(env, "dns")):
                          (2, sum(len(f) for _, f in pk), 2)}


def test_give_up_after_the_inspection_budget(env):
    core, counters, ft = make(env, inspect_packets=2)
    pk = [(T0 + i * 1000, tcp(CLIENT, SERVER, 40001, 443, ACK, b"x" * 10)) for i in range(3)]
    pk += [(T0 + 5000 + i * 1000, tcp(SERVER, CLIENT, 443, 40001, ACK, b"y" * 10)) for i in range(3)]
    data, recs = batch(pk)
    core.process(data, recs)
    (e,) = ft.entries()
    assert e["state"] & _core.FLOW_STATE_NAMES["gaveup"]
    assert not e["state"] & _core.FLOW_STATE_NAMES["strong"]
    # after giving up, later packets keep the flow's fallback tag per direction
    # (port 443: https) without being inspected: a payload signature is no longer
    # looked for, as nDPI stops at giving up
    late = [(T0 + 20_000, tcp(CLIENT, SERVER, 40001, 443, PSH | ACK,
                              synth.bitcoin_msg("version", b"\x00" * 40))),
            (T0 + 21_000, tcp(SERVER, CLIENT, 443, 40001, PSH | ACK,
                              synth.bitcoin_msg("verack", b"")))]
    d2, r2 = batch(late)
    core.process(d2, r2)
    snap = close(core, counters)
    check_invariants(snap, 8, sum(len(f) for _, f in pk + late))
    assert snap["totals"]["pending_packets"] == 0       # given up within the window
    w, p = lid(env, "watch", "W"), lid(env, "peers", "P")
    assert {k: v[0] for k, v in rows(snap).items()} == {
        (w, 1, p, tid(env, "https")): 4, (w, 2, p, tid(env, "https")): 4}
    # with flows off the same packets are tagged one by one
    core_off, counters_off, _ = make(env, flows=False)
    ann = core_off.annotate(d2, r2)
    assert [int(x) for x in ann["tag"]] == [tid(env, "bitcoin")] * 2

    # one packet fewer before it: the budget (2 per direction) is not spent, so the
    # bitcoin message fixes the verdict of the whole flow
    core, counters, ft = make(env, inspect_packets=2)
    pk2 = pk[:2] + pk[3:4] + [(T0 + 20_000, late[0][1])]
    d3, r3 = batch(pk2)
    core.process(d3, r3)
    snap = close(core, counters)
    assert {k: v[0] for k, v in rows(snap).items()} == {
        (w, 1, p, tid(env, "bitcoin")): 3, (w, 2, p, tid(env, "bitcoin")): 1}


def test_eviction_under_a_tiny_table(env):
    core, counters, ft = make(env, capacity=16)
    assert ft.capacity == 16
    pk = [(T0 + i * 1000, udp(CLIENT, SERVER, 10000 + i, 9999, b"q")) for i in range(200)]
    data, recs = batch(pk)
    core.process(data, recs)
    assert len(ft) <= 16
    snap = close(core, counters)
    check_invariants(snap, 200, sum(len(f) for _, f in pk))
    t = snap["totals"]
    assert t["flows"] == 200
    assert t["flow_evictions"] == 200 - t["flows_active"]
    assert t["flows_active"] == len(ft) <= 16
    # every flow's single packet was pending: evicted ones and the rest at the close
    assert t["pending_packets"] == 200
    # the probe-run invariant: each entry lies within FLOW_PROBE_MAX of its home
    for e in ft.entries():
        assert (e["slot"] - e["home"]) % 16 < min(16, _core.FLOW_PROBE_WINDOW)
    assert ft.check() == []
    # the bound does not move with the traffic: 16 slots (and their fingerprint
    # bytes) whatever was seen
    assert 16 * 65 + 64 + _core.FLOW_FRAG_SLOTS * 48 <= ft.memory_bytes <= (
        16 * 65 + 64 + _core.FLOW_FRAG_SLOTS * 48 + 256)
    assert _core.FLOW_ENTRY_BYTES == 64


@pytest.mark.parametrize("capacity", [16, 32, 64, 1024])
def test_probe_runs_stay_whole_through_evictions_and_timeouts(env, capacity):
    # After flows start, are evicted (the table runs full), time out (the sweep
    # deletes them, shifting entries back: flow_delete) and restart, every flow
    # still lies within its probe window with no empty slot between it and its
    # home, so its later packets find it.  Batches of 3 x capacity packets let
    # the table fill within a batch; small tables put most runs across the wrap.
    # (Before the table kept one slot empty, a deletion from a full table broke
    # runs: FlowTable.check() failed here at every capacity but 16.)
    # The same in both prefetch modes and switching between them every batch (the
    # fingerprints kept in both, checked by check()): the invariants hold after
    # every batch, and every window counts exactly the same.
    runs = {}
    for mode in ("home", "deep", "switch"):
        rng = np.random.default_rng(capacity)
        core, counters, ft = make(env, capacity=capacity, udp_timeout=1, tcp_timeout=2)
        ft.prefetch = "home" if mode == "switch" else mode
        ts = T0
        windows = []
        for rnd in range(12):
            if mode == "switch":
                ft.prefetch = ("home", "deep")[rnd % 2]
            pk = []
            for _ in range(3 * capacity):
                ts += int(rng.integers(1, 60_000_000))
                i = int(rng.integers(0, 4 * capacity))
                if rng.random() < 0.5:
                    f = udp(CLIENT, SERVER, 10000 + i, 9999, b"q")
                else:
                    f = tcp(SERVER, CLIENT, 443, 20000 + i,
                            flags=ACK if rng.random() < 0.7 else SYN)
                pk.append((ts, f))
            data, recs = batch(pk)
            core.process(data, recs)
            assert ft.deep_now == (mode == "deep" or (mode == "switch" and rnd % 2 == 1))
            assert ft.check() == [], (mode, rnd)
            assert len(ft) < capacity
            if rnd % 4 == 3:
                snap = close(core, counters)
                assert ft.check() == []
                windows.append((rows(snap), snap["totals"]))
        runs[mode] = windows
    assert runs["home"] == runs["deep"] == runs["switch"]
    assert runs["home"][0][1]["flow_evictions"] > 0       # the table did run full


def test_prefetch_mode_setting():
    ft = _core.FlowTable(1 << 12)
    assert ft.prefetch == "auto" and not ft.deep_now
    assert ft.deep_bytes > 0
    ft.prefetch = "deep"
    assert ft.prefetch == "deep"
    with pytest.raises(ValueError):
        ft.prefetch = "fast"


def test_memory_is_fixed_by_the_capacity(env):
    ft = _core.FlowTable(1000)
    assert ft.capacity == 1024
    # a 64-byte slot and a fingerprint byte per flow, the first-fragment table, a
    # header and the fingerprints' 64-byte tail
    assert 1024 * 65 + 4096 * 48 + 64 <= ft.memory_bytes <= 1024 * 65 + 4096 * 48 + 64 + 256
    with pytest.raises(ValueError):
        _core.FlowTable(8)
    with pytest.raises(ValueError):
        _core.FlowTable(64, udp_timeout=0)
    with pytest.raises(ValueError):
        _core.FlowTable(64, inspect_packets=200)


def test_timeouts_by_protocol_with_synthetic_timestamps(env):
    core, counters, ft = make(env)
    pk = [
        (T0, udp(CLIENT, SERVER, 5001, 9999, b"a")),
        (T0 + 119 * SEC, udp(SERVER, CLIENT, 9999, 5001, b"b")),    # same flow (reply)
        (T0 + 240 * SEC, udp(CLIENT, SERVER, 5001, 9999, b"c")),    # 121 s idle: new
        (T0, tcp(CLIENT2, SERVER, 40002, 80, ACK)),
        (T0 + 299 * SEC, tcp(CLIENT2, SERVER, 40002, 80, ACK)),     # same
        (T0 + 600 * SEC, tcp(SERVER, CLIENT2, 80, 40002, ACK)),     # 301 s idle: new
        (T0, icmp(CLIENT, SERVER2)),
        (T0 + 59 * SEC, icmp(SERVER2, CLIENT)),                     # same
        (T0 + 120 * SEC, icmp(CLIENT, SERVER2)),                    # 61 s idle: new
    ]
    pk.sort(key=lambda x: x[0])
    data, recs = batch(pk)
    core.process(data, recs)
    snap = close(core, counters)
    t = snap["totals"]
    check_invariants(snap, len(pk), sum(len(f) for _, f in pk))
    # 6 flow starts; at the close (t = 600 s) the UDP (240 s) and ICMP (120 s) flows
    # started last are idle past their timeouts too
    assert t["flows"] == 6
    assert t["flow_timeouts"] == 3 + 2
    assert t["flows_active"] == 1


def test_configurable_timeouts(env):
    core, counters, ft = make(env, udp_timeout=1.5)
    pk = [(T0, udp(CLIENT, SERVER, 5002, 9999, b"a")),
          (T0 + 1_400_000_000, udp(CLIENT, SERVER, 5002, 9999, b"b")),
          (T0 + 3_000_000_000, udp(CLIENT, SERVER, 5002, 9999, b"c"))]
    data, recs = batch(pk)
    core.process(data, recs)
    t = close(core, counters)["totals"]
    assert (t["flows"], t["flow_timeouts"]) == (2, 1)     # 1.6 s idle > 1.5 s


def test_fin_and_rst_close_a_tcp_flow_early(env):
    core, counters, ft = make(env)
    pk = [
        (T0, tcp(CLIENT, SERVER, 40010, 80, SYN)),
        (T0 + SEC, tcp(SERVER, CLIENT, 80, 40010, RST | ACK)),
        (T0 + 7 * SEC, tcp(CLIENT, SERVER, 40010, 80, ACK)),          # after 5 s linger: new
        (T0, tcp(CLIENT, SERVER, 40011, 80, SYN)),
        (T0 + SEC, tcp(CLIENT, SERVER, 40011, 80, FIN | ACK)),
        (T0 + 2 * SEC, tcp(SERVER, CLIENT, 80, 40011, FIN | ACK)),
        (T0 + 4 * SEC, tcp(CLIENT, SERVER, 40011, 80, ACK)),          # within 5 s: same
        (T0 + 4 * SEC + 1, tcp(CLIENT, SERVER, 40011, 80, SYN)),      # reopened: new
        (T0, tcp(CLIENT, SERVER, 40012, 80, SYN)),
        (T0 + SEC, tcp(CLIENT, SERVER, 40012, 80, FIN | ACK)),        # one FIN: half-closed
        (T0 + 30 * SEC, tcp(SERVER, CLIENT, 80, 40012, ACK)),         # still the same flow
    ]
    pk.sort(key=lambda x: x[0])
    data, recs = batch(pk)
    core.process(data, recs)
    snap = close(core, counters)
    check_invariants(snap, len(pk), sum(len(f) for _, f in pk))
    t = snap["totals"]
    assert t["flows"] == 5
    # 40010 timed out at its second packet; at the close (30 s) the reopened 40011
    # (a bare SYN: not closed, 300 s) stays, the second 40010 flow stays
    assert t["flow_timeouts"] == 1
    assert t["flows_active"] == 3


def test_gre_call_id_and_esp_spi_are_part_of_the_key(env):
    core, counters, ft = make(env)
    pk = [
        (T0, gre_pptp(CLIENT, SERVER, 7)),
        (T0 + 1, gre_pptp(SERVER, CLIENT, 7)),      # same call id back: same flow
        (T0 + 2, gre_pptp(CLIENT, SERVER, 8)),      # another call
        (T0 + 3, esp(CLIENT, SERVER, 0x1001)),
        (T0 + 4, esp(CLIENT, SERVER, 0x1001)),
        (T0 + 5, esp(SERVER, CLIENT, 0x2002)),      # the reverse SA: its own flow
    ]
    data, recs = batch(pk)
    core.process(data, recs)
    ents = sorted((e["proto"], e["ports"]) for e in ft.entries())
    assert ents == [(47, 7), (47, 8), (50, 0x1001), (50, 0x2002)]
    snap = close(core, counters)
    check_invariants(snap, 6, sum(len(f) for _, f in pk))
    r = rows(snap)
    w, p = lid(env, "watch", "W"), lid(env, "peers", "P")
    assert r[(w, 1, p, tid(env, "gre-pptp"))][2] == 2
    assert r[(w, 1, p, tid(env, "esp"))][2] == 1


def test_later_fragments_follow_their_first_fragment(env):
    core, counters, ft = make(env)
    ch = hello()
    seg = struct.pack("!HHIIBBHHH", 40020, 443, 1, 1, 5 << 4, PSH | ACK, 65535, 0, 0) + ch
    first, rest = seg[:208], seg[208:]                       # 8-byte aligned cut
    pk = [
        (T0, tcp(CLIENT, SERVER, 40020, 443, SYN)),
        (T0 + 1, ip(CLIENT, SERVER, 6, first, ident=0x4242, frag=0x2000)),          # MF
        (T0 + 2, ip(CLIENT, SERVER, 6, rest, ident=0x4242, frag=len(first) // 8)),  # last
        (T0 + 3, ip(CLIENT, SERVER, 6, rest, ident=0x9999, frag=len(first) // 8)),  # orphan
    ]
    data, recs = batch(pk)
    cols = _core.decode_columns(data, recs)
    assert list(cols["frag_id"][1:]) == [0x4242, 0x4242, 0x9999]
    assert cols["flags"][2] & PF_FRAG and not cols["flags"][2] & PF_FRAG_FIRST
    core.process(data, recs)
    snap = close(core, counters)
    check_invariants(snap, 4, sum(len(f) for _, f in pk))
    r = rows(snap)
    w, yt, video = lid(env, "watch", "W"), lid(env, "peers", "youtube"), tid(env, "video-stream")
    # the SNI lies in the first fragment: the verdict covers the SYN before it and
    # the later fragment after it (one flow); the orphan (its first fragment never
    # seen) is counted alone on its per-packet tag, no flow
    assert _core.extract_sni(first[20:]) == "r3---sn-abc.googlevideo.com"
    assert len(ft) == 1 and snap["totals"]["flows"] == 1
    assert r[(w, 1, yt, video)] == (3, sum(len(f) for _, f in pk[:3]), 1)
    orphan = [(k, v) for k, v in r.items() if k != (w, 1, yt, video)]
    assert len(orphan) == 1 and orphan[0][1] == (1, len(pk[3][1]), 0)
    assert orphan[0][0][3] != video

    # flows off: only the first fragment (the hello) is video
    core0, counters0, _ = make(env, flows=False)
    core0.process(data, recs)
    assert rows(counters0.snapshot())[(w, 1, yt, video)][0] == 1


def test_first_fragment_verdict_applies_to_later_fragments(env):
    core, counters, ft = make(env)
    big = b"\x17\x03\x03\x05\x00" + b"z" * 1280
    seg = struct.pack("!HHHH", 5555, 3478, 8 + 1200, 0) + b"\x00\x01" + b"\x00" * 1198
    first, rest = seg[:1000], seg[1000:]
    pk = [
        (T0, ip(CLIENT, SERVER, 17, first, ident=7, frag=0x2000)),
        (T0 + 1, ip(CLIENT, SERVER, 17, rest, ident=7, frag=1000 // 8)),
        (T0 + 2, tcp(CLIENT, SERVER2, 40030, 443, ACK, big)),
    ]
    data, recs = batch(pk)
    core.process(data, recs)
    snap = close(core, counters)
    check_invariants(snap, 3, sum(len(f) for _, f in pk))
    assert snap["totals"]["flows"] == 2
    ents = {e["proto"]: e for e in ft.entries()}
    assert ents[17]["ports"] == (5555 << 16) | 3478
    assert sum(ents[17]["seen"]) == 2                          # both fragments in the flow


def test_ipv6_flow_both_directions(env):
    core, counters, ft = make(env)
    pk = [(T0, tcp(CLIENT6, SERVER6, 40040, 443, SYN)),
          (T0 + 1, tcp(SERVER6, CLIENT6, 443, 40040, SYN | ACK)),
          (T0 + 2, tcp(CLIENT6, SERVER6, 40040, 443, PSH | ACK, hello("x.googlevideo.com"))),
          (T0 + 3, tcp(SERVER6, CLIENT6, 443, 40040, ACK, b"d" * 500))]
    data, recs = batch(pk)
    core.process(data, recs)
    snap = close(core, counters)
    check_invariants(snap, 4, sum(len(f) for _, f in pk))
    video, yt, w6 = tid(env, "video-stream"), lid(env, "peers", "youtube"), lid(env, "watch", "W6")
    assert {k: v[0] for k, v in rows(snap).items()} == {(w6, 1, yt, video): 2, (w6, 2, yt, video): 2}


def test_flush_counts_pending_and_empties_the_table(env):
    core, counters, ft = make(env)
    pk = tls_flow()[:2]
    data, recs = batch(pk)
    core.process(data, recs)
    assert core.flush() == 1
    assert len(ft) == 0
    snap = counters.snapshot()
    check_invariants(snap, 2, sum(len(f) for _, f in pk))
    assert snap["totals"]["pending_packets"] == 2


def test_swapped_tables_apply_to_established_flows(env):
    """A flow looks its addresses up once and keeps the answers; after a table swap
    (SIGHUP reload) its next packets, both directions, use the new tables."""
    def named(snap, watch, peers):
        return {(watch.labels[k[0]], _core.DIRECTION_NAMES[k[1]], peers.labels[k[2]]): v[0]
                for k, v in rows(snap).items()}

    c, s = CLIENT, SERVER
    pk = [(T0, tcp(c, s, 40100, 5001, SYN)), (T0 + 1000, tcp(s, c, 5001, 40100, SYN | ACK)),
          (T0 + 2000, tcp(c, s, 40100, 5001, ACK))]
    later = [(T0 + 3000, tcp(c, s, 40100, 5001, ACK)), (T0 + 4000, tcp(s, c, 5001, 40100, ACK)),
             (T0 + 5000, tcp(c, s, 40100, 5001, ACK)), (T0 + 6000, tcp(s, c, 5001, 40100, ACK))]
    core, counters, ft = make(env)
    core.process(*batch(pk))
    core.close_window()
    assert named(counters.snapshot(), env["watch"], env["peers"]) == {
        ("W", "outbound", "P"): 2, ("W", "inbound", "P"): 1}
    # New tables whose ids mean other things: a stale cached id would name Y / Q2.
    watch2, peers2 = PrefixTable(), PrefixTable()
    watch2.add("10.9.0.0/16", "Y")          # id 1, W's old id
    watch2.add("10.0.0.0/16", "X")
    peers2.add("198.51.100.0/25", "Q2")     # id 1, P's old id
    peers2.add("203.0.113.0/26", "Z")
    core.swap_tables(watch2.core, peers2.core, env["rules"].compile(peers2))
    core.process(*batch(later))
    core.close_window()
    assert len(ft) == 1
    assert named(counters.snapshot(), watch2, peers2) == {
        ("X", "outbound", "Z"): 2, ("X", "inbound", "Z"): 2}


def test_flows_off_path_is_per_packet(env):
    pk = tls_flow() + [(T0 + SEC, udp(CLIENT, SERVER, 5, 53, b"\x00" * 12))]
    data, recs = batch(pk)
    core, counters, _ = make(env, flows=False)
    core.process(data, recs)
    assert core.close_window() == 0
    snap = counters.snapshot()
    ann = core.annotate(data, recs)
    want = {}
    for i, (_, f) in enumerate(pk):
        k = (int(ann["watch"][i]), int(ann["direction"][i]), int(ann["peer"][i]), int(ann["tag"][i]))
        a = want.setdefault(k, [0, 0, 0])
        a[0] += 1
        a[1] += len(f)
    assert rows(snap) == {k: tuple(v) for k, v in want.items()}
    assert snap["totals"]["flows"] == 0


# --- the native path against the model --------------------------------------------------

HOSTS4 = [CLIENT, CLIENT2, SERVER, SERVER2, OTHER]
PAYLOADS = [b"", b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None, b"\x00" * 30,
            synth.bitcoin_msg("version", b"\x00" * 40), synth.bitcoin_msg("verack", b""),
            b'{"id":1,"method":"mining.subscribe","params":[]}\n']


def _packet(kind, a, b, sp, dp, flags, pl, ident):
    if pl is None:
        pl = hello("cdn.googlevideo.com" if ident % 2 else "www.baidu.com")
    if kind == "tcp":
        return [tcp(a, b, sp, dp, flags, pl)]
    if kind == "udp":
        return [udp(a, b, sp, dp, pl)]
    if kind == "gre":
        return [gre_pptp(a, b, sp)]
    if kind == "esp":
        return [esp(a, b, sp)]
    if kind == "icmp":
        return [icmp(a, b)]
    if kind == "tcp6":
        return [tcp(CLIENT6 if a in (CLIENT, CLIENT2) else SERVER6,
                    SERVER6 if a in (CLIENT, CLIENT2) else CLIENT6, sp, dp, flags, pl)]
    # "frag": a UDP datagram in two fragments, the first sometimes left out
    seg = struct.pack("!HHHH", sp, dp, 8 + 40, 0) + b"f" * 40
    out = [ip(a, b, 17, seg[:24], ident=ident, frag=0x2000)] if flags & 1 else []
    return out + [ip(a, b, 17, seg[24:], ident=ident, frag=3)]


op = st.tuples(
    st.sampled_from(["tcp", "tcp", "tcp", "udp", "udp", "gre", "esp", "icmp", "tcp6", "frag"]),
    st.sampled_from(HOSTS4[:2]), st.sampled_from(HOSTS4[2:4]),
    st.booleans(),                                   # reverse direction
    st.sampled_from([443, 53, 8333]),
    st.sampled_from([SYN, SYN | ACK, ACK, ACK, PSH | ACK, PSH | ACK, FIN | ACK, RST]),
    st.sampled_from(PAYLOADS),
    st.sampled_from([0, 0, 0, 1_000_000, 1_000_000, SEC, 3 * SEC, 6 * SEC, 65 * SEC,
                     125 * SEC, 310 * SEC]),
    st.integers(0, 9),                               # 0: close the window after; 1: batch cut
)


def _model_packets(env, data, recs, core):
    cols = _core.decode_columns(data, recs)
    ann = core.annotate(data, recs)
    out = []
    for i in range(len(recs)):
        ipver = int(cols["ipver"][i])
        src16, dst16 = bytes(cols["src"][i]), bytes(cols["dst"][i])
        conv = (lambda b: ipaddress.ip_address(b[:4])) if ipver == 4 else ipaddress.ip_address
        out.append({
            "ts_ns": int(recs["ts_ns"][i]), "wirelen": int(recs["wirelen"][i]),
            "ipver": ipver, "proto": int(cols["proto"][i]), "flags": int(cols["flags"][i]),
            "sport": int(cols["sport"][i]), "dport": int(cols["dport"][i]),
            "src": conv(src16) if ipver else None, "dst": conv(dst16) if ipver else None,
            "src16": src16, "dst16": dst16, "frag_id": int(cols["frag_id"][i]),
            "spi": int(cols["spi"][i]), "gre_key": int(cols["gre_key"][i]),
            "tcp_flags": int(cols["tcp_flags"][i]),
            "tag": int(ann["tag"][i]), "sni": int(ann["sni"][i]), "strong": int(ann["strong"][i]),
        })
    return out


@pytest.mark.parametrize("prefetch", ["home", "deep"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=60), st.sampled_from([2, 3, 10]))
def test_native_flow_state_matches_the_model(env, prefetch, ops, n_inspect):
    opts = dict(inspect_packets=n_inspect, inspect_bytes=3000, tcp_timeout=300,
                tcp_closed_timeout=5, udp_timeout=120, other_timeout=60)
    core, counters, ft = make(env, capacity=1 << 16, **opts)
    ft.prefetch = prefetch
    model = FlowModel(PyLpm(WATCH, env["watch"].labels), PyLpm(PEERS, env["peers"].labels),
                      lambda proto, sp, dp, peer: _core.tag_fields(env["rc"], proto=proto,
                                                                   sport=sp, dport=dp,
                                                                   peer_label=peer)[0],
                      dict(opts))
    ts = T0
    pending = []
    windows_native, windows_model, windows_ann = [], [], []
    checked = []
    parts = []

    def run(cut_window):
        if pending:
            data, recs = batch(pending)
            # annotate_flows counts exactly as process() does, and says per packet
            # how; every other window goes through process() itself
            if len(windows_native) % 2 == 0:      # every other window
                parts.append(core.annotate_flows(data, recs))
            else:
                core.process(data, recs)
                parts.append(None)
            for pk in _model_packets(env, data, recs, core):
                model.packet(pk)
            pending.clear()
        if cut_window:
            windows_native.append(close(core, counters))
            windows_model.append(model.close_window())
            windows_ann.append(list(parts))
            parts.clear()

    for n, (kind, a, b, rev, port, flags, pl, gap, ctl) in enumerate(ops):
        ts += gap
        sp, dp = (40000 + port % 7, port) if kind != "gre" and kind != "esp" else (port, 0)
        src, dst = (b, a) if rev else (a, b)
        if rev:
            sp, dp = (dp, sp) if kind not in ("gre", "esp") else (sp, dp)
        for f in _packet(kind, src, dst, sp, dp, flags, pl, n + 1):
            pending.append((ts, f))
        if ctl <= 1:
            run(ctl == 0)
    run(True)
    for snap, (mrows, mtot), ann in zip(windows_native, windows_model, windows_ann):
        t = snap["totals"]
        assert rows(snap) == mrows
        if ann and all(a is not None for a in ann):
            checked.append(1)
            # the per-packet account, pending packets resolved, sums to the rows
            resolve_flow_verdicts(ann)
            per = {}
            for a in ann:
                for i in range(len(a["tag"])):
                    k = (int(a["watch"][i]), int(a["direction"][i]), int(a["peer"][i]),
                         int(a["tag"][i]))
                    per[k] = per.get(k, 0) + 1
            assert per == {k: v[0] for k, v in mrows.items() if v[0]}
        for name, v in mtot.items():
            assert t[name] == v, name
        assert int(snap["columns"]["packets"].sum()) == t["packets"]
        assert int(snap["columns"]["bytes"].sum()) == t["bytes"]
        assert int(snap["columns"]["flows"].sum()) == t["flows"]
    assert len(ft) == len(model.flows)
    assert ft.check() == []
    assert checked                                  # window 0 always is annotated


# --- wiring -----------------------------------------------------------------------------

def test_classify_files_closes_windows_with_invariants(env, tmp_path):
    pk = []
    for i in range(20):
        pk += tls_flow(T0 + i * 7 * SEC, sport=41000 + i)
    pk.sort(key=lambda x: x[0])
    path = tmp_path / "flows.pcap"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for ts, f in pk:
            fh.write(struct.pack("<IIII", ts // SEC, ts % SEC, len(f), len(f)) + f)
    clf = Classifier(env["watch"], env["peers"], env["rules"], flow_capacity=1024)
    wins = classify_files([str(path)], clf, interval=30)
    assert len(wins) >= 5
    total_p = total_f = 0
    for start, end, snap in wins:
        c, t = snap["columns"], snap["totals"]
        assert int(c["packets"].sum()) == t["packets"] and int(c["bytes"].sum()) == t["bytes"]
        assert int(c["flows"].sum()) == t["flows"]
        total_p += t["packets"]
        total_f += t["flows"]
    assert (total_p, total_f) == (len(pk), 20)
    video = tid(env, "video-stream")
    assert all(int(t) == video for _, _, s in wins for t in s["columns"]["tag"])


def test_config_flow_options(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[flows]\nenabled = true\ncapacity = 4096\nudp_timeout = 30\ninspect_packets = 4\n")
    cfg = load_config(str(p))
    assert cfg.flow_options == {"udp_timeout": 30.0, "inspect_packets": 4}
    clf = Classifier.from_config(cfg)
    assert clf.flow_table.settings["udp_timeout"] == 30.0
    assert clf.flow_table.capacity == 4096
    assert Classifier.from_config(cfg, flows=False).flow_table is None
    p.write_text("[flows]\ninspect_packets = 500\n")
    with pytest.raises(ConfigError, match="flows.inspect_packets"):
        load_config(str(p))


def test_fanout_warning():
    assert flow_fanout_warning("hash", True) is None
    assert flow_fanout_warning("cpu", False) is None
    assert flow_fanout_warning("lb", True, workers=1) is None
    for mode in ("cpu", "lb"):
        w = flow_fanout_warning(mode, True)
        assert mode in w and "hash" in w


def test_classify_cli_shows_flows(capsys):
    from nkstream.cli import main

    assert main(["classify", "--sample", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "flows " in out and "active" in out
    assert main(["classify", "--sample", "--no-progress", "--no-flows"]) == 0
    out = capsys.readouterr().out
    assert "evicted" not in out


def test_annotate_flows_resolves_pending_packets_to_the_verdict(env):
    pk = tls_flow()
    core, counters, ft = make(env)
    d1, r1 = batch(pk[:3])
    d2, r2 = batch(pk[3:])
    parts = [core.annotate_flows(d1, r1), core.annotate_flows(d2, r2)]
    assert list(parts[0]["pending"]) == [1, 1, 1]
    assert parts[1]["verdict_fid"][0] == parts[0]["fid"][0] != 0
    resolve_flow_verdicts(parts)
    video, yt = tid(env, "video-stream"), lid(env, "peers", "youtube")
    assert all(int(t) == video for p in parts for t in p["tag"])
    assert all(int(x) == yt for p in parts for x in p["peer"])
    with pytest.raises(ValueError):
        make(env, flows=False)[0].annotate_flows(d1, r1)


def test_frag_id_is_the_ip_identification(env):
    """pkt_t.frag_id: IPv4's 16-bit Identification (RFC 791) and the IPv6 fragment
    header's 32-bit one (RFC 8200 s4.5), for fragments only; checked by struct."""
    six = ipaddress.ip_address(CLIENT6).packed, ipaddress.ip_address(SERVER6).packed
    fh_first = struct.pack("!BBHI", 17, 0, 1, 0xDEADBEEF)              # offset 0, M
    fh_later = struct.pack("!BBHI", 17, 0, (2 << 3), 0xDEADBEEF)      # offset 16 bytes
    body = struct.pack("!HHHH", 1000, 2000, 40, 0) + b"x" * 8
    v6 = [MAC + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(fh) + len(pl), 44, 64)
          + six[0] + six[1] + fh + pl for fh, pl in ((fh_first, body), (fh_later, b"y" * 16))]
    pk = [(T0, udp(CLIENT, SERVER, 1, 2, b"z" * 40, ident=0xBEEF, frag=0x2000)),
          (T0 + 1, ip(CLIENT, SERVER, 17, b"w" * 16, ident=0xBEEF, frag=6)),
          (T0 + 2, udp(CLIENT, SERVER, 1, 2, b"z", ident=0x1111)),              # no fragment
          (T0 + 3, v6[0]), (T0 + 4, v6[1])]
    data, recs = batch(pk)
    cols = _core.decode_columns(data, recs)
    assert [int(x) for x in cols["frag_id"]] == [0xBEEF, 0xBEEF, 0, 0xDEADBEEF, 0xDEADBEEF]
    core, counters, ft = make(env)
    core.process(data, recs)
    # each datagram's later fragment joins its first fragment's flow
    assert sorted(sum(e["seen"]) for e in ft.entries()) == [2, 3]
