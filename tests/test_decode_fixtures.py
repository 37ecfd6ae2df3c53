"""Hand-built frames for each link type and header case, with the expected decode,
plus a cut of each header with the named reason it must produce."""
import struct

import numpy as np
import pytest

from frames import (DST4, DST6, SRC4, SRC6, ah, esp, eth, ext, frag6, gre0, gre1, icmp,
                    ipv4, ipv6, null, pppoe, sctp, sll, sll2, tcp, udp)
from nkstream import _core
from nkstream._core import ERROR_NAMES, REC_DTYPE, decode_columns, decode_one

PF = _core.DECODE_FLAGS
IP, PROTO, PORTS = PF["PF_IP"], PF["PF_PROTO"], PF["PF_PORTS"]
FRAG, FIRST, GRE, SPI, PAY = (PF["PF_FRAG"], PF["PF_FRAG_FIRST"], PF["PF_GRE"],
                              PF["PF_SPI"], PF["PF_PAYLOAD"])

UDP4 = ipv4(17, udp(5353, 53, b"abcd"))
UDP6 = ipv6(17, udp(5353, 53, b"abcd"))
V4 = dict(ipver=4, src=SRC4, dst=DST4)
V6 = dict(ipver=6, src=SRC6, dst=DST6)
UDP_OK = dict(error=None, proto=17, sport=5353, dport=53, flags=IP | PROTO | PORTS | PAY,
              l4_len=4)

