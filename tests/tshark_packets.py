"""Per-packet fields of a capture as Wireshark's dissectors see them (tshark).

An independent decoder for the signature tests: the tagger is fed the transport
fields and L4 payload bytes that tshark reports, so a corpus check does not depend on
nkstream's own decoder.  Only the outermost transport of each packet is used.
"""
import shutil
import subprocess

FIELDS = ["frame.number", "ip.proto", "ipv6.nxt", "tcp.srcport", "tcp.dstport",
          "udp.srcport", "udp.dstport", "tcp.payload", "udp.payload", "gre.flags_and_version",
          "gre.proto", "tls.handshake.extensions_server_name", "tcp.stream", "tcp.len",
          "tls.handshake.type", "frame.protocols"]

HAVE_TSHARK = shutil.which("tshark") is not None


# frame.protocols names of what may follow the outermost IP header
_PROTO_NUMBERS = {"icmp": 1, "igmp": 2, "ip": 4, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47,
                  "esp": 50, "ah": 51, "icmpv6": 58, "sctp": 132}


def _outer_transport(protocols):
    """The layer right after the outermost IP header (skipping IPv6 extension
    headers): 'tcp', 'udp', 'gre', 'icmp', 'ip' (IP in IP), ... or ''."""
    toks = protocols.split(":")
    for i, t in enumerate(toks):
        if t in ("ip", "ipv6"):
            for u in toks[i + 1:]:
                if u.startswith("ipv6.") or u == "data":
                    continue
                return u
            return ""
    return ""


def _first(v):
    return v.split(",")[0] if v else ""


def packets(path):
    """Yield dicts: number, proto, sport, dport, payload (bytes or None), gre_ver,
    gre_ptype, sni (tshark's server name in this frame, or ''), stream."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t",
           "-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE",
           "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t")))
        d = dict(number=int(v["frame.number"]), proto=None, sport=None, dport=None,
                 payload=None, gre_ver=None, gre_ptype=None,
                 sni=v.get("tls.handshake.extensions_server_name", ""),
                 stream=v.get("tcp.stream", ""))
        first = _outer_transport(v.get("frame.protocols", ""))
        if first == "gre" and v.get("gre.proto"):
            d.update(proto=47, gre_ver=int(_first(v["gre.flags_and_version"]), 16) & 7,
                     gre_ptype=int(_first(v["gre.proto"]), 16))
        elif first == "tcp" and v.get("tcp.srcport"):
            d.update(proto=6, sport=int(_first(v["tcp.srcport"])), dport=int(_first(v["tcp.dstport"])),
                     payload=bytes.fromhex(_first(v.get("tcp.payload", ""))))
        elif first == "udp" and v.get("udp.srcport"):
            d.update(proto=17, sport=int(_first(v["udp.srcport"])), dport=int(_first(v["udp.dstport"])),
                     payload=bytes.fromhex(_first(v.get("udp.payload", ""))))
        elif first in _PROTO_NUMBERS:
            d.update(proto=_PROTO_NUMBERS[first])
        elif v.get("ip.proto"):
            d.update(proto=int(_first(v["ip.proto"])))
        yield d
