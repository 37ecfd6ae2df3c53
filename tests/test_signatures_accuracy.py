"""Signatures added from the accuracy comparison (docs/accuracy.md): rule gaps where
the signal is in a well-known port, an address list or the first payload bytes.

Each rule is checked on hand-built fields (tag_fields, held against the pure-Python
reference tagger) and on the corpus capture that showed the gap, read by tshark (an
independent decoder) as in tests/test_signatures.py.
"""
import collections

import pytest

from nkstream._core import tag_fields
from nkstream.rules import Rules
from nkstream.signatures_reference import ReferenceTagger

from tshark_packets import HAVE_TSHARK, packets


from label_table import LabelTable


RULES = Rules.load()
PEERS = LabelTable("zoom", "webex", "google")
CORE = RULES.compile(PEERS)
REF = ReferenceTagger(RULES, PEERS)

# ndpi__gnutella.pcap frame 181 (tshark): the client's handshake
GNUTELLA_CONNECT = bytes.fromhex("474e5554454c4c4120434f4e4e4543542f302e360d0a") + b"Node: 93.47.226.53:28681\r\n"
GNUTELLA_OK = b"GNUTELLA/0.6 200 OK\r\nUser-Agent: LimeWire/5.1\r\n"


def tag(**kw):
    t, _ = tag_fields(CORE, **kw)
    assert (t, _) == REF.tag(**kw)
    return RULES.tags[t]


def ipv4_header(proto, payload, frag=0):
    """A 20-byte IPv4 header (RFC 791) around payload; checksum left 0 (unchecked)."""
    import struct
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + payload


def ipv6_header(nh, payload):
    import struct
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, bytes(15) + b"\x01",
                       bytes(15) + b"\x02") + payload


# PPTP's enhanced GRE (RFC 2637 §4.1): K set, version 1, type 0x880B, length, call id
GRE_PPTP = bytes.fromhex("3001880b00040005") + bytes(4)
TCP_443 = bytes.fromhex("c35001bb") + bytes(16)

CASES = [
    # IP-in-IP / 6in4: one level in (zeek__tunnels_gre-pptp.pcap is IPv6 > IPv4 > GRE v1)
    ("4in6 gre-pptp", dict(proto=4, payload=ipv4_header(47, GRE_PPTP)), "gre-pptp"),
    ("4in4 gre v0", dict(proto=4, payload=ipv4_header(47, bytes.fromhex("00000800"))), "gre"),
    ("4in4 pptp control", dict(proto=4, payload=ipv4_header(6, bytes.fromhex("c35006bb") + bytes(16))), "pptp-ctrl"),
    ("6in4 https", dict(proto=41, payload=ipv6_header(6, TCP_443)), "https"),
    ("6in4 icmpv6", dict(proto=41, payload=ipv6_header(58, bytes(8))), "icmp"),
    ("4in4 unknown udp", dict(proto=4, payload=ipv4_header(17, bytes.fromhex("f35f4268") + bytes(8))), "ip-in-ip"),
    ("4in4 later fragment: no ports", dict(proto=4, payload=ipv4_header(6, TCP_443, frag=100)), "ip-in-ip"),
    ("4in4 esp", dict(proto=4, payload=ipv4_header(50, bytes(16))), "esp"),
    ("4in4 short", dict(proto=4, payload=ipv4_header(47, GRE_PPTP)[:22]), "gre"),
    ("4in4 cut header", dict(proto=4, payload=ipv4_header(47, GRE_PPTP)[:19]), "ip-in-ip"),
    ("4in4 bad version", dict(proto=4, payload=b"\x55" + ipv4_header(47, GRE_PPTP)[1:]), "ip-in-ip"),
    ("ip-in-ip without payload", dict(proto=4), "ip-in-ip"),
    ("4in4: inner payload bytes are not matched", dict(proto=4, payload=ipv4_header(6, b"GNUTELLA CONNECT/0.6\r\n")), "ip-in-ip"),

    ("zoom media udp 8801", dict(proto=17, sport=8801, dport=60653, payload=bytes(40)), "video-call"),
    ("zoom media udp 8810", dict(proto=17, sport=51000, dport=8810, payload=bytes(40)), "video-call"),
    ("zoom tcp 8802", dict(proto=6, sport=51000, dport=8802), "video-call"),
    ("udp 8811 is not zoom", dict(proto=17, sport=51000, dport=8811, payload=bytes(40)), "unknown"),
    ("zoom address on 443", dict(proto=6, sport=54871, dport=443, peer="zoom"), "video-call"),
    ("webex address on 443", dict(proto=6, sport=41348, dport=443, peer="webex"), "video-call"),
    ("google address on 443 stays https", dict(proto=6, sport=41348, dport=443, peer="google"), "https"),
    ("stun cookie to zoom stays stun", dict(proto=17, sport=40000, dport=3478, peer="zoom",
                                            payload=b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)), "stun"),
    ("anydesk direct 7070", dict(proto=6, sport=52039, dport=7070), "anydesk"),
    ("anydesk relay 6568", dict(proto=6, sport=52039, dport=6568), "anydesk"),
    ("tls record to 7070 is anydesk", dict(proto=6, sport=7070, dport=54164,
                                           payload=b"\x17\x03\x03\x00\x20" + bytes(32)), "anydesk"),
    ("nfs udp", dict(proto=17, sport=1023, dport=2049, payload=bytes(40)), "nfs"),
    ("nfs tcp", dict(proto=6, sport=2049, dport=900), "nfs"),
    ("gnutella connect", dict(proto=6, sport=50199, dport=36728, payload=GNUTELLA_CONNECT), "gnutella"),
    ("gnutella ok", dict(proto=6, sport=36728, dport=50199, payload=GNUTELLA_OK), "gnutella"),
    ("gnutella lowercase", dict(proto=6, sport=50199, dport=36728,
                                payload=GNUTELLA_CONNECT.lower()), "unknown"),
    ("gnutella udp text is not the handshake", dict(proto=17, sport=50199, dport=36728,
                                                    payload=GNUTELLA_CONNECT), "unknown"),
    ("gnutella port", dict(proto=17, sport=40000, dport=6346, payload=bytes(30)), "gnutella"),
    ("tailscale port", dict(proto=17, sport=41641, dport=41641, payload=bytes(30)), "wireguard"),
    ("warp port", dict(proto=17, sport=2408, dport=60555, payload=bytes(30)), "wireguard"),
    ("dns beats the warp hint", dict(proto=17, sport=2408, dport=53, payload=bytes(30)), "dns"),
]


