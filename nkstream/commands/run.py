"""`nkstream run -i IFACE`: the live sensor (docs/live-capture.md)."""
import os


def add_parser(sub):
    p = sub.add_parser(
        "run", help="capture from a live interface and write a snapshot every interval",
        description="Capture from a live interface (AF_PACKET TPACKET_V3 ring with fanout, or "
                    "libpcap), classify in the native core and write one snapshot per "
                    "wall-clock interval.  SIGTERM/SIGINT flush the partial window and exit 0; "
                    "SIGHUP reloads prefix tables and rules.  Needs root or CAP_NET_RAW.  "
                    "Settings come from the flags, else from the config file's [capture], [output] and [sensor] tables.")
    p.add_argument("-i", "--interface", dest="iface", metavar="IFACE", help="interface to capture on")
    p.add_argument("-w", "--workers", type=int, help="capture worker processes (default 1)")
    p.add_argument("--engine", choices=["afpacket", "pcap"], help="capture engine (default afpacket)")
    p.add_argument("--bpf", metavar="EXPR", help="capture filter in tcpdump syntax")
    p.add_argument("--interval", type=float, metavar="S", help="snapshot interval in seconds (default 60)")
    p.add_argument("--out-dir", metavar="DIR", help="where snapshots go (default .)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("-c", "--config", metavar="CONFIG", help="TOML config: tables, rules, [capture] and [output] settings")
    p.add_argument("--user", metavar="USER", help="drop root to USER once the sockets are open")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics (prometheus-client)")
    p.add_argument("--fanout", choices=["hash", "cpu", "lb"], help="how workers share packets (default hash)")
    p.add_argument("--block-size", metavar="SIZE", help="AF_PACKET ring block size (default 1M)")
    p.add_argument("--block-count", type=int, metavar="N", help="AF_PACKET ring blocks per worker (default 64)")
    p.add_argument("--block-timeout", type=int, metavar="MS", help="AF_PACKET block timeout (default 10 ms)")
    p.add_argument("--snaplen", type=int, metavar="BYTES", help="libpcap engine snapshot length (default 262144)")
    p.add_argument("--retain-count", type=int, metavar="N", help="keep only the newest N snapshots")
    p.add_argument("--retain-age", type=float, metavar="S", help="delete snapshots older than S seconds")
    p.add_argument("--host", help="sensor name in snapshots and file names (default: host name)")
    return p


# flag name -> (LiveOptions field, converter)
_SETTINGS = {
    "iface": ("iface", str), "workers": ("workers", int), "engine": ("engine", str),
    "bpf": ("bpf", str), "interval": ("interval", float), "out_dir": ("out_dir", str),
    "duration": ("duration", float), "user": ("user", str), "metrics": ("metrics", str),
    "fanout": ("fanout", str), "block_size": ("block_size", None), "block_count": ("block_count", int),
    "block_timeout": ("block_timeout_ms", int), "retain_count": ("retain_count", int),
    "retain_age": ("retain_age", float), "host": ("host", str), "snaplen": ("snaplen", int),
}


def run(args):
    from ..cli import UserError
    from ..live import LiveOptions, LiveSensor, PipelineBackend, parse_size

    backend = PipelineBackend(args.config)
    try:
        config = backend.load()          # a bad file stops here, before any socket is opened
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
    settings = backend.settings(config)
    values = {}
    for flag, (field, conv) in _SETTINGS.items():
        v = getattr(args, flag)
        if v is None:
            v = settings.get(field)
        if v is None:
            continue
        try:
            values[field] = parse_size(v) if flag == "block_size" else conv(v)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad {flag.replace('_', '-')} {v!r}: {exc}") from None
    if not values.get("iface"):
        raise UserError("no interface: give -i IFACE (or interface in the config's [capture] table)")
    if values.get("engine") == "pcap" or values.get("bpf"):
        try:
            from .. import _pcap  # noqa: F401
        except ImportError:
            raise UserError("this build has no libpcap support (nkstream._pcap): install libpcap-dev "
                            "and rebuild, or use --engine afpacket without --bpf") from None
    if os.geteuid() != 0 and values.get("user"):
        raise UserError("--user needs to start as root")
    opts = LiveOptions(**values)
    try:
        sensor = LiveSensor(opts, backend, config=config)
        return sensor.run()
    except PermissionError as exc:
        raise UserError(f"{exc} (capturing needs root or CAP_NET_RAW; see docs/live-capture.md)") from None
