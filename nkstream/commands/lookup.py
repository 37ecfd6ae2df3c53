"""`nkstream lookup`: the label and matched prefix of addresses in the prefix tables.

    nkstream lookup 175.45.176.7 8.8.8.8           # shipped watch + peer tables
    nkstream lookup -c nkstream.toml 10.1.2.3      # the config's [tables]
    nkstream lookup --prefixes ipasn.dat.gz --prefixes mine.csv 1.2.3.4

One line per address and table that matched, `ADDR  TABLE  LABEL  PREFIX`; an address
no table matches gets one line with `-` in those columns.  `--prefixes` files are
merged into one table named `prefixes`, in the order given (a later file wins on an
equal prefix; longest prefix wins always).
"""
import os

from ..cli import UserError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "lookup",
        help="label and matched prefix of addresses in the watch/peer tables",
        description="Look addresses up in the prefix tables: the shipped watch and peer "
                    "tables, a config file's [tables], or the given prefix files.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("-c", "--config", metavar="CONFIG", help="TOML config whose [tables] to use")
    src.add_argument("--prefixes", metavar="FILE", action="append",
                     help="prefix file (csv, rir, ipasn, tor, mmdb; .gz ok); repeat to merge several")
    p.add_argument("--format", choices=("csv", "rir", "ipasn", "tor", "mmdb"),
                   help="format of the --prefixes files (default: sniffed per file)")
    p.add_argument("--asnames", metavar="FILE",
                   help="pyasn asnames.json[.gz]: label ipasn files by AS name")
    p.add_argument("addrs", metavar="ADDR", nargs="+", help="IPv4 or IPv6 address")
    return p


def _tables_from_prefixes(args):
    from ..prefixes import PrefixFileError, PrefixTable

    table = PrefixTable(name="prefixes")
    for path in args.prefixes:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
        opts = {}
        fmt = args.format
        if args.asnames:
            from ..prefixes import sniff_format

            if (fmt or sniff_format(path)) == "ipasn":
                opts["asnames"] = args.asnames
        try:
            table.load(path, format=fmt, **opts)
        except PrefixFileError as exc:
            raise UserError(str(exc)) from None
    return [("prefixes", table)]


def _tables_from_config(path):
    """(watch, peers) tables of a config file (nkstream.config)."""
    from ..config import build_tables, load_config
    from ..prefixes import PrefixFileError

    try:
        watch, peers = build_tables(load_config(path))
    except (PrefixFileError, ValueError) as exc:  # ConfigError is a ValueError
        raise UserError(str(exc)) from None
    return [("watch", watch), ("peer", peers)]


def run(args):
    from ..prefixes import default_peers, default_watch, parse_address

    for a in args.addrs:
        try:
            parse_address(a)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.prefixes:
        tables = _tables_from_prefixes(args)
    elif args.config:
        tables = _tables_from_config(args.config)
    else:
        tables = [("watch", default_watch()), ("peer", default_peers())]
    rows = []
    for a in args.addrs:
        hits = [(name, m) for name, t in tables for m in [t.match(a)] if m]
        if hits:
            rows += [(a, name, m[0], m[1]) for name, m in hits]
        else:
            rows.append((a, "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0
