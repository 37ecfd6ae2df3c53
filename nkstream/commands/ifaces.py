"""`nkstream ifaces`: interfaces a sensor could capture on, with their state and the
kernel's counters (from rtnetlink, via pyroute2)."""
import json


def add_parser(sub):
    p = sub.add_parser("ifaces", help="list network interfaces with state, MTU, promiscuity, counters",
                       description="List network interfaces: index, admin state and operstate, MTU, "
                                   "promiscuity count, driver, and the kernel's rx/tx packet, byte "
                                   "and drop counters.")
    p.add_argument("--json", action="store_true", help="one JSON object per interface")
    p.add_argument("names", nargs="*", metavar="IFACE", help="only these interfaces")
    return p


def _fmt(n):
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000.0
    return f"{n:.1f}P"


def run(args):
    from ..cli import UserError
    from ..ifaces import list_interfaces

    rows = list_interfaces()
    if args.names:
        known = {r["name"] for r in rows}
        missing = [n for n in args.names if n not in known]
        if missing:
            raise UserError(f"no such interface: {', '.join(missing)}")
        rows = [r for r in rows if r["name"] in args.names]
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))
        return 0
    cols = ["index", "name", "admin", "operstate", "mtu", "promisc", "driver",
            "rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped"]
    table = [[str(r["index"]), r["name"], r["admin"], r["operstate"], str(r["mtu"]),
              str(r["promiscuity"]), r["driver"] or "-"]
             + [_fmt(r[c]) for c in cols[7:]] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) if i < 7 else v.rjust(w) for i, (v, w) in enumerate(zip(t, widths))).rstrip())
    return 0
