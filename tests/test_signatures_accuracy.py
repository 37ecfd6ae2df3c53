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


class LabelTable:
    def __init__(self, *names):
        self.labels = [None]
        for n in names:
            self.label_id(n)

    def label_id(self, name):
        if name not in self.labels:
            self.labels.append(name)
        return self.labels.index(name)


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


CASES = [
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