# name -> (linktype, frame, expected subset of decode_one's dict)
CASES = {
    "eth-ipv4-udp": (1, eth(0x0800, UDP4), dict(V4, **UDP_OK, l3_off=14, l4_off=42)),
    "eth-ipv6-udp": (1, eth(0x86DD, UDP6), dict(V6, **UDP_OK, l3_off=14, l4_off=62)),
    "eth-8021q": (1, eth(0x0800, UDP4, [(0x8100, 100)]), dict(V4, **UDP_OK, vlan=[100],
                                                                nvlan=1, l3_off=18)),
    "eth-qinq": (1, eth(0x0800, UDP4, [(0x88A8, 10), (0x8100, 20)]),
                 dict(V4, **UDP_OK, vlan=[10, 20], nvlan=2, l3_off=22)),
    "eth-3-tags-9100": (1, eth(0x86DD, UDP6, [(0x9100, 1), (0x88A8, 2), (0x8100, 4095)]),
                        dict(V6, **UDP_OK, vlan=[1, 2, 4095], nvlan=3)),
    "eth-6-tags": (1, eth(0x0800, UDP4, [(0x8100, i) for i in range(1, 7)]),
                   dict(V4, **UDP_OK, vlan=[1, 2, 3, 4], nvlan=6)),
    "eth-9-tags": (1, eth(0x0800, UDP4, [(0x8100, i) for i in range(1, 10)]),
                   dict(error="vlan.too_many_tags", flags=0, vlan=[1, 2, 3, 4], nvlan=8)),
    "eth-arp": (1, eth(0x0806, b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20),
                dict(error="l2.non_ip", flags=0, ipver=0)),
    "eth-lldp": (1, eth(0x88CC, b"\x02\x07\x04" + b"\x00" * 20), dict(error="l2.non_ip")),
    "eth-8023-llc-stp": (1, eth(38, b"\x42\x42\x03" + b"\x00" * 35), dict(error="l2.non_ip")),
    "eth-8023-snap-ipv4": (1, eth(8 + len(UDP4), b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + UDP4),
                           dict(V4, **UDP_OK, l3_off=22)),
    "eth-mpls": (1, eth(0x8847, b"\x00\x01\x01\x40" + UDP4),
                 dict(error="l2.unsupported_ethertype", flags=0)),
    "eth-pppoe-ipv4": (1, eth(0x8864, pppoe(0x0021, UDP4)), dict(V4, **UDP_OK, l3_off=22)),
    "eth-pppoe-ipv6": (1, eth(0x8864, pppoe(0x0057, UDP6)), dict(V6, **UDP_OK, l3_off=22)),
    "eth-pppoe-lcp": (1, eth(0x8864, pppoe(0xC021, b"\x01\x01\x00\x04")),
                      dict(error="l2.non_ip")),
    "sll-ipv4": (113, sll(0x0800, UDP4), dict(V4, **UDP_OK, l3_off=16)),
    "sll-vlan-ipv6": (113, sll(0x8100, struct.pack("!HH", 7, 0x86DD) + UDP6),
                      dict(V6, **UDP_OK, vlan=[7], l3_off=20)),
    "sll2-ipv6": (276, sll2(0x86DD, UDP6), dict(V6, **UDP_OK, l3_off=20)),
    "sll2-arp": (276, sll2(0x0806, b"\x00" * 28), dict(error="l2.non_ip")),
    "raw12-ipv4": (12, UDP4, dict(V4, **UDP_OK, l3_off=0)),
    "raw14-ipv6": (14, UDP6, dict(V6, **UDP_OK, l3_off=0)),
    "raw101-ipv4": (101, UDP4, dict(V4, **UDP_OK)),
    "raw101-ipv6": (101, UDP6, dict(V6, **UDP_OK)),
    "raw101-version5": (101, b"\x50" + UDP4[1:], dict(error="ip.bad_version", flags=0)),
    "ipv4-228": (228, UDP4, dict(V4, **UDP_OK)),
    "ipv6-229": (229, UDP6, dict(V6, **UDP_OK)),
    "ipv4-228-holding-ipv6": (228, UDP6, dict(error="ipv4.bad_version", flags=0)),
    "null-le-ipv4": (0, null(2, UDP4, "<"), dict(V4, **UDP_OK, l3_off=4)),
    "null-be-ipv4": (0, null(2, UDP4, ">"), dict(V4, **UDP_OK, l3_off=4)),
    "null-le-ipv6-24": (0, null(24, UDP6, "<"), dict(V6, **UDP_OK)),
    "null-be-ipv6-28": (0, null(28, UDP6, ">"), dict(V6, **UDP_OK)),
    "null-le-ipv6-30": (0, null(30, UDP6, "<"), dict(V6, **UDP_OK)),
    "null-af-unknown": (0, null(7, UDP4, "<"), dict(error="l2.non_ip")),
    "loop-ipv4": (108, null(2, UDP4, ">"), dict(V4, **UDP_OK)),
    "loop-ipv6": (108, null(24, UDP6, ">"), dict(V6, **UDP_OK)),
    "ppp-ipv4": (9, b"\xff\x03\x00\x21" + UDP4, dict(V4, **UDP_OK, l3_off=4)),
    "ppp-cisco-hdlc": (9, b"\x0f\x00\x08\x00" + UDP4, dict(V4, **UDP_OK, l3_off=4)),
    "c-hdlc-ipv6": (104, b"\x0f\x00\x86\xdd" + UDP6, dict(V6, **UDP_OK)),
    "ppi-ethernet": (192, struct.pack("<BBHI", 0, 0, 8, 1) + eth(0x0800, UDP4),
                     dict(V4, **UDP_OK, l3_off=22)),
    "nflog-ipv4": (239, struct.pack("<BBH", 2, 0, 0) + struct.pack("<HH", 8, 1) + b"\0" * 4
                   + struct.pack("<HH", 4 + len(UDP4), 9) + UDP4,
                   dict(V4, **UDP_OK, l3_off=16)),
    "unknown-linktype": (147, UDP4, dict(error="l2.unsupported_linktype", flags=0)),
    "ipv4-options": (1, eth(0x0800, ipv4(6, tcp(1, 2, 0x02), options=b"\x01" * 8)),
                     dict(V4, error=None, proto=6, sport=1, dport=2, tcp_flags=0x02,
                          l4_off=14 + 28 + 20, l4_len=0)),
    "ipv4-ethernet-padding": (1, eth(0x0800, ipv4(6, tcp(1, 2))) + b"\0" * 6,
                              dict(V4, error=None, l4_len=0)),
    "ipv4-snaplen-cut-payload": (1, eth(0x0800, ipv4(17, udp(5353, 53, b"abcd"),
                                                      tot=20 + 8 + 1000)),
                                 dict(V4, **UDP_OK)),
    "ipv4-tso-zero-length": (1, eth(0x0800, ipv4(17, udp(5353, 53, b"abcd"), tot=0)),
                             dict(V4, **UDP_OK)),
    "ipv4-first-fragment": (1, eth(0x0800, ipv4(17, udp(5353, 53, b"abcd"), frag=0x2000)),
                            dict(V4, error=None, proto=17, sport=5353, dport=53,
                                 flags=IP | PROTO | PORTS | PAY | FRAG | FIRST)),
    "ipv4-later-fragment": (1, eth(0x0800, ipv4(17, b"\x00\x35\x00\x35" * 4, frag=0x0003)),
                            dict(V4, error=None, proto=17, sport=0, dport=0,
                                 flags=IP | PROTO | FRAG)),
    "ipv4-last-fragment-dont-fragment": (1, eth(0x0800, ipv4(6, b"x" * 24, frag=0x4000 | 185)),
                                         dict(V4, error=None, proto=6, flags=IP | PROTO | FRAG)),
    "ipv6-hopopts": (229, ipv6(0, ext(17) + udp(5353, 53, b"abcd")),
                     dict(V6, **UDP_OK, l4_off=56)),
    "ipv6-routing": (229, ipv6(43, ext(17, 2) + udp(5353, 53, b"abcd")),
                     dict(V6, **UDP_OK, l4_off=72)),
    "ipv6-dstopts": (229, ipv6(60, ext(17) + udp(5353, 53, b"abcd")), dict(V6, **UDP_OK)),
    "ipv6-mobility": (229, ipv6(135, ext(59, 1)), dict(V6, error=None, proto=59)),
    "ipv6-hop-dst-routing-dst": (229, ipv6(0, ext(60) + ext(43) + ext(60) + ext(17) + udp(5353, 53, b"abcd")),
                                 dict(V6, **UDP_OK)),
    "ipv6-fragment-first": (229, ipv6(44, frag6(17, 0, True) + udp(5353, 53, b"abcd")),
                            dict(V6, error=None, proto=17, sport=5353, dport=53,
                                 flags=IP | PROTO | PORTS | PAY | FRAG | FIRST)),
    "ipv6-fragment-later": (229, ipv6(44, frag6(17, 3, False) + b"\x00\x35" * 6),
                            dict(V6, error=None, proto=17, flags=IP | PROTO | FRAG, sport=0)),
    "ipv6-atomic-fragment": (229, ipv6(44, frag6(17, 0, False) + udp(5353, 53, b"abcd")),
                             dict(V6, **UDP_OK)),
    "ipv6-ah-esp": (229, ipv6(51, ah(50, 0x1111) + esp(0x2222)),
                    dict(V6, error=None, proto=51, spi=0x1111, l4_off=40 + 24,
                         flags=IP | PROTO | SPI | PAY)),
    "ipv6-8-ext": (229, ipv6(60, ext(60) * 7 + ext(17) + udp(5353, 53, b"abcd")),
                   dict(V6, **UDP_OK)),
    "ipv6-9-ext": (229, ipv6(60, ext(60) * 8 + ext(17) + udp(5353, 53, b"abcd")),
                   dict(V6, error="ipv6.ext_chain_too_long", flags=IP)),
    "ipv6-jumbo-zero-plen": (229, ipv6(17, udp(5353, 53, b"abcd"), plen=0), dict(V6, **UDP_OK)),
    "ipv6-6in4-outer-kept": (101, ipv4(41, UDP6), dict(V4, error=None, proto=41,
                                                       flags=IP | PROTO | PAY, l4_off=20,
                                                       l4_len=len(UDP6))),
    "ipv4-4in4-outer-kept": (101, ipv4(4, UDP4, src="10.0.0.1", dst="10.0.0.2"),
                             dict(ipver=4, src="10.0.0.1", dst="10.0.0.2", proto=4,
                                  flags=IP | PROTO | PAY, l4_off=20, l4_len=len(UDP4))),
    "tcp-syn-options": (101, ipv4(6, tcp(40000, 443, 0x02, doff=8, options=b"\x01" * 12,
                                         payload=b"hello")),
                        dict(V4, error=None, proto=6, sport=40000, dport=443, tcp_flags=0x02,
                             l4_off=20 + 32, l4_len=5, flags=IP | PROTO | PORTS | PAY)),
    "tcp-bad-offset": (101, ipv4(6, tcp(1, 2, doff=4)),
                       dict(V4, error="tcp.bad_offset", sport=1, dport=2)),
    "udplite": (101, ipv4(136, udp(1, 2, b"x")), dict(V4, error=None, proto=136, sport=1,
                                                      dport=2)),
    "sctp": (229, ipv6(132, sctp(2905, 2906, b"\x00" * 16)),
             dict(V6, error=None, proto=132, sport=2905, dport=2906, l4_off=52, l4_len=16,
                  flags=IP | PROTO | PORTS | PAY)),
    "icmp": (101, ipv4(1, icmp(8, 0)), dict(V4, error=None, proto=1, flags=IP | PROTO,
                                            sport=0, dport=0)),
    "icmp-quoting-udp": (101, ipv4(1, icmp(3, 3, b"\0" * 4 + ipv4(17, udp(9, 10),
                                                                   src="1.1.1.1"))),
                         dict(V4, error=None, proto=1, flags=IP | PROTO, sport=0)),
    "icmpv6": (229, ipv6(58, icmp(128, 0)), dict(V6, error=None, proto=58, flags=IP | PROTO)),
    "gre0-key": (101, ipv4(47, gre0(0x0800, UDP4, key=0xCAFE0001, seq=5, csum=True)),
                 dict(V4, error=None, proto=47, gre_ver=0, gre_ptype=0x0800,
                      gre_key=0xCAFE0001, l4_off=20 + 16, l4_len=len(UDP4),
                      flags=IP | PROTO | GRE | PAY)),
    "gre0-plain-teb": (101, ipv4(47, gre0(0x6558, b"\0" * 14)),
                       dict(V4, error=None, gre_ptype=0x6558, gre_key=0, l4_off=24)),
    "gre1-pptp": (101, ipv4(47, gre1(0x4242, b"\xff\x03\x00\x21" + UDP4, seq=1, ack=2)),
                  dict(V4, error=None, proto=47, gre_ver=1, gre_ptype=0x880B, gre_key=0x4242,
                       l4_off=20 + 16, flags=IP | PROTO | GRE | PAY)),
    "gre1-ack-only": (101, ipv4(47, gre1(7, b"", ack=2)),
                      dict(V4, error=None, gre_ver=1, gre_key=7, l4_off=32, l4_len=0)),
    "gre1-without-key": (101, ipv4(47, struct.pack("!HHHH", 0x0001, 0x880B, 0, 7)),
                         dict(V4, error="gre.bad_v1_header", proto=47)),
    "gre-version-2": (101, ipv4(47, struct.pack("!HH", 0x0002, 0x0800) + UDP4),
                      dict(V4, error="gre.bad_version", proto=47, flags=IP | PROTO)),
    "esp": (101, ipv4(50, esp(0xABCDEF01)),
            dict(V4, error=None, proto=50, spi=0xABCDEF01, l4_off=28, l4_len=16,
                 flags=IP | PROTO | SPI | PAY)),
    "ah-ipv4": (101, ipv4(51, ah(6, 0x01020304) + tcp(1, 2)),
                dict(V4, error=None, proto=51, spi=0x01020304, l4_off=44, l4_len=20,
                     flags=IP | PROTO | SPI | PAY, sport=0)),
    "ah-bad-length": (101, ipv4(51, struct.pack("!BBHII", 6, 0, 0, 9, 1) + b"\0" * 20),
                      dict(V4, error="ah.bad_length", proto=51)),
    "ipv4-bad-ihl": (101, ipv4(17, udp(1, 2), ihl=4), dict(error="ipv4.bad_ihl", flags=0)),
    "ipv4-bad-total-length": (101, ipv4(17, udp(1, 2), tot=19),
                              dict(error="ipv4.bad_total_length", flags=0)),
    "ipv4-on-eth-holding-v6": (1, eth(0x0800, UDP6), dict(error="ipv4.bad_version")),
    "ipv6-on-eth-holding-v4": (1, eth(0x86DD, UDP4), dict(error="ipv6.bad_version")),
}

