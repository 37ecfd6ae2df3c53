"""The TOML configuration file shared by `classify`, `lookup`, `run` and `bench`.

Everything has a default, so no file is needed: the shipped watch table, the shipped
peer table and the shipped signature rules.  A file names its own tables and rules
(paths relative to the file) and tunes the sensor.  Example (examples/nkstream.toml):

    [tables]
    watch = ["watch.csv"]                      # cidr,label
    peers = ["peers.csv", {path = "ipasn.dat.gz", format = "ipasn", asnames = "asnames.json.gz"}]
    defaults = true        # also load the shipped watch / peer tables (mine are merged on top)

    [rules]
    files = ["local-rules.toml"]               # extend or override the shipped signatures
    defaults = true

    [counters]
    capacity = 262144      # distinct keys per window before the overflow bucket

    [flows]
    enabled = true
    capacity = 1048576     # flow slots, 64 bytes + a fingerprint byte each (docs/flows.md)
    tcp_timeout = 300      # seconds idle (capture time) before a flow ends
    tcp_closed_timeout = 5 # after RST or FIN both ways
    udp_timeout = 120
    other_timeout = 60
    inspect_packets = 10   # per direction, looking for a payload / SNI verdict
    inspect_bytes = 65536  # on-wire bytes per direction, likewise

    [output]
    dir = "/var/lib/nkstream"
    interval = 300         # seconds per snapshot window, aligned to the wall clock
    retain_count = 2016    # keep at most this many snapshots (0 = unlimited)
    retain_age = 0         # delete snapshots older than this many seconds (0 = never)

    [capture]
    interface = "eth0"
    engine = "afpacket"    # or "pcap"
    workers = 1
    fanout = "hash"        # hash | cpu | lb
    bpf = ""
    block_size = 1048576
    block_count = 64
    block_timeout_ms = 10
    snaplen = 262144

    [sensor]
    name = ""              # defaults to the host name

A bad file raises ConfigError with the file and the key; a running sensor that is
asked to reload keeps its old configuration when that happens.
"""
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as _toml


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and key."""


@dataclass
class TableSource:
    path: str
    format: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    path: Optional[str] = None
    watch: List[TableSource] = field(default_factory=list)
    peers: List[TableSource] = field(default_factory=list)
    table_defaults: bool = True
    rule_files: List[str] = field(default_factory=list)
    rule_defaults: bool = True
    counter_capacity: int = 1 << 18
    flows_enabled: bool = True
    flow_capacity: int = 1 << 20
    # FlowTable keyword arguments beyond capacity (timeouts, inspection budget)
    flow_options: Dict[str, Any] = field(default_factory=dict)
    out_dir: Optional[str] = None
    interval: float = 300.0
    retain_count: int = 0
    retain_age: float = 0.0
    interface: Optional[str] = None
    engine: str = "afpacket"
    workers: int = 1
    fanout: str = "hash"
    bpf: str = ""
    block_size: int = 1 << 20
    block_count: int = 64
    block_timeout_ms: int = 10
    snaplen: int = 262144
    sensor: str = ""

    @property
    def sensor_name(self):
        return self.sensor or socket.gethostname()


_SECTIONS = {
    "tables": {"watch", "peers", "defaults"},
    "rules": {"files", "defaults"},
    "counters": {"capacity"},
    "flows": {"enabled", "capacity", "tcp_timeout", "tcp_closed_timeout", "udp_timeout",
              "other_timeout", "inspect_packets", "inspect_bytes"},
    "output": {"dir", "interval", "retain_count", "retain_age"},
    "capture": {"interface", "engine", "workers", "fanout", "bpf", "block_size",
                "block_count", "block_timeout_ms", "snaplen"},
    "sensor": {"name"},
}


def _err(path, key, msg):
    return ConfigError(f"{path}: [{key}]: {msg}")


def _get(sec, name, typ, path, secname, default):
    if name not in sec:
        return default
    val = sec[name]
    if typ is float and isinstance(val, int) and not isinstance(val, bool):
        val = float(val)
    if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
        raise _err(path, f"{secname}.{name}", f"expected {typ.__name__}, got {val!r}")
    return val


def _sources(val, base, path, key):
    if isinstance(val, (str, dict)):
        val = [val]
    if not isinstance(val, list):
        raise _err(path, key, f"expected a list of files, got {val!r}")
    out = []
    for i, item in enumerate(val):
        if isinstance(item, str):
            out.append(TableSource(os.path.join(base, item)))
        elif isinstance(item, dict) and isinstance(item.get("path"), str):
            opts = {k: v for k, v in item.items() if k not in ("path", "format")}
            for k, v in opts.items():  # file-valued options are relative to the config too
                if k in ("asnames",) and isinstance(v, str):
                    opts[k] = os.path.join(base, v)
            fmt = item.get("format")
            if fmt is not None and not isinstance(fmt, str):
                raise _err(path, f"{key}[{i}].format", f"expected a string, got {fmt!r}")
            out.append(TableSource(os.path.join(base, item["path"]), fmt, opts))
        else:
            raise _err(path, f"{key}[{i}]", f"expected a path or {{path = ..., format = ...}}, got {item!r}")
    return out


def load_config(path=None):
    """Read a config file (None: all defaults). Raises ConfigError naming file and key."""
    cfg = Config()
    if path is None:
        return cfg
    try:
        with open(path, "rb") as fh:
            doc = _toml.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    cfg.path = os.path.abspath(path)
    base = os.path.dirname(cfg.path)
    for secname, sec in doc.items():
        if secname not in _SECTIONS:
            raise _err(path, secname, f"unknown section (known: {', '.join(sorted(_SECTIONS))})")
        if not isinstance(sec, dict):
            raise _err(path, secname, "expected a table")
        unknown = set(sec) - _SECTIONS[secname]
        if unknown:
            raise _err(path, f"{secname}.{sorted(unknown)[0]}", "unknown key")
    t = doc.get("tables", {})
    if "watch" in t:
        cfg.watch = _sources(t["watch"], base, path, "tables.watch")
    if "peers" in t:
        cfg.peers = _sources(t["peers"], base, path, "tables.peers")
    cfg.table_defaults = _get(t, "defaults", bool, path, "tables", True)
    r = doc.get("rules", {})
    files = r.get("files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise _err(path, "rules.files", f"expected a list of paths, got {files!r}")
    cfg.rule_files = [os.path.join(base, f) for f in files]
    cfg.rule_defaults = _get(r, "defaults", bool, path, "rules", True)
    c = doc.get("counters", {})
    cfg.counter_capacity = _get(c, "capacity", int, path, "counters", cfg.counter_capacity)
    if not 16 <= cfg.counter_capacity <= 1 << 26:
        raise _err(path, "counters.capacity", "must be between 16 and 67108864")
    f = doc.get("flows", {})
    cfg.flows_enabled = _get(f, "enabled", bool, path, "flows", cfg.flows_enabled)
    cfg.flow_capacity = _get(f, "capacity", int, path, "flows", cfg.flow_capacity)
    if not 16 <= cfg.flow_capacity <= 1 << 27:
        raise _err(path, "flows.capacity", "must be between 16 and 134217728")
    for key in ("tcp_timeout", "tcp_closed_timeout", "udp_timeout", "other_timeout"):
        if key in f:
            v = _get(f, key, float, path, "flows", None)
            if not 0 < v <= 604800:
                raise _err(path, f"flows.{key}", "must be in (0, 604800] seconds")
            cfg.flow_options[key] = v
    for key, lo, hi in (("inspect_packets", 1, 127), ("inspect_bytes", 0, 1 << 30)):
        if key in f:
            v = _get(f, key, int, path, "flows", None)
            if not lo <= v <= hi:
                raise _err(path, f"flows.{key}", f"must be between {lo} and {hi}")
            cfg.flow_options[key] = v
    o = doc.get("output", {})
    d = _get(o, "dir", str, path, "output", None)
    cfg.out_dir = os.path.join(base, d) if d else None
    cfg.interval = _get(o, "interval", float, path, "output", cfg.interval)
    if cfg.interval <= 0:
        raise _err(path, "output.interval", "must be positive")
    cfg.retain_count = _get(o, "retain_count", int, path, "output", 0)
    cfg.retain_age = _get(o, "retain_age", float, path, "output", 0.0)
    cap = doc.get("capture", {})
    cfg.interface = _get(cap, "interface", str, path, "capture", None)
    cfg.engine = _get(cap, "engine", str, path, "capture", cfg.engine)
    if cfg.engine not in ("afpacket", "pcap"):
        raise _err(path, "capture.engine", f"expected 'afpacket' or 'pcap', got {cfg.engine!r}")
    cfg.workers = _get(cap, "workers", int, path, "capture", 1)
    if not 1 <= cfg.workers <= 256:
        raise _err(path, "capture.workers", "must be between 1 and 256")
    cfg.fanout = _get(cap, "fanout", str, path, "capture", "hash")
    if cfg.fanout not in ("hash", "cpu", "lb"):
        raise _err(path, "capture.fanout", f"expected hash, cpu or lb, got {cfg.fanout!r}")
    cfg.bpf = _get(cap, "bpf", str, path, "capture", "")
    for k in ("block_size", "block_count", "block_timeout_ms", "snaplen"):
        setattr(cfg, k, _get(cap, k, int, path, "capture", getattr(cfg, k)))
    cfg.sensor = _get(doc.get("sensor", {}), "name", str, path, "sensor", "")
    return cfg


def build_tables(cfg):
    """(watch, peers) PrefixTables for a config: shipped defaults first, then the
    config's files merged on top (longest prefix wins; an equal prefix: later wins)."""
    from .prefixes import PrefixTable, default_peers, default_watch

    watch = default_watch() if (cfg.table_defaults and not cfg.watch) else PrefixTable()
    peers = default_peers() if cfg.table_defaults else PrefixTable()
    for src in cfg.watch:
        _load_into(watch, src)
    for src in cfg.peers:
        _load_into(peers, src)
    return watch, peers


def _load_into(table, src):
    try:
        table.load_into(src.path, format=src.format, **src.options)
    except FileNotFoundError:
        raise ConfigError(f"{src.path}: no such file") from None


def build_rules(cfg):
    from .rules import Rules

    return Rules.load(*cfg.rule_files, defaults=cfg.rule_defaults)
