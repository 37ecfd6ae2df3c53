"""Signature rules as data: load, merge, validate and compile TOML rule files.

The shipped defaults live in ``nkstream/data/rules.toml``; a user's files extend or
override them (docs/signatures.md has the schema and the merge rules).  ``compile``
turns the rules into the flat tables of :class:`nkstream._core.RuleCore` that the
native tagger indexes per packet.

Merge rules, in load order (defaults first, then each user file in turn):
- ``[tag.NAME]`` defines tag NAME.  A later file defining the same NAME replaces the
  whole earlier definition (category and every rule); the tag keeps its id.  A new
  NAME is appended.  ``enabled = false`` keeps the tag (and its category) but drops
  all of its rules.
- ``[services]`` maps a peer label to SNI suffixes.  A later file listing the same
  label replaces that label's suffix list; other labels are kept.
- Where two rules claim the same port, protocol, peer label or SNI suffix, the higher
  ``priority`` wins; at equal priority the rule from the later file wins, and two
  such rules within one file are an error.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

CATEGORIES = (
    "video-gaming",
    "browsing-email-downloads",
    "vpn-obfuscation",
    "mining",
    "infrastructure",
    "other",
    "unknown",
)

DEFAULT_RULES = Path(__file__).resolve().parent / "data" / "rules.toml"

# Default priority of each rule class (docs/signatures.md "Priority").  With these,
# payload signature > port/protocol/GRE > peer-label hint > unknown.
PRIO_PAYLOAD = 200
PRIO_SNI = 200
PRIO_PORT = 100
PRIO_PROTOCOL = 100
PRIO_GRE = 100
PRIO_HINT = 50

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PATTERN_MAX = 64          # nkstream/core/rules.pxi SIG_PAT_MAX
OFFSET_MAX = 1500
WITHIN_MAX = 4096         # nkstream/core/rules.pxi NEEDLE_WINDOW_MAX
WITHIN_DEFAULT = 512
GRE_MAX = 16

_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_LABEL_RE = re.compile(r"^[^\s,]{1,128}$")
_SUFFIX_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_-]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")

_TAG_KEYS = {"category", "description", "source", "enabled", "ports", "protocols",
             "gre", "payload", "sni", "peer_labels"}
_PAYLOAD_KEYS = {"pattern", "text", "offset", "proto", "ports", "min_len", "max_len",
                 "len", "len_multiple", "length_prefix", "contains", "within",
                 "priority", "note"}
_TOP_KEYS = {"tag", "services"}


class RulesError(ValueError):
    """A rules file is invalid: ``FILE: rule 'NAME': what is wrong``."""


@dataclass
class TagDef:
    name: str
    category: str
    description: str = ""
    source: str = ""
    enabled: bool = True
    ports: List[Tuple[int, int, int, int]] = field(default_factory=list)   # proto, lo, hi, prio
    protocols: List[Tuple[int, int]] = field(default_factory=list)         # ipproto, prio
    gre: List[Tuple[int, Optional[int], int]] = field(default_factory=list)  # ver, ptype, prio
    payload: List[Dict[str, Any]] = field(default_factory=list)
    sni: List[Tuple[str, int]] = field(default_factory=list)               # suffix, prio
    peer_labels: List[Tuple[str, int]] = field(default_factory=list)       # label, prio
    file: str = ""
    file_index: int = 0


# ---------------------------------------------------------------------------
# Parsing helpers; each raises _Bad(what) and the caller adds FILE and rule name.

class _Bad(Exception):
    pass


def _int(v, what, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{what} must be an integer, not {v!r}")
    if not lo <= v <= hi:
        raise _Bad(f"{what} {v} out of range {lo}..{hi}")
    return v


def _prio(entry, default, what):
    if isinstance(entry, dict) and "priority" in entry:
        return _int(entry["priority"], f"{what} priority", 1, 255)
    return default


def _port_range(text, what):
    """'443' or '5000-5500' (or an int) -> (lo, hi)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return (_int(text, what, 0, 65535),) * 2
    if not isinstance(text, str):
        raise _Bad(f"{what} must be a port or 'LO-HI' string, not {text!r}")
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", text)
    if not m:
        raise _Bad(f"{what} {text!r} is not a port or a LO-HI range")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if lo > 65535 or hi > 65535:
        raise _Bad(f"{what} {text!r} out of range 0..65535")
    if lo > hi:
        raise _Bad(f"{what} {text!r}: range start above its end")
    return lo, hi