# name -> (case, bytes kept, expected reason, expected flags): a cut inside each header.
CUTS = {
    "eth-header": ("eth-ipv4-udp", 13, "l2.truncated", 0),
    "eth-empty": ("eth-ipv4-udp", 0, "l2.truncated", 0),
    "vlan-tag": ("eth-qinq", 20, "l2.truncated", 0),
    "pppoe": ("eth-pppoe-ipv4", 19, "l2.truncated", 0),
    "pppoe-proto": ("eth-pppoe-ipv4", 21, "l2.truncated", 0),
    "sll": ("sll-ipv4", 15, "l2.truncated", 0),
    "sll2": ("sll2-ipv6", 19, "l2.truncated", 0),
    "null": ("null-le-ipv4", 3, "l2.truncated", 0),
    "loop": ("loop-ipv6", 2, "l2.truncated", 0),
    "raw-empty": ("raw101-ipv4", 0, "l2.truncated", 0),
    "ppp": ("ppp-ipv4", 1, "l2.truncated", 0),
    "ppi": ("ppi-ethernet", 7, "l2.truncated", 0),
    "nflog": ("nflog-ipv4", 30, "l2.truncated", 0),
    "ipv4-fixed": ("eth-ipv4-udp", 14 + 19, "ipv4.truncated", 0),
    "ipv4-empty-228": ("ipv4-228", 0, "ipv4.truncated", 0),
    "ipv4-options": ("ipv4-options", 14 + 24, "ipv4.truncated", IP | PROTO),
    "ipv6-fixed": ("eth-ipv6-udp", 14 + 39, "ipv6.truncated", 0),
    "ipv6-hopopts": ("ipv6-hopopts", 40 + 7, "ipv6.ext_truncated", IP),
    "ipv6-hopopts-len": ("ipv6-hopopts", 40 + 1, "ipv6.ext_truncated", IP),
    "ipv6-routing": ("ipv6-routing", 40 + 20, "ipv6.ext_truncated", IP),
    "ipv6-fragment": ("ipv6-fragment-first", 40 + 7, "ipv6.ext_truncated", IP),
    "ipv6-ah": ("ipv6-ah-esp", 40 + 11, "ah.truncated", IP | PROTO),
    "ipv6-ah-icv": ("ipv6-ah-esp", 40 + 20, "ah.truncated", IP | PROTO | SPI),
    "tcp-ports": ("tcp-syn-options", 20 + 3, "tcp.truncated", IP | PROTO),
    "tcp-fixed": ("tcp-syn-options", 20 + 19, "tcp.truncated", IP | PROTO | PORTS),
    "tcp-options": ("tcp-syn-options", 20 + 31, "tcp.truncated", IP | PROTO | PORTS),
    "udp": ("raw101-ipv4", 20 + 7, "udp.truncated", IP | PROTO | PORTS),
    "udp-ports": ("raw101-ipv6", 40 + 2, "udp.truncated", IP | PROTO),
    "sctp": ("sctp", 40 + 11, "sctp.truncated", IP | PROTO | PORTS),
    "icmp": ("icmp", 20 + 3, "icmp.truncated", IP | PROTO),
    "icmpv6": ("icmpv6", 40 + 1, "icmp.truncated", IP | PROTO),
    "gre-base": ("gre0-key", 20 + 3, "gre.truncated", IP | PROTO),
    "gre-key": ("gre0-key", 20 + 10, "gre.truncated", IP | PROTO | GRE),
    "gre-seq": ("gre0-key", 20 + 14, "gre.truncated", IP | PROTO | GRE),
    "gre1-callid": ("gre1-pptp", 20 + 7, "gre.truncated", IP | PROTO),
    "gre1-ack": ("gre1-pptp", 20 + 15, "gre.truncated", IP | PROTO | GRE),
    "esp": ("esp", 20 + 7, "esp.truncated", IP | PROTO),
    "ah": ("ah-ipv4", 20 + 11, "ah.truncated", IP | PROTO),
    "ah-icv": ("ah-ipv4", 20 + 23, "ah.truncated", IP | PROTO | SPI),
}


