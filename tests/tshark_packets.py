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
          "tls.handshake.type"]

HAVE_TSHARK = shutil.which("tshark") is not None


def _first(v):
    return v.split(",")[0] if v else ""


def packets(path):
    """Yield dicts: number, proto, sport, dport, payload (bytes or None), gre_ver,
    gre_ptype, sni (tshark's server name in this frame, or ''), stream."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t",
           "-o", "tcp.desegment_tcp_streams:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t")))
        d = dict(number=int(v["frame.number"]), proto=None, sport=None, dport=None,
                 payload=None, gre_ver=None, gre_ptype=None,
                 sni=v.get("tls.handshake.extensions_server_name", ""),
                 stream=v.get("tcp.stream", ""))
        if v.get("gre.proto"):       # outermost: tshark also decodes what GRE carries
            d.update(proto=47, gre_ver=int(_first(v["gre.flags_and_version"]), 16) & 7,
                     gre_ptype=int(_first(v["gre.proto"]), 16))
        elif v.get("tcp.srcport"):
            d.update(proto=6, sport=int(_first(v["tcp.srcport"])), dport=int(_first(v["tcp.dstport"])),
                     payload=bytes.fromhex(_first(v.get("tcp.payload", ""))))
        elif v.get("udp.srcport"):
            d.update(proto=17, sport=int(_first(v["udp.srcport"])), dport=int(_first(v["udp.dstport"])),
                     payload=bytes.fromhex(_first(v.get("udp.payload", ""))))
        elif v.get("ip.proto"):
            d.update(proto=int(_first(v["ip.proto"])))
        elif v.get("ipv6.nxt"):
            d.update(proto=int(_first(v["ipv6.nxt"])))
        yield d
