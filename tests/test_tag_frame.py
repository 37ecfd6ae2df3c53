"""tag_frame (nkstream/core/rules_frame.pxi): the tagger behind the real decoder
(decode_packet), held against the tagger fed with tshark's reading of the same
packets, on every corpus packet."""
from nkstream import _core
from nkstream.rules import Rules

from conftest import corpus_captures
from label_table import LabelTable
from tiny_pcap import frames
from tshark_packets import packets


def test_tag_frame_equals_tagging_tshark_fields(corpus_dir):
    rules = Rules.load()
    core = rules.compile(LabelTable())
    n = 0
    inner = {}
    for path in corpus_captures():
        fr = list(frames(path))
        pk = list(packets(path))
        if any(d["proto"] in (4, 41) for d in pk):
            inner[path.name] = _inner_fields(path)
        assert len(fr) == len(pk), path.name
        for (linktype, frame), d in zip(fr, pk):
            got = _core.tag_frame(core, frame, linktype)
            if d["proto"] in (4, 41):
                want = _tunnel_verdict(core, d, inner[path.name][d["number"]])
            else:
                want = _core.tag_fields(core, proto=d["proto"], sport=d["sport"], dport=d["dport"],
                                        payload=d["payload"], gre_ver=d["gre_ver"], gre_ptype=d["gre_ptype"])
            assert got[:2] == want, (path.name, d["number"], rules.tags[got[0]], rules.tags[want[0]])
            n += 1
    assert n > 20000


def _inner_fields(path):
    """{frame number: (proto, sport, dport, gre_ver, gre_ptype)} of the IP header inside
    an IP-in-IP / 6in4 packet, as tshark reads it (its second IP header)."""
    import subprocess

    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE",
           "-o", "ipv6.defragment:FALSE", "-T", "fields", "-E", "occurrence=a",
           "-E", "aggregator=,"]
    for f in ("frame.number", "frame.protocols", "ip.proto", "ipv6.nxt", "ip.frag_offset",
              "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
              "gre.flags_and_version", "gre.proto"):
        cmd += ["-e", f]
    out = {}
    for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines():
        v = line.split("\t")
        v += [""] * (11 - len(v))
        num, protos = int(v[0]), v[1].split(":")
        ips = [p for p in protos if p in ("ip", "ipv6")]
        if len(ips) < 2:
            out[num] = None
            continue
        # the inner header's protocol: the next-header field of the second IP header
        order = {"ip": v[2].split(","), "ipv6": v[3].split(",")}
        k = ips[:2].count(ips[1]) - 1
        vals = order[ips[1]]
        proto = int(vals[k]) if len(vals) > k and vals[k] else None
        frag = v[4].split(",")
        later_fragment = ips[1] == "ip" and len(frag) > k and frag[k] not in ("", "0")
        sport = dport = gre_ver = gre_ptype = None
        if not later_fragment and proto == 6 and v[5]:
            sport, dport = int(v[5].split(",")[0]), int(v[6].split(",")[0])
        elif not later_fragment and proto == 17 and v[7]:
            sport, dport = int(v[7].split(",")[0]), int(v[8].split(",")[0])
        elif not later_fragment and proto == 47 and v[10]:
            gre_ver = int(v[9].split(",")[0], 16) & 7
            gre_ptype = int(v[10].split(",")[0], 16)
        out[num] = (proto, sport, dport, gre_ver, gre_ptype)
    return out


def _tunnel_verdict(core, d, inner):
    """docs/signatures.md: an IP-in-IP packet gets the table verdict of its inner
    header (GRE, ports, protocol) when there is one, else the outer protocol's."""
    if inner is not None and inner[0] is not None:
        proto, sport, dport, gre_ver, gre_ptype = inner
        got = _core.tag_fields(core, proto=proto, sport=sport, dport=dport,
                               gre_ver=gre_ver, gre_ptype=gre_ptype)
        if got[0] != 0:
            return got
    return _core.tag_fields(core, proto=d["proto"])
