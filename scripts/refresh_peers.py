#!/usr/bin/env python3
"""Rebuild nkstream's sample peer table (nkstream/data/peers.csv.gz) from its sources.

Live (needs network access):

    python scripts/refresh_peers.py -o nkstream/data/peers.csv.gz

  * announced prefixes of each service's ASNs (SERVICE_ASNS below) from RIPEstat's
    announced-prefixes API, https://stat.ripe.net/data/announced-prefixes/data.json
    (https://stat.ripe.net/docs/02.data-api/announced-prefixes.html);
  * Tor exit addresses from the Tor Project's bulk exit list,
    https://check.torproject.org/torbulkexitlist (one address a line).

Local (offline; what the tests run), any combination, merged in this order:

    python scripts/refresh_peers.py --from-csv service-prefixes-2024-10.csv \
        --ripestat-dir saved/ --tor-exits torbulkexitlist -o peers.csv.gz

  --from-csv FILE      an existing `cidr,label` table (e.g. shared/data/service-prefixes
                       -2024-10.csv, which also covers lists RIPEstat cannot give:
                       VPN server lists, iCloud Private Relay egress ranges);
  --ripestat-dir DIR   saved RIPEstat responses, one AS<n>.json per ASN (the body of
                       the API call above for resource=AS<n>);
  --tor-exits FILE     a saved bulk exit list (bare addresses or ExitAddress lines).

Later sources win on an equal prefix (csv < RIPEstat < Tor); rows are written sorted,
IPv4 then IPv6, gzip'd deterministically (mtime 0) with an attribution header, so a
refresh shows up as a reviewable diff of the decompressed text.
"""
import argparse
import datetime
import gzip
import ipaddress
import json
import os
import sys
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nkstream.prefixes import PrefixFileError, PrefixTable  # noqa: E402

RIPESTAT = "https://stat.ripe.net/data/announced-prefixes/data.json?resource=AS{asn}&sourceapp=nkstream"
TOR_BULK = "https://check.torproject.org/torbulkexitlist"

# Service label -> origin ASNs (from the operators' PeeringDB entries / whois).  Edit
# to taste; labels match those of the shipped table so rules keep working.
SERVICE_ASNS = {
    "facebook": [32934],
    "google": [15169, 36040],
    "google-cloud": [396982],
    "tencent": [45090, 132203],
    "alibaba": [45102, 37963],
    "netflix": [2906, 40027],
    "steam": [32590],
    "twitch": [46489],
    "telegram": [62041, 59930, 62014, 211157, 44907],
    "amazon-aws": [16509, 14618],
    "azure": [8075],
    "cloudflare": [13335],
    "zoom": [30103],
    "yandex": [13238],
    "vk": [47541],
    "twitter": [13414],
    "apple": [714],
    "dropbox": [19679],
    "edgecast": [15133],
    "line": [38631],
    "opendns": [36692],
    "riotgames": [6507],
    "starcraft": [57976],
    "mullvad": [39351],
}


def fetch(url, timeout=60):
    req = urllib.request.Request(url, headers={"User-Agent": "nkstream-refresh-peers/1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def ripestat_prefixes(body, where):
    """Prefixes in a RIPEstat announced-prefixes response body."""
    try:
        doc = json.loads(body)
        rows = doc["data"]["prefixes"]
        out = [str(ipaddress.ip_network(r["prefix"], strict=True)) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"refresh_peers: {where}: not a RIPEstat announced-prefixes response: {exc}")
    return out


def build(args):
    table = PrefixTable(name="peers")
    sources = []
    for path in args.from_csv or []:
        table.load(path, format="csv")
        sources.append(os.path.basename(path))
    if args.ripestat_dir is not None or args.live:
        for label, asns in SERVICE_ASNS.items():
            for asn in asns:
                if args.live:
                    body, where = fetch(RIPESTAT.format(asn=asn)), f"RIPEstat AS{asn}"
                else:
                    p = os.path.join(args.ripestat_dir, f"AS{asn}.json")
                    if not os.path.exists(p):
                        continue
                    with open(p, "rb") as f:
                        body, where = f.read(), p
                for pfx in ripestat_prefixes(body, where):
                    table.add(pfx, label)
        sources.append("RIPEstat announced-prefixes" + (" (live)" if args.live else f" ({args.ripestat_dir})"))
    if args.tor_exits or args.live:
        path = args.tor_exits
        if args.live:
            path = os.path.join(args.workdir, "torbulkexitlist")
            with open(path, "wb") as f:
                f.write(fetch(TOR_BULK))
        table.load(path, format="tor")
        sources.append("Tor bulk exit list" + (" (live)" if args.live else ""))
    if len(table) == 0:
        raise SystemExit("refresh_peers: no sources given (--live, --from-csv, --ripestat-dir, --tor-exits)")
    return table, sources


def write(table, sources, out, date):
    header = (
        "# nkstream sample peer table: cidr,label\n"
        f"# Built {date} by scripts/refresh_peers.py from: {'; '.join(sources)}.\n"
        "# Announced prefixes of well-known services by their ASNs (public routing data,\n"
        "# RIPEstat) and Tor exit addresses (the Tor Project's bulk exit list); csv inputs\n"
        "# keep their own attribution (shared/data/service-prefixes: nDPI's generated\n"
        "# lists, LGPL-3.0).  Facts about the Internet at a date: refresh regularly.\n"
    )
    body = "".join(f"{cidr},{label}\n" for cidr, label in table.prefixes())
    data = gzip.compress((header + body).encode(), 9, mtime=0)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    return len(data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "nkstream", "data", "peers.csv.gz"))
    ap.add_argument("--live", action="store_true", help="fetch RIPEstat and the Tor exit list")
    ap.add_argument("--from-csv", action="append", metavar="FILE")
    ap.add_argument("--ripestat-dir", metavar="DIR")
    ap.add_argument("--tor-exits", metavar="FILE")
    ap.add_argument("--workdir", default=".", help="where --live keeps the downloaded exit list")
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    args = ap.parse_args(argv)
    if not (args.live or args.from_csv or args.ripestat_dir or args.tor_exits):
        ap.error("give --live or local sources (--from-csv, --ripestat-dir, --tor-exits)")
    try:
        table, sources = build(args)
    except (PrefixFileError, OSError) as exc:
        raise SystemExit(f"refresh_peers: {exc}")
    size = write(table, sources, args.output, args.date)
    print(f"{args.output}: {len(table)} prefixes, {len(table.labels) - 1} labels, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
