"""Reports over snapshots written by the real writer, held against pandas group-bys,
and the `nkstream report` command through the real entry point."""
import csv
import io
import json
import math
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

from nkstream import report as R
from nkstream import snapshot as S
from synthetic_snapshots import T0, make_snapshot, mixed_rows, rng

ROOT = pathlib.Path(__file__).resolve().parent.parent
MIN = 60 * 10**9


@pytest.fixture
def snapdir(tmp_path):
    """Four one-minute windows of sensor-a plus one of sensor-b overlapping window 1."""
    d = tmp_path / "snaps"
    d.mkdir()
    for i in range(4):
        make_snapshot(mixed_rows(rng(i), vpn_weight=1 + 3 * i), start=T0 + i * MIN,
                      flows=None).write(d / S.snapshot_filename(T0 + i * MIN, host="sensor-a"))
    make_snapshot(mixed_rows(rng(9)), start=T0 + MIN, host="sensor-b").write(
        d / S.snapshot_filename(T0 + MIN, host="sensor-b"))
    return d


def pandas_shares(df, by, metric="bytes"):
    g = df.groupby(by)[metric].sum()
    return (g / g.sum()).to_dict()


@pytest.mark.parametrize("by", [["category"], ["watch"], ["direction"], ["peer"], ["tag"],
                                ["watch", "direction"]])
def test_share_table_matches_pandas(snapdir, by):
    snaps = R.load_all([snapdir])
    df = S.load_snapshots(snapdir)
    t = R.share_table(snaps, by)
    recs = t.records()
    assert recs[-1][by[0]] == "total"
    assert recs[-1]["packets"] == int(df["packets"].sum())
    assert recs[-1]["bytes"] == sum(s.totals["bytes"] for s in snaps)
    body = recs[:-1]
    key = (lambda r: r[by[0]]) if len(by) == 1 else (lambda r: tuple(r[d] for d in by))
    ref_b = pandas_shares(df, by if len(by) > 1 else by[0])
    ref_p = pandas_shares(df, by if len(by) > 1 else by[0], "packets")
    assert {key(r) for r in body} == set(ref_b)
    for r in body:
        assert math.isclose(r["bytes_share"], ref_b[key(r)])
        assert math.isclose(r["packets_share"], ref_p[key(r)])
    assert [r["bytes"] for r in body] == sorted((r["bytes"] for r in body), reverse=True)
    if "peer" not in by:
        peers = (df[~df["peer"].isin(["(none)", "(overflow)"])]
                 .groupby(by if len(by) > 1 else by[0])["peer"].nunique().to_dict())
        for r in body:
            assert r["peers"] == peers.get(key(r), 0)


def test_top_n_folds_the_rest_into_other(snapdir):
    snaps = R.load_all([snapdir])
    full = R.share_table(snaps, ["peer"]).records()[:-1]
    top = R.share_table(snaps, ["peer"], top=3).records()
    assert [r["peer"] for r in top[:3]] == [r["peer"] for r in full[:3]]
    assert top[3]["peer"] == f"(other {len(full) - 3})"
    assert top[3]["bytes"] == sum(r["bytes"] for r in full[3:])
    assert top[-1]["bytes"] == sum(r["bytes"] for r in full)


def test_over_time_matches_pandas_pivot(snapdir):
    snaps = R.load_all([snapdir])
    t = R.over_time_table(snaps, "category")
    df = S.load_snapshots(snapdir)
    per = df.groupby(["start", "category"])["bytes"].sum()
    ref = (per / per.groupby(level=0).transform("sum")).unstack(fill_value=0.0)
    assert len(t.rows) == 4                      # sensor-b's window merges into window 1
    for rec, (start, row) in zip(t.records(), ref.iterrows()):
        assert rec["start"] == R.iso(start.value)
        for cat, share in row.items():
            assert math.isclose(rec[f"{cat}_share"], share, abs_tol=1e-12)
        assert math.isclose(sum(v for k, v in rec.items() if k.endswith("_share")), 1.0)