@pytest.mark.parametrize("fields,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_signature(fields, expected):
    fields = dict(fields)
    if "peer" in fields:
        fields["peer_label"] = PEERS.labels.index(fields.pop("peer"))
    assert tag(**fields) == expected


def test_new_tags_categories():
    cat = dict(zip(RULES.tags, RULES.tag_category))
    assert cat["video-call"] == "video-gaming"
    assert cat["anydesk"] == "other"
    assert cat["nfs"] == cat["gnutella"] == "browsing-email-downloads"


# capture: {tag: share of its packets at least}, from the upstream verdicts
CAPTURE_EXPECT = {
    "zeek__tunnels_gre-pptp.pcap": {"gre-pptp": 1.0},  # GRE v1 inside IPv4-in-IPv6
    "ndpi__6in4tunnel.pcap": {"https": 61 / 127, "icmp": 48 / 127},
    "ndpi__zoom2.pcap": {"video-call": 0.97},          # UDP 8801 media + TLS to Zoom
    "ndpi__nfsv2.pcap": {"nfs": 146 / 156},            # the rest: portmap and mountd
    "ndpi__tailscale.pcap": {"wireguard": 1.0},        # every packet on 41641
}


@pytest.fixture(scope="module")
def classifier():
    from nkstream.classify import Classifier

    return Classifier.from_config(None)


@pytest.mark.parametrize("name", sorted(CAPTURE_EXPECT))
def test_corpus_capture_tags(corpus_dir, classifier, name):
    """Through the real pipeline (decoder, shipped peer table, tagger)."""
    from nkstream.capture import open_capture

    tags = classifier.rules.tags
    counts = collections.Counter()
    n = 0
    with open_capture(str(corpus_dir / name)) as cap:
        for data, recs in cap:
            counts.update(tags[t] for t in classifier.annotate(data, recs)["tag"].tolist())
            n += len(recs)
    assert n
    for t, share in CAPTURE_EXPECT[name].items():
        assert counts[t] >= share * n - 1e-9, (name, dict(counts))


def test_gnutella_handshakes_in_corpus(corpus_dir):
    """Every TCP packet of ndpi__gnutella.pcap whose payload starts with the
    handshake text is tagged gnutella."""
    if not HAVE_TSHARK:
        pytest.fail("tshark is required for the corpus checks (Debian: tshark)")
    hs = [d for d in packets(corpus_dir / "ndpi__gnutella.pcap")
          if d["proto"] == 6 and d["payload"] and d["payload"].startswith(b"GNUTELLA")]
    assert len(hs) >= 50
    for d in hs:
        assert tag(proto=6, sport=d["sport"], dport=d["dport"], payload=d["payload"]) == "gnutella"