def _port_spec(entry, default_prio):
    """'tcp:1723', 'tcp/udp:53', 'udp:27015-27050' or {spec=..., priority=N}."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"spec", "priority", "note"}
        if unknown:
            raise _Bad(f"ports entry: unknown key {sorted(unknown)[0]!r} (expected spec, priority, note)")
        if "spec" not in entry:
            raise _Bad("ports entry: missing 'spec'")
        spec = entry["spec"]
    else:
        spec = entry
    if not isinstance(spec, str) or ":" not in spec:
        raise _Bad(f"port spec {spec!r} must look like 'tcp:443', 'tcp/udp:53' or 'udp:5000-5500'")
    protos, ports = spec.split(":", 1)
    out = []
    lo, hi = _port_range(ports, f"port spec {spec!r}:")
    prio = _prio(entry, default_prio, f"port spec {spec!r}")
    for name in protos.split("/"):
        name = name.strip().lower()
        if name not in PROTO_NUMBERS:
            raise _Bad(f"port spec {spec!r}: unknown transport {name!r} (expected tcp, udp or sctp)")
        out.append((PROTO_NUMBERS[name], lo, hi, prio))
    return out


_HEX = re.compile(r"^[0-9a-fA-F]{2}$")


def _pattern(text):
    """Whitespace-separated byte tokens -> [(mask, lo, hi)].

    ``hh`` exact byte; ``??`` any byte; ``hh/mm`` the byte ANDed with mm equals hh;
    ``lo-hi`` a byte in that range (inclusive).
    """
    if not isinstance(text, str):
        raise _Bad(f"pattern must be a string of hex bytes, not {text!r}")
    out = []
    for tok in text.split():
        if tok == "??":
            out.append((0, 0, 0))
        elif _HEX.match(tok):
            v = int(tok, 16)
            out.append((0xFF, v, v))
        elif "/" in tok and all(_HEX.match(x) for x in tok.split("/", 1)):
            v, m = (int(x, 16) for x in tok.split("/", 1))
            if v & ~m & 0xFF:
                raise _Bad(f"pattern byte {tok!r}: value has bits outside the mask")
            out.append((m, v, v))
        elif "-" in tok and all(_HEX.match(x) for x in tok.split("-", 1)):
            lo, hi = (int(x, 16) for x in tok.split("-", 1))
            if lo > hi:
                raise _Bad(f"pattern byte {tok!r}: range start above its end")
            out.append((0xFF, lo, hi))
        else:
            raise _Bad(f"pattern byte {tok!r} is not hh, ??, hh/mm or lo-hi (hex)")
    if not out:
        raise _Bad("pattern is empty")
    return out


def _payload_rule(d):
    if not isinstance(d, dict):
        raise _Bad(f"payload entries must be tables, not {d!r}")
    unknown = set(d) - _PAYLOAD_KEYS
    if unknown:
        raise _Bad(f"payload: unknown key {sorted(unknown)[0]!r} (expected one of {', '.join(sorted(_PAYLOAD_KEYS))})")
    if ("pattern" in d) == ("text" in d):
        raise _Bad("payload: give exactly one of 'pattern' (hex bytes) or 'text'")
    if "pattern" in d:
        pat = _pattern(d["pattern"])
    else:
        t = d["text"]
        if not isinstance(t, str) or not t:
            raise _Bad(f"payload text must be a non-empty string, not {t!r}")
        try:
            raw = t.encode("latin-1")
        except UnicodeEncodeError:
            raise _Bad(f"payload text {t!r} is not latin-1") from None
        pat = [(0xFF, b, b) for b in raw]
    if len(pat) > PATTERN_MAX:
        raise _Bad(f"payload pattern is {len(pat)} bytes, more than {PATTERN_MAX}")
    off = _int(d.get("offset", 0), "payload offset", 0, OFFSET_MAX)
    proto = d.get("proto")
    if proto is not None:
        if not isinstance(proto, str) or proto.lower() not in PROTO_NUMBERS:
            raise _Bad(f"payload proto {proto!r} must be tcp, udp or sctp")
        proto = PROTO_NUMBERS[proto.lower()]
    ports = d.get("ports")
    port_ranges = [None]
    if ports is not None:
        if not isinstance(ports, list) or not ports:
            raise _Bad("payload ports must be a non-empty list of ports or 'LO-HI' strings")
        port_ranges = [_port_range(p, "payload port") for p in ports]
    min_len = max_len = None
    if "len" in d:
        if "min_len" in d or "max_len" in d:
            raise _Bad("payload: 'len' excludes 'min_len'/'max_len'")
        min_len = max_len = _int(d["len"], "payload len", 1, 65535)
    if "min_len" in d:
        min_len = _int(d["min_len"], "payload min_len", 0, 65535)
    if "max_len" in d:
        max_len = _int(d["max_len"], "payload max_len", 1, 65535)
    if min_len is not None and max_len is not None and min_len > max_len:
        raise _Bad(f"payload min_len {min_len} above max_len {max_len}")
    if max_len is not None and off + len(pat) > max_len:
        raise _Bad("payload pattern cannot fit within max_len")
    len_mod = _int(d.get("len_multiple", 0), "payload len_multiple", 0, 65535)
    lp = d.get("length_prefix", False)
    if not isinstance(lp, bool):
        raise _Bad(f"payload length_prefix must be true or false, not {lp!r}")
    contains = d.get("contains")
    needles = [None]
    if contains is not None:
        if not isinstance(contains, list) or not contains or not all(isinstance(c, str) and c for c in contains):
            raise _Bad("payload contains must be a non-empty list of non-empty strings")
        try:
            needles = [c.encode("latin-1") for c in contains]
        except UnicodeEncodeError:
            raise _Bad("payload contains strings must be latin-1") from None
    within = _int(d.get("within", WITHIN_DEFAULT), "payload within", 1, WITHIN_MAX)
    if contains is None and "within" in d:
        raise _Bad("payload 'within' needs 'contains'")
    prio = _prio(d, PRIO_PAYLOAD, "payload")
    # One compiled signature per (port range, needle): each stays a conjunction.
    return [dict(pattern=pat, offset=off, proto=proto, ports=pr, min_len=min_len,
                 max_len=max_len, len_mod=len_mod, length_prefix=lp, needle=nd,
                 within=within, prio=prio)
            for pr in port_ranges for nd in needles]


def _list(v, what):
    if not isinstance(v, list):
        raise _Bad(f"{what} must be a list, not {v!r}")
    return v


def _named_entries(v, what, key, default_prio, check):
    out = []
    for e in _list(v, what):
        if isinstance(e, dict):
            unknown = set(e) - {key, "priority", "note"}
            if unknown:
                raise _Bad(f"{what} entry: unknown key {sorted(unknown)[0]!r} (expected {key}, priority, note)")
            if key not in e:
                raise _Bad(f"{what} entry: missing {key!r}")
            name = e[key]
        else:
            name = e
        if not isinstance(name, str) or not check(name):
            raise _Bad(f"{what} entry {name!r} is not a valid {key}")
        out.append((name, _prio(e, default_prio, f"{what} {name!r}")))
    return out


def _tag(name, d, file, file_index):
    if not _TAG_RE.match(name):
        raise _Bad("tag names are 1-63 characters of a-z, 0-9, '.', '_', '-'")
    if name == "unknown":
        raise _Bad("'unknown' is reserved (tag 0: nothing matched)")
    if not isinstance(d, dict):
        raise _Bad("must be a table")
    unknown = set(d) - _TAG_KEYS
    if unknown:
        raise _Bad(f"unknown key {sorted(unknown)[0]!r} (expected one of {', '.join(sorted(_TAG_KEYS))})")
    if "category" not in d:
        raise _Bad("missing 'category'")
    cat = d["category"]
    if cat not in CATEGORIES:
        raise _Bad(f"unknown category {cat!r} (expected one of {', '.join(CATEGORIES)})")
    if cat == "unknown":
        raise _Bad("category 'unknown' is reserved for the tag 'unknown'")
    t = TagDef(name=name, category=cat, file=file, file_index=file_index)
    for k in ("description", "source"):
        if k in d:
            if not isinstance(d[k], str):
                raise _Bad(f"{k} must be a string")
            setattr(t, k, d[k])
    if "enabled" in d:
        if not isinstance(d["enabled"], bool):
            raise _Bad("enabled must be true or false")
        t.enabled = d["enabled"]
    for e in _list(d.get("ports", []), "ports"):
        t.ports.extend(_port_spec(e, PRIO_PORT))
    for e in _list(d.get("protocols", []), "protocols"):
        num = e.get("protocol") if isinstance(e, dict) else e
        if isinstance(e, dict):
            unknown = set(e) - {"protocol", "priority", "note"}
            if unknown:
                raise _Bad(f"protocols entry: unknown key {sorted(unknown)[0]!r} (expected protocol, priority, note)")
        t.protocols.append((_int(num, "IP protocol", 0, 255), _prio(e, PRIO_PROTOCOL, "protocol")))
    for e in _list(d.get("gre", []), "gre"):
        if not isinstance(e, dict):
            raise _Bad(f"gre entries must be tables like {{version = 1, protocol_type = 0x880B}}, not {e!r}")
        unknown = set(e) - {"version", "protocol_type", "priority", "note"}
        if unknown:
            raise _Bad(f"gre entry: unknown key {sorted(unknown)[0]!r} (expected version, protocol_type, priority, note)")
        if "version" not in e:
            raise _Bad("gre entry: missing 'version'")
        ver = _int(e["version"], "GRE version", 0, 7)
        ptype = e.get("protocol_type")
        if ptype is not None:
            ptype = _int(ptype, "GRE protocol_type", 0, 0xFFFF)
        t.gre.append((ver, ptype, _prio(e, PRIO_GRE, "gre")))
    for e in _list(d.get("payload", []), "payload"):
        t.payload.extend(_payload_rule(e))
    t.sni = _named_entries(d.get("sni", []), "sni", "suffix", PRIO_SNI, _SUFFIX_RE.match)
    t.peer_labels = _named_entries(d.get("peer_labels", []), "peer_labels", "label", PRIO_HINT,
                                   _LABEL_RE.match)
    if not t.enabled:
        t.ports, t.protocols, t.gre, t.payload, t.sni, t.peer_labels = [], [], [], [], [], []
    return t


# ---------------------------------------------------------------------------

class Rules:
    """Loaded, merged and validated signature rules.

    ``tags[0]`` is ``'unknown'``; ``tag_category[i]`` is the category of ``tags[i]``.
    """

    def __init__(self):
        self._tags: Dict[str, TagDef] = {}
        self._order: List[str] = []
        self.services: Dict[str, List[str]] = {}   # peer label -> SNI suffixes
        self._service_src: Dict[str, Tuple[str, int]] = {}
        self.files: List[str] = []

    # -- loading ---------------------------------------------------------------
    @classmethod
    def load(cls, *paths, defaults=True):
        """Load the shipped defaults (unless ``defaults=False``), then each path in
        order; later files extend or override earlier ones (module docstring)."""
        self = cls()
        files = ([DEFAULT_RULES] if defaults else []) + [Path(p) for p in paths]
        for i, p in enumerate(files):
            self._load_file(Path(p), i)
        self._check_conflicts()
        return self

    @classmethod
    def from_string(cls, text, name="<string>", defaults=True):
        """Like ``load`` for rules given as TOML text (tests, embedded configs)."""
        self = cls()
        if defaults:
            self._load_file(DEFAULT_RULES, 0)
        self._load_text(text, name, 1 if defaults else 0)
        self._check_conflicts()
        return self

    def _load_file(self, path, index):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RulesError(f"{path}: cannot read rules: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise RulesError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
        self._load_text(text, str(path), index)

    def _load_text(self, text, name, index):
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RulesError(f"{name}: invalid TOML: {e}") from None
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise RulesError(f"{name}: unknown top-level key {sorted(unknown)[0]!r} (expected [tag.NAME] tables and [services])")
        tags = doc.get("tag", {})
        if not isinstance(tags, dict):
            raise RulesError(f"{name}: 'tag' must be tables [tag.NAME]")
        for tname, d in tags.items():
            try:
                t = _tag(tname, d, name, index)
            except _Bad as e:
                raise RulesError(f"{name}: rule {tname!r}: {e}") from None
            if tname not in self._tags:
                self._order.append(tname)
            self._tags[tname] = t
        services = doc.get("services", {})
        if not isinstance(services, dict):
            raise RulesError(f"{name}: 'services' must be a table of label = [suffixes]")
        for label, sfx in services.items():
            try:
                if not _LABEL_RE.match(label):
                    raise _Bad("label must be 1-128 characters without spaces or commas")
                if not isinstance(sfx, list) or not all(isinstance(s, str) for s in sfx):
                    raise _Bad("must be a list of domain-suffix strings")
                for s in sfx:
                    if not _SUFFIX_RE.match(s):
                        raise _Bad(f"{s!r} is not a domain suffix (like 'fbcdn.net')")
            except _Bad as e:
                raise RulesError(f"{name}: service {label!r}: {e}") from None
            self.services[label] = [s.lower().rstrip(".") for s in sfx]
            self._service_src[label] = (name, index)
        self.files.append(name)

    def _check_conflicts(self):
        """Two rules of one file claiming the same key at the same priority with
        different verdicts are ambiguous: an error naming both."""
        def claim(seen, key, tag, prio, t, what):
            prev = seen.get(key)
            if prev and prev[0] != tag and prev[1] == prio and prev[2] == t.file_index:
                raise RulesError(f"{t.file}: rule {tag!r}: {what} is also claimed by "
                                 f"rule {prev[0]!r} at the same priority {prio}")
            if prev is None or prio >= prev[1]:
                seen[key] = (tag, prio, t.file_index)

        ports, protos, labels, sni, gre = {}, {}, {}, {}, {}
        for t in self._sorted_defs():
            for proto, lo, hi, prio in t.ports:
                pname = {6: "tcp", 17: "udp", 132: "sctp"}[proto]
                for port in range(lo, hi + 1):
                    claim(ports, (proto, port), t.name, prio, t, f"{pname} port {port}")
            for num, prio in t.protocols:
                claim(protos, num, t.name, prio, t, f"IP protocol {num}")
            for ver, ptype, prio in t.gre:
                claim(gre, (ver, ptype), t.name, prio, t,
                      f"GRE version {ver} type {'any' if ptype is None else hex(ptype)}")
            for label, prio in t.peer_labels:
                claim(labels, label, t.name, prio, t, f"peer label {label!r}")
            for suffix, prio in t.sni:
                claim(sni, suffix.lower().rstrip("."), t.name, prio, t, f"SNI suffix {suffix!r}")
        owner = {}
        for label, sfx in self.services.items():
            for s in sfx:
                if s in owner and owner[s] != label and \
                        self._service_src[owner[s]][1] == self._service_src[label][1]:
                    raise RulesError(f"{self._service_src[label][0]}: service {label!r}: suffix "
                                     f"{s!r} is also listed for service {owner[s]!r}")
                if s not in owner or self._service_src[label][1] >= self._service_src[owner[s]][1]:
                    owner[s] = label
        self._sni_owner = owner
        if sum(len(t.gre) for t in self._tags.values()) > GRE_MAX:
            raise RulesError(f"{self.files[-1]}: more than {GRE_MAX} GRE rules in all")

    def _sorted_defs(self):
        # load order of definitions: earlier files first, so later ones override ties
        return sorted((self._tags[n] for n in self._order), key=lambda t: t.file_index)

    # -- views -----------------------------------------------------------------
    @property
    def tags(self) -> Tuple[str, ...]:
        return ("unknown",) + tuple(self._order)

    @property
    def tag_category(self) -> Tuple[str, ...]:
        return ("unknown",) + tuple(self._tags[n].category for n in self._order)

    @property
    def categories(self) -> Tuple[str, ...]:
        return CATEGORIES

    def tag_id(self, name: str) -> int:
        try:
            return self.tags.index(name)
        except ValueError:
            raise KeyError(name) from None

    def category_of(self, tag: str) -> str:
        return self.tag_category[self.tag_id(tag)]

    def definition(self, name: str) -> TagDef:
        return self._tags[name]

    # -- compile -----------------------------------------------------------------
    def compile(self, peer_table):
        """Compile into a :class:`nkstream._core.RuleCore` against ``peer_table``.

        ``peer_table`` is a ``nkstream.prefixes.PrefixTable`` (or anything with
        ``labels`` and ``label_id(name)``): SNI services and peer-label hints are
        resolved to its label ids, interning labels it does not have yet.
        """
        from nkstream._core import RuleCore

        ids = {n: i for i, n in enumerate(self.tags)}
        ports, protocols, gre, payload, hints, suffixes = [], [], [], [], [], []
        for t in self._sorted_defs():
            tid = ids[t.name]
            for proto, lo, hi, prio in t.ports:
                ports.append((proto, lo, hi, tid, prio))
            for num, prio in t.protocols:
                protocols.append((num, tid, prio))
            for ver, ptype, prio in t.gre:
                gre.append((ver, ptype, tid, prio))
            for sig in t.payload:
                payload.append(dict(sig, tag=tid, file_index=t.file_index))
            for label, prio in t.peer_labels:
                hints.append((peer_table.label_id(label), tid, prio))
        # SNI: one entry per suffix, carrying the service label and any tag override
        sni_tag = {}
        for t in self._sorted_defs():
            for suffix, prio in t.sni:
                s = suffix.lower().rstrip(".")
                if s not in sni_tag or prio >= sni_tag[s][1]:
                    sni_tag[s] = (ids[t.name], prio)
        # at equal priority the later file's payload signature is tried first
        payload.sort(key=lambda d: -d.pop("file_index"))
        for s in sorted(set(self._sni_owner) | set(sni_tag)):
            label = self._sni_owner.get(s)
            lid = peer_table.label_id(label) if label else 0
            tid, prio = sni_tag.get(s, (0, 0))
            suffixes.append((s, lid, tid, prio))
        return RuleCore(self.tags, ports=ports, protocols=protocols, gre=gre,
                        payload=payload, hints=hints, suffixes=suffixes,
                        n_labels=len(peer_table.labels))