def check(got, want):
    for k, v in want.items():
        assert got[k] == v, "%s: got %r, want %r (decode: %r)" % (k, got[k], v, got)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(name):
    lt, frame, want = CASES[name]
    check(decode_one(frame, lt), want)


@pytest.mark.parametrize("name", sorted(CUTS))
def test_cut(name):
    case, keep, reason, flags = CUTS[name]
    lt, frame, _ = CASES[case]
    assert keep < len(frame)
    got = decode_one(frame[:keep], lt)
    assert (got["error"], got["flags"]) == (reason, flags), got


def test_every_header_cut_is_named():
    """Every prefix of every case decodes to a named reason or, for the prefixes
    that only drop payload, to the full packet's identity; never a crash."""
    for name, (lt, frame, want) in CASES.items():
        full = decode_one(frame, lt)
        for keep in range(len(frame)):
            got = decode_one(frame[:keep], lt)
            assert got["error_id"] < len(ERROR_NAMES)
            if got["error"] is None:
                for k in ("src", "dst", "proto", "sport", "dport", "vlan", "gre_key", "spi"):
                    assert got[k] == full[k], (name, keep, k)


def test_error_names_stable():
    assert ERROR_NAMES[0] is None
    assert len(ERROR_NAMES) < 64 and len(set(ERROR_NAMES)) == len(ERROR_NAMES)
    # Ids are part of the snapshot format: these must never move.
    assert ERROR_NAMES[:6] == (None, "l2.truncated", "l2.unsupported_linktype", "l2.non_ip",
                               "l2.unsupported_ethertype", "vlan.too_many_tags")
    assert ERROR_NAMES.index("ipv6.ext_chain_too_long") == 13
    assert ERROR_NAMES.index("ah.bad_length") == 25