def controlled(tmp_path):
    """Window 0: vpn-obfuscation is 5% of bytes; window 2: 60%.  (×12.0)"""
    d = tmp_path / "ctl"
    d.mkdir()
    # tag 5 = tor (vpn-obfuscation), tag 1 = https (browsing)
    shares = [(50, 950), (100, 900), (600, 400)]
    paths = []
    for i, (vpn, other) in enumerate(shares):
        p = d / S.snapshot_filename(T0 + i * MIN, host="s")
        make_snapshot([(1, 1, 3, 5, vpn // 10, vpn), (1, 1, 1, 1, other // 10, other)],
                      start=T0 + i * MIN).write(p)
        paths.append(p)
    return d, paths


def test_compare_computes_the_change(tmp_path):
    d, paths = controlled(tmp_path)
    snaps = R.load_all([d])
    t = R.compare_table(snaps, "0", "-1")
    rec = {r["category"]: r for r in t.records()}
    assert math.isclose(rec["vpn-obfuscation"]["A_share"], 0.05)
    assert math.isclose(rec["vpn-obfuscation"]["B_share"], 0.60)
    assert math.isclose(rec["vpn-obfuscation"]["change"], 12.0)
    assert math.isclose(rec["browsing-email-downloads"]["change"], 0.4 / 0.95)
    text = t.render()
    assert "vpn-obfuscation ×12.0 from window 0 (2026-11-18T11:06:40Z) to window 2" in text
    # The same periods named by files, by ISO time, by ISO range and by index range.
    for a, b in [(str(paths[0]), str(paths[2])),
                 (R.iso(T0 + 10**9), R.iso(T0 + 2 * MIN + 30 * 10**9)),
                 (f"{R.iso(T0)}/{R.iso(T0 + MIN)}", f"{R.iso(T0 + 2 * MIN)}/{R.iso(T0 + 3 * MIN)}")]:
        r2 = {r["category"]: r for r in R.compare_table(snaps, a, b).records()}
        assert math.isclose(r2["vpn-obfuscation"]["change"], 12.0)
    # Periods 0:2 (windows 0 and 1: 150 of 2000 bytes) to 2.
    r3 = {r["category"]: r for r in R.compare_table(snaps, "0:2", "2").records()}
    assert math.isclose(r3["vpn-obfuscation"]["A_share"], 150 / 2000)
    assert math.isclose(r3["vpn-obfuscation"]["change"], 0.6 / (150 / 2000))
    for bad in ("7", "5:9", "2031-01-01T00:00Z", "yesterday"):
        with pytest.raises(R.ReportError):
            R.compare_table(snaps, bad, "0")


def test_change_ratio_edge_cases():
    assert R.change_ratio(0.0, 0.3) == math.inf and R.format_change(math.inf) == "new"
    assert R.change_ratio(0.0, 0.0) is None and R.format_change(None) == "-"
    assert R.change_ratio(0.2, 0.0) == 0.0 and R.format_change(0.0) == "×0.0"
    assert R.format_change(12.0) == "×12.0" and R.format_change(0.5) == "×0.50"


def test_renderers_agree(snapdir):
    t = R.share_table(R.load_all([snapdir]), ["category"])
    text = t.render("table").splitlines()
    body = text[1:]                         # title, header, rule, rows
    assert len({len(line) for line in body}) == 1, "columns not aligned"
    rows = list(csv.DictReader(io.StringIO(t.render("csv"))))
    assert [r["category"] for r in rows] == [r["category"] for r in t.records()]
    assert [int(r["bytes"]) for r in rows] == [r["bytes"] for r in t.records()]
    j = json.loads(t.render("json"))
    assert j["columns"] == t.columns and j["rows"][0]["bytes"] == t.records()[0]["bytes"]
    with pytest.raises(R.ReportError):
        t.render("xml")


def test_plot_writes_png(snapdir, tmp_path):
    out = R.plot_shares(R.load_all([snapdir]), tmp_path / "shares.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    one = R.plot_shares([S.load_snapshot(next(snapdir.iterdir()))], tmp_path / "one.png")
    assert one.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(snapdir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(R.ReportError, match="matplotlib"):
        R.plot_shares(R.load_all([snapdir]), tmp_path / "x.png")


def test_summary_table_sections(tmp_path):
    snap = make_snapshot([(1, 1, 3, 5, 10, 6000, 2), (2, 2, 1, 1, 30, 3000, 1), (0, 0, 0, 0, 5, 1000, 0)],
                         errors=[0, 4], error_names=[None, "ipv4.bad_ihl"], drops={"kernel": [2, 1]},
                         totals={"packets": 45, "bytes": 10000, "decoded": 41, "error_packets": 4,
                                 "unmatched": 5})
    text = R.summary_table(S.load_snapshot(snap.write(tmp_path / "s.msgpack")))
    assert "packets 45, bytes 10,000; decoded 41, unmatched 5, errors 4, overflow 0" in text
    assert "capture drops: kernel 3" in text
    for section in ("By category", "Top peers (by bytes)", "Per watched range and direction", "Errors"):
        assert section in text
    vpn = next(line for line in text.splitlines() if line.startswith("vpn-obfuscation"))
    assert vpn.split()[1:5] == ["10", "22.2%", "6,000", "60.0%"]
    assert "ipv4.bad_ihl" in text and "KP-allocated" in text


def cli(*args):
    return subprocess.run([sys.executable, "-m", "nkstream", "report", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_tables_csv_json_plot(snapdir, tmp_path):
    r = cli(snapdir)
    assert r.returncode == 0, r.stderr
    assert "5 snapshot(s), 4 window(s)" in r.stdout and "vpn-obfuscation" in r.stdout
    r = cli(snapdir, "--by", "watch,direction", "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert set(rows[0]) >= {"watch", "direction", "bytes", "bytes_share"}
    assert int(rows[-1]["packets"]) == sum(S.load_snapshot(p).totals["packets"]
                                           for p in snapdir.iterdir())
    png = tmp_path / "p.png"
    r = cli(snapdir, "--by", "time", "--format", "json", "--plot", png)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["rows"]) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"
    d, _ = controlled(tmp_path)
    r = cli(d, "--compare", "0", "-1")
    assert r.returncode == 0 and "vpn-obfuscation ×12.0 from window 0" in r.stdout


def test_cli_errors(snapdir, tmp_path):
    r = cli(snapdir, "--by", "colour")
    assert r.returncode == 2 and "--by" in r.stderr
    r = cli(tmp_path / "missing")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(next(snapdir.iterdir()).read_bytes()[:100])
    r = cli(bad)
    assert r.returncode == 1 and "bad.msgpack: truncated" in r.stderr and r.stderr.count("\n") == 1
    r = cli(snapdir, "--compare", "0", "99")
    assert r.returncode == 1 and "out of range" in r.stderr


def test_example_analysis_script(snapdir, tmp_path):
    out = tmp_path / "analysis.png"
    env = dict(__import__("os").environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "analysis.py"), str(snapdir),
                        "--out", str(out), "--freq", "2min"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 windows" in r.stdout and "vpn-obfuscation" in r.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"
