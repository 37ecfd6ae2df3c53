"""scripts/refresh_peers.py from local copies of its sources (the live path needs network)."""
import gzip
import json
import subprocess
import sys

from conftest import ROOT
from nkstream.prefixes import PrefixTable, default_peers

SCRIPT = ROOT / "scripts" / "refresh_peers.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_rebuild_shipped_table_from_csv(tmp_path, data_dir):
    out = tmp_path / "peers.csv.gz"
    r = run("--from-csv", data_dir / "service-prefixes-2024-10.csv", "-o", out, "--date", "2024-10-31")
    assert r.returncode == 0, r.stderr
    assert dict(PrefixTable.load(out).prefixes()) == dict(default_peers().prefixes())
    text = gzip.decompress(out.read_bytes()).decode()
    assert text.startswith("# nkstream sample peer table") and "Built 2024-10-31" in text
    assert out.stat().st_size < 1 << 20


def test_ripestat_and_tor_sources_merge(tmp_path):
    rs = tmp_path / "ripestat"
    rs.mkdir()
    # The shape of https://stat.ripe.net/data/announced-prefixes/data.json?resource=AS32934
    (rs / "AS32934.json").write_text(json.dumps({"status": "ok", "data": {"resource": "32934", "prefixes": [
        {"prefix": "157.240.0.0/16", "timelines": [{"starttime": "2024-10-01T00:00:00", "endtime": "2024-10-15T00:00:00"}]},
        {"prefix": "2a03:2880::/32", "timelines": []}]}}))
    csv = tmp_path / "base.csv"
    csv.write_text("157.240.0.0/16,old-label\n203.0.113.0/24,other\n")
    tor = tmp_path / "torbulkexitlist"
    tor.write_text("157.240.1.1\n2001:db8::9\n")
    out = tmp_path / "p.csv.gz"
    r = run("--from-csv", csv, "--ripestat-dir", rs, "--tor-exits", tor, "-o", out)
    assert r.returncode == 0, r.stderr
    assert sorted(PrefixTable.load(out).prefixes()) == sorted([
        ("157.240.0.0/16", "facebook"),        # RIPEstat wins over the csv
        ("203.0.113.0/24", "other"),
        ("157.240.1.1/32", "tor"),
        ("2a03:2880::/32", "facebook"),
        ("2001:db8::9/128", "tor"),
    ])


def test_bad_inputs(tmp_path):
    rs = tmp_path / "rs"
    rs.mkdir()
    (rs / "AS15169.json").write_text("{not json")
    r = run("--ripestat-dir", rs, "-o", tmp_path / "x.gz")
    assert r.returncode == 1 and "AS15169.json: not a RIPEstat announced-prefixes response" in r.stderr
    r = run("-o", tmp_path / "x.gz")
    assert r.returncode == 2