def make_batch(frames, linktypes, tci=None):
    data = b"".join(frames)
    recs = np.zeros(len(frames), REC_DTYPE)
    off = 0
    for i, f in enumerate(frames):
        recs[i]["off"], recs[i]["caplen"], recs[i]["linktype"] = off, len(f), linktypes[i]
        off += len(f)
    if tci is not None:
        recs["vlan_tpid"], recs["vlan_tci"] = 0x8100, tci
    return np.frombuffer(data, np.uint8), recs


def test_columns_equal_decode_one():
    names = sorted(CASES)
    frames = [CASES[n][1] for n in names]
    data, recs = make_batch(frames, [CASES[n][0] for n in names])
    cols = decode_columns(data, recs)
    assert set(cols) == {"error", "ipver", "proto", "flags", "nvlan", "vlan", "sport", "dport",
                         "src", "dst", "gre_ver", "gre_ptype", "gre_key", "spi", "tcp_flags",
                         "l4_off", "l4_len", "frag_id"}
    assert cols["vlan"].shape == (len(names), _core.MAX_VLAN_IDS)
    assert cols["src"].shape == (len(names), 16) and cols["src"].dtype == np.uint8
    for i, n in enumerate(names):
        one = decode_one(frames[i], CASES[n][0])
        assert ERROR_NAMES[cols["error"][i]] == one["error"], n
        for k in ("ipver", "proto", "flags", "nvlan", "sport", "dport", "gre_ver", "gre_ptype",
                  "gre_key", "spi", "tcp_flags", "l4_off", "l4_len", "frag_id"):
            assert cols[k][i] == one[k], (n, k)
        assert bytes(cols["src"][i]) == one["src_bytes"] and bytes(cols["dst"][i]) == \
            one["dst_bytes"]
        assert list(cols["vlan"][i][:len(one["vlan"])]) == one["vlan"]
    counts = _core.error_counts(cols["error"])
    assert sum(counts.values()) == len(names)
    assert counts[None] == sum(1 for n in names if CASES[n][2].get("error", None) is None)


