"""`nkstream bench` end to end, and the native stage loops it times.

Speed is never asserted (docs/benchmarks.md holds the figures); these tests check that
the benchmark measures what it says: every stage ran over every packet, the stage
loops compute what the pipeline computes, the worker partition keeps both directions
of a flow together and loses no packet, and missing comparison tools are listed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

from nkstream import _core, synth
from nkstream.capture import open_capture
from nkstream.classify import Classifier

STAGES = ("read", "decode", "lpm", "tags", "flows", "aggregate")


def nk_bench(*args, env=None, timeout=300):
    res = subprocess.run([sys.executable, "-m", "nkstream", "bench", *map(str, args)],
                         cwd=ROOT, capture_output=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr.decode()
    return res


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "synth.pcap"
    synth.write_pcap(path, 30000, seed=3)
    return path


@pytest.fixture(scope="module")
def batches(capture):
    with open_capture(capture) as cap:
        out = [(np.array(b.data, copy=True), b.recs.copy()) for b in cap]
    return out


def test_json_has_every_stage_and_the_configuration():
    res = nk_bench("-n", 20000, "--repeat", 1, "--json", "--seed", 5)
    r = json.loads(res.stdout)
    assert r["traffic"]["source"] == "generated"
    assert r["traffic"]["packets"] == 20000
    assert r["traffic"]["wire_bytes"] > 20000 * 54
    for s in STAGES:
        st = r["stages"][s]
        if s == "flows" and not st["available"]:
            assert r["configuration"]["flow_state"] is False
            continue
        assert st["available"], s
        assert len(st["seconds"]) == 1
        assert st["pps_min"] > 0 and st["pps_median"] > 0 and st["gbps_median"] > 0
        assert st["pps_min"] <= st["pps_median"] <= st["pps_max"]
        assert st["ns_per_packet_median"] == pytest.approx(1e9 / st["pps_median"])
    c = r["configuration"]
    assert c["watch_prefixes"]["ipv4"] == 3
    assert c["peer_prefixes"]["ipv4"] > 1000 and c["peer_prefixes"]["ipv6"] > 1000
    assert c["tags"] > 10 and c["rules"] >= c["tags"]
    assert c["counter_capacity"] == 1 << 18
    m = r["machine"]
    assert m["cores"] == os.cpu_count() and m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["numpy"] == np.__version__ and m["kernel"] == os.uname().release
    # the traffic hits the loaded tables: watched and peer addresses drawn from them
    sh = r["traffic"]["shares"]
    assert sh["packets"] == 20000
    assert sh["watched"] > 0.8 and sh["peer_matched"] > 0.8 and sh["tagged"] > 0.5
    if c["flow_state"]:
        # the default config keeps flow state: the full path is the flows stage
        assert r["stages"]["flows"]["available"]
        assert c["flow_capacity"] > 0 and c["flow_memory_bytes"] >= 64 * c["flow_capacity"]
        assert 100 < sh["flows"] < 20000
    assert r["command"].startswith("nkstream bench -n 20000")
    # how the capture was mapped while it was walked (Linux smaps)
    pc = r["traffic"]["page_cache"]
    assert pc is not None and pc["rss_kb"] > 0 and 0 <= pc["pmd_mapped_kb"] <= pc["rss_kb"]


def test_page_cache_mapping_reads_this_process_mappings(capture, tmp_path):
    from nkstream.bench import page_cache_mapping

    assert page_cache_mapping(capture) is None          # not mapped now
    size = os.path.getsize(capture)
    with open_capture(capture) as cap:
        # the walk maps and touches it all (no batch kept: the mapping can close)
        assert sum(len(b.recs) for b in cap) == 30000
        pc = page_cache_mapping(capture)
        # the whole file is resident in this mapping (rounded up to pages)
        assert pc is not None and size / 1024 <= pc["rss_kb"] <= size / 1024 + 8
        assert 0 <= pc["pmd_mapped_kb"] <= pc["rss_kb"]
        other = tmp_path / "other.pcap"
        other.write_bytes(b"")
        assert page_cache_mapping(other) is None
    assert page_cache_mapping(capture) is None


def test_stage_selection_and_text_output(capture):
    res = nk_bench(capture, "--repeat", 2, "--stages", "read,tags", "--no-progress")
    out = res.stdout.decode()
    assert "read (walk records)" in out and "+ tags" in out
    assert "+ decode" not in out and "+ aggregate" not in out
    assert f"{30000:,} packets" in out


def test_cli_defaults_match_the_benchmark():
    from nkstream import bench
    from nkstream.commands import bench as cmd

    assert cmd.STAGES == bench.STAGES and cmd.DEFAULT_PACKETS == bench.DEFAULT_PACKETS


def test_bad_stage_is_a_usage_error():
    res = subprocess.run([sys.executable, "-m", "nkstream", "bench", "--stages", "decode,bogus"],
                         cwd=ROOT, capture_output=True, timeout=60)
    assert res.returncode == 2
    assert b"bogus" in res.stderr


def test_workers_partition_every_packet(capture):
    res = nk_bench(capture, "--workers", 2, "--repeat", 1, "--json", "--stages", "read")
    w = json.loads(res.stdout)["workers"]
    assert w["workers"] == 2
    assert len(w["packets_per_worker"]) == 2
    assert sum(w["packets_per_worker"]) == w["packets_total"] == 30000
    assert all(n > 0 for n in w["packets_per_worker"])
    # each worker counted exactly its share through the full path
    assert w["runs"]["2"]["packets_counted_last_rep"] == w["packets_per_worker"]
    assert w["runs"]["1"]["packets_counted_last_rep"] == [30000]
    assert w["pps_median"] > 0 and w["scaling_vs_1"] > 0


def _shadow_modules(tmp_path):
    """A directory that makes `import dpkt` / `import pytricia` fail, as if absent."""
    d = tmp_path / "shadow"
    d.mkdir()
    for name in ("dpkt", "pytricia"):
        (d / f"{name}.py").write_text(f"raise ImportError('{name} hidden by the test')\n")
    return d


def test_compare_lists_missing_tools(capture, tmp_path):
    env = dict(os.environ)
    env["PATH"] = str(tmp_path / "empty-bin")        # no tcpdump, tshark, ndpiReader
    env["PYTHONPATH"] = os.pathsep.join([str(_shadow_modules(tmp_path)), str(ROOT)])
    res = nk_bench(capture, "--compare", "--repeat", 1, "--json", "--stages", "aggregate",
                   env=env)
    cmp_ = json.loads(res.stdout)["compare"]
    missing = {m["name"] for m in cmp_["missing"]}
    assert missing == {"tcpdump", "tshark", "ndpiReader", "dpkt+pytricia"}
    names = [t["name"] for t in cmp_["tools"]]
    assert names == ["nkstream classify (whole process)"]
    cl = cmp_["tools"][0]
    assert cl["packets"] == 30000 and cl["pps"] > 0 and cl["nkstream_ratio"] > 0
    # and the text form lists them too
    res = nk_bench(capture, "--compare", "--repeat", 1, "--stages", "aggregate",
                   "--no-progress", env=env)
    out = res.stdout.decode()
    for name in ("tcpdump", "tshark", "ndpiReader", "dpkt+pytricia"):
        assert f"missing: {name}" in out
    # ratios to the full path and to the default path with flow state, side by side
    assert "full path x" in out and "+ flows x" in out


def test_compare_runs_installed_tools(capture):
    import shutil

    res = nk_bench(capture, "--compare", "--repeat", 1, "--json", "--stages", "aggregate")
    doc = json.loads(res.stdout)
    cmp_ = doc["compare"]
    assert cmp_["nkstream_full_path_pps"] == doc["stages"]["aggregate"]["pps_median"]
    assert cmp_["nkstream_in_process_stage"] == "flows"      # flow state on by default
    by = {t["name"].split()[0]: t for t in cmp_["tools"]}
    for tool in ("tcpdump", "tshark", "ndpiReader"):
        if shutil.which(tool):
            assert "error" not in by[tool], by[tool]
            assert by[tool]["packets"] > 0 and by[tool]["pps"] > 0
            assert by[tool]["nkstream_ratio"] == pytest.approx(
                cmp_["nkstream_in_process_pps"] / by[tool]["pps"])
            # the issues' full path (no flow state) is the aggregate stage measured here
            assert by[tool]["nkstream_full_path_ratio"] == pytest.approx(
                cmp_["nkstream_full_path_pps"] / by[tool]["pps"])
        else:
            assert tool in {m["name"] for m in cmp_["missing"]}
    if "ndpiReader" in by:
        # nDPI saw every packet it was given
        assert by["ndpiReader"]["packets_reported"] == by["ndpiReader"]["packets"]
    assert by["nkstream"]["packets"] == 30000
    if "tcpdump" in by:
        assert by["nkstream"]["vs_tcpdump"] > 0


def test_compare_on_gzip_capture_converts_for_the_tools(capture, tmp_path):
    import gzip

    gz = tmp_path / "synth.pcap.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes(), 1))
    res = nk_bench(gz, "--compare", "--repeat", 1, "--json", "--stages", "aggregate")
    cmp_ = json.loads(res.stdout)["compare"]
    assert cmp_["converted_to_pcap"] is True
    for t in cmp_["tools"]:
        assert "error" not in t, t
        assert t["packets"] == 30000 and t["pps"] > 0


# ---- the native pieces the command times -------------------------------------------

def test_decode_stage_decodes_every_packet(batches):
    clf = Classifier.from_config(None)
    for data, recs in batches:
        cols = _core.decode_columns(data, recs)
        v4 = cols["ipver"] == 4
        src4 = np.where(v4, cols["src"][:, :4].copy().view(">u4")[:, 0], 0).astype(np.uint64)
        dst4 = np.where(v4, cols["dst"][:, :4].copy().view(">u4")[:, 0], 0).astype(np.uint64)
        want = int((cols["error"].astype(np.uint64) + cols["ipver"] + cols["sport"]
                    + cols["dport"] + src4 + dst4).sum(dtype=np.uint64))
        got = _core.bench_stage(clf.core, data, recs, _core.BENCH_STAGES["decode"])
        assert got == want


def test_tags_stage_computes_what_the_pipeline_computes(batches):
    clf = Classifier.from_config(None)
    for data, recs in batches:
        a = clf.annotate(data, recs)
        err = _core.decode_columns(data, recs)["error"]
        want = int((err.astype(np.uint64) + a["watch"] + a["peer"] + a["direction"]
                    + a["tag"]).sum(dtype=np.uint64))
        assert _core.bench_stage(clf.core, data, recs, _core.BENCH_STAGES["tags"]) == want


def test_aggregate_stage_is_the_pipeline(batches):
    clf = Classifier.from_config(None)
    n = 0
    for data, recs in batches:
        n += _core.bench_stage(clf.core, data, recs, _core.BENCH_STAGES["aggregate"])
    assert n == 30000
    assert clf.snapshot()["totals"]["packets"] == 30000
    with pytest.raises(ValueError):
        _core.bench_stage(clf.core, batches[0][0], batches[0][1], 99)


def test_flow_partition_keeps_flows_together(batches):
    for nparts in (1, 2, 3, 8):
        seen = {}
        sizes = np.zeros(nparts, np.int64)
        for data, recs in batches:
            part = _core.flow_partition(data, recs, nparts)
            assert part.dtype == np.uint32 and len(part) == len(recs)
            assert (part < nparts).all()
            sizes += np.bincount(part, minlength=nparts)
            cols = _core.decode_columns(data, recs)
            for i in range(len(recs)):
                a = (bytes(cols["src"][i]), int(cols["sport"][i]))
                b = (bytes(cols["dst"][i]), int(cols["dport"][i]))
                key = (min(a, b), max(a, b), int(cols["proto"][i]))
                assert seen.setdefault(key, int(part[i])) == part[i], key
        assert sizes.sum() == 30000
        if nparts > 1:
            # flows spread over every worker
            assert sizes.min() > 30000 / nparts / 3
    with pytest.raises(ValueError):
        _core.flow_partition(batches[0][0], batches[0][1], 0)


def test_huge_page_share_of_the_flow_table():
    from nkstream.bench import huge_page_share

    ft = _core.FlowTable(1 << 16)                       # 4 MiB of slots, madvised
    n = ft.capacity * _core.FLOW_ENTRY_BYTES
    share = huge_page_share(ft.slots_address, n)
    assert share is not None and 0.0 <= share <= 1.0
    # an address range no mapping holds
    assert huge_page_share(4096, 4096) == 0.0
