"""Slow, obviously correct pure-Python reference of the signature tagger.

Works from the validated rule definitions (nkstream.rules.Rules), not from the
compiled tables, with plain loops, dicts and slicing: tests hold the native
``tag_packet`` (bucketed payload signatures, 64k port tables, suffix hash table,
bounded ClientHello walk) against it on random and real inputs.
"""
from __future__ import annotations

from typing import Optional, Tuple

PROTO_TCP = 6


def _be16(b, i):
    return (b[i] << 8) | b[i + 1]


def sni_reference(p: bytes) -> Optional[bytes]:
    """host_name of a ClientHello at the start of ``p`` (docs/signatures.md, "SNI"):
    fields are read within the captured bytes, the record and the handshake message,
    whichever ends first; a length that runs past its enclosing structure -> None."""
    p = bytes(p)
    if len(p) < 9 or p[0] != 0x16 or p[1] != 0x03 or p[5] != 0x01:
        return None
    end = min(len(p), 5 + _be16(p, 3), 9 + int.from_bytes(p[6:9], "big"))
    pos = 43                               # header(9) + legacy_version(2) + random(32)
    for width in (1, 2, 1):                # session id, cipher suites, compression
        if pos + width > end:
            return None
        n = p[pos] if width == 1 else _be16(p, pos)
        pos += width + n
    if pos + 2 > end:
        return None
    ext_end = min(pos + 2 + _be16(p, pos), end)
    pos += 2
    while pos + 4 <= ext_end:
        etype, elen = _be16(p, pos), _be16(p, pos + 2)
        pos += 4
        if etype != 0:
            pos += elen
            continue
        if pos + 2 > ext_end or elen < 2:
            return None
        list_end = pos + 2 + _be16(p, pos)
        if list_end > pos + elen:
            return None
        list_end = min(list_end, ext_end)
        pos += 2
        while pos + 3 <= list_end:
            ntype, nlen = p[pos], _be16(p, pos + 1)
            if ntype == 0:
                if nlen == 0 or nlen > 255 or pos + 3 + nlen > list_end:
                    return None
                return p[pos + 3:pos + 3 + nlen]
            pos += 3 + nlen
        return None
    return None