def test_columns_restore_stripped_vlan():
    frames = [eth(0x0800, UDP4), eth(0x0800, UDP4, [(0x8100, 20)])]
    data, recs = make_batch(frames, [1, 1], tci=(5 << 13) | 300)
    cols = decode_columns(data, recs)
    assert list(cols["nvlan"]) == [1, 2]
    assert list(cols["vlan"][0][:1]) == [300] and list(cols["vlan"][1][:2]) == [300, 20]
    assert decode_one(frames[1], 1, vlan_tci=300)["vlan"] == [300, 20]


def test_columns_reject_bad_records():
    data, recs = make_batch([UDP4, UDP4], [101, 101])
    recs[1]["caplen"] += 1
    with pytest.raises(ValueError, match="record 1"):
        decode_columns(data, recs)
    recs[1]["caplen"], recs[1]["off"] = 1, 2**64 - 1
    with pytest.raises(ValueError, match="record 1"):
        decode_columns(data, recs)
    with pytest.raises(ValueError, match="REC_DTYPE"):
        decode_columns(data, np.zeros(2, np.uint64))
    with pytest.raises(ValueError, match="REC_DTYPE"):
        decode_columns(data, np.zeros(4, REC_DTYPE)[::2])


def test_columns_empty_batch():
    cols = decode_columns(b"", np.zeros(0, REC_DTYPE))
    assert len(cols["error"]) == 0
    data, recs = make_batch([b""], [1])
    assert ERROR_NAMES[decode_columns(b"", recs)["error"][0]] == "l2.truncated"