class ReferenceTagger:
    """Tag packets given as fields, from ``rules`` resolved against ``peer_table``."""

    def __init__(self, rules, peer_table):
        self.rules = rules
        ids = {n: i for i, n in enumerate(rules.tags)}
        defs = rules._sorted_defs()          # load order: earlier files first
        self.payload = []                    # (prio, -file_index, seq, tag, sig)
        self.ports = {}                      # (proto, port) -> (prio, tag), later wins ties
        self.protocols = {}
        self.gre = []                        # (ver, ptype, prio, tag)
        self.hints = {}
        seq = 0
        for t in defs:
            tid = ids[t.name]
            for sig in t.payload:
                self.payload.append((sig["prio"], -t.file_index, seq, tid, sig))
                seq += 1
            for proto, lo, hi, prio in t.ports:
                for port in range(lo, hi + 1):
                    old = self.ports.get((proto, port))
                    if old is None or prio >= old[0]:
                        self.ports[(proto, port)] = (prio, tid)
            for num, prio in t.protocols:
                old = self.protocols.get(num)
                if old is None or prio >= old[0]:
                    self.protocols[num] = (prio, tid)
            for ver, ptype, prio in t.gre:
                self.gre.append((ver, ptype, prio, tid))
            for label, prio in t.peer_labels:
                lid = peer_table.label_id(label)
                old = self.hints.get(lid)
                if old is None or prio >= old[0]:
                    self.hints[lid] = (prio, tid)
        self.payload.sort(key=lambda x: (-x[0], x[1], x[2]))
        self.gre.sort(key=lambda g: (g[1] is None, -g[2]))
        self.suffix = {}                     # suffix bytes -> (label id, (prio, tag) or None)
        sni_tag = {}
        for t in defs:
            for s, prio in t.sni:
                s = s.lower().rstrip(".")
                if s not in sni_tag or prio >= sni_tag[s][0]:
                    sni_tag[s] = (prio, ids[t.name])
        for s in set(rules._sni_owner) | set(sni_tag):
            label = rules._sni_owner.get(s)
            self.suffix[s.encode()] = (peer_table.label_id(label) if label else 0, sni_tag.get(s))

    # -- pieces --------------------------------------------------------------
    def sni_service(self, name: bytes):
        name = bytes(name)
        if not name:
            return None
        if name.endswith(b"."):
            name = name[:-1]
        low = name.lower()
        found = None
        for i in range(len(low)):
            if i == 0 or low[i - 1:i] == b".":
                if low[i:] in self.suffix:
                    found = self.suffix[low[i:]]
                    break                    # the first boundary from the left is the longest
        return found

    @staticmethod
    def sig_matches(sig, proto, sport, dport, payload):
        n = len(payload)
        if sig["proto"] and proto != sig["proto"]:
            return False
        if sig["min_len"] is not None and n < sig["min_len"]:
            return False
        if sig["max_len"] is not None and n > sig["max_len"]:
            return False
        if sig["len_mod"] and n % sig["len_mod"]:
            return False
        if sig["ports"] is not None:
            if sport is None:
                return False
            lo, hi = sig["ports"]
            if not (lo <= sport <= hi or lo <= dport <= hi):
                return False
        off = sig["offset"]
        if off + len(sig["pattern"]) > n:
            return False
        for i, (mask, lo, hi) in enumerate(sig["pattern"]):
            if not lo <= (payload[off + i] & mask) <= hi:
                return False
        if sig["length_prefix"] and (n < 2 or _be16(payload, 0) + 2 != n):
            return False
        if sig["needle"] and sig["needle"] not in payload[:min(n, sig["within"], 4096)]:
            return False
        return True

    def inner_verdict(self, pl):
        """(prio, tag) the tables give the IP header at the start of `pl` (IPv4 with
        its IHL, or a fixed IPv6 header): GRE version/type, else ports, with the
        inner protocol's rule as the floor; None when no rule applies."""
        if len(pl) < 20:
            return None
        ver = pl[0] >> 4
        if ver == 4:
            hl = (pl[0] & 0x0F) * 4
            if hl < 20 or hl > len(pl):
                return None
            proto = pl[9]
            first = ((pl[6] & 0x1F) << 8 | pl[7]) == 0
        elif ver == 6:
            hl = 40
            if len(pl) < hl:
                return None
            proto, first = pl[6], True
        else:
            return None
        cands = []                                    # (prio, rank, tag)
        l4 = pl[hl:]
        if first and proto == 47 and len(l4) >= 4:
            for gver, ptype, prio, tid in self.gre:
                if gver == (l4[1] & 7) and (ptype is None or ptype == _be16(l4, 2)):
                    cands.append((prio, 0, tid))
                    break
        elif first and proto in (6, 17, 132) and len(l4) >= 4:
            sp, dp = _be16(l4, 0), _be16(l4, 2)
            a, b = self.ports.get((proto, sp)), self.ports.get((proto, dp))
            if a and b:
                pick = (a if a[0] > b[0] else b) if a[0] != b[0] else (a if sp <= dp else b)
            else:
                pick = a or b
            if pick:
                cands.append((pick[0], 0, pick[1]))
        if proto in self.protocols:
            cands.append((self.protocols[proto][0], 1, self.protocols[proto][1]))
        if not cands:
            return None
        best = min(cands, key=lambda c: (-c[0], c[1]))
        return best[0], best[2]

    # -- the verdict -----------------------------------------------------------
    def tag(self, proto=None, sport=None, dport=None, payload=None, peer_label=0,
            gre_ver=None, gre_ptype=None) -> Tuple[int, int]:
        """(tag id, sni label id), same contract as nkstream._core.tag_fields."""
        cands = []                           # (prio, rank, tag): max prio, then min rank
        sni_label = 0
        if sport is not None or dport is not None:
            sport, dport = sport or 0, dport or 0
        if proto in (4, 41) and payload is not None:
            # IP-in-IP: the inner header's table verdict, else the outer protocol's;
            # the payload is an IP header, not L4 payload (no signatures, no SNI).
            inner = self.inner_verdict(bytes(payload))
            if inner is None and proto in self.protocols:
                inner = self.protocols[proto]
            if inner is not None:
                cands.append((inner[0], 5, inner[1]))
            if peer_label in self.hints:
                cands.append((self.hints[peer_label][0], 6, self.hints[peer_label][1]))
            if not cands:
                return 0, 0
            best = min(cands, key=lambda c: (-c[0], c[1]))
            return best[2], 0
        if payload:
            payload = bytes(payload)
            for prio, _, _, tid, sig in self.payload:
                if self.sig_matches(sig, proto, sport, dport, payload):
                    cands.append((prio, 0, tid))
                    break
            if self.suffix and payload[0] == 0x16 and proto == PROTO_TCP:
                name = sni_reference(payload)
                hit = self.sni_service(name) if name else None
                if hit:
                    lid, override = hit
                    if override:
                        cands.append((override[0], 1, override[1]))
                    if lid:
                        sni_label = lid
                        if lid in self.hints:
                            cands.append((self.hints[lid][0], 2, self.hints[lid][1]))
        if gre_ver is not None:
            for ver, ptype, prio, tid in self.gre:
                if ver == gre_ver and (ptype is None or ptype == (gre_ptype or 0)):
                    cands.append((prio, 3, tid))
                    break
        if proto is not None:
            if sport is not None and proto in (6, 17, 132):
                s = self.ports.get((proto, sport))
                d = self.ports.get((proto, dport))
                pick = None
                if s and d:
                    if s[0] != d[0]:
                        pick = s if s[0] > d[0] else d
                    else:
                        pick = s if sport <= dport else d
                else:
                    pick = s or d
                if pick:
                    cands.append((pick[0], 4, pick[1]))
            if proto in self.protocols:
                cands.append((self.protocols[proto][0], 5, self.protocols[proto][1]))
        if peer_label in self.hints:
            cands.append((self.hints[peer_label][0], 6, self.hints[peer_label][1]))
        if not cands:
            return 0, sni_label
        best = min(cands, key=lambda c: (-c[0], c[1]))
        return best[2], sni_label
