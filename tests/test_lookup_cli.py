"""`nkstream lookup` through the real entry point (python -m nkstream)."""
import ipaddress
import os
import subprocess
import sys

from conftest import ROOT


def nk(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nkstream", "lookup", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def rows(out):
    return [line.split() for line in out.splitlines()]


def test_default_tables():
    r = nk("175.45.176.7", "210.52.109.1", "157.240.1.1", "2001:4860::1", "192.0.2.1")
    assert r.returncode == 0, r.stderr
    got = rows(r.stdout)
    assert got == [
        ["175.45.176.7", "watch", "KP-allocated", "175.45.176.0/22"],
        ["210.52.109.1", "watch", "KP-via-China-Netcom", "210.52.109.0/24"],
        ["157.240.1.1", "peer", "facebook", "157.240.0.0/17"],
        ["2001:4860::1", "peer", "google", "2001:4860::/32"],
        ["192.0.2.1", "-", "-", "-"],
    ]
    for addr, _, _, pfx in got[:4]:   # the printed prefix contains the address
        assert ipaddress.ip_address(addr) in ipaddress.ip_network(pfx)


def test_prefix_files_merge_in_order(tmp_path, data_dir):
    mine = tmp_path / "mine.csv"
    mine.write_text("175.45.176.0/24,mine\n8.8.8.0/24,resolver\n")
    r = nk("--prefixes", data_dir / "ipasn_20140513.dat.gz", "--asnames", data_dir / "asnames.json.gz",
           "--prefixes", mine, "175.45.176.7", "175.45.177.7", "8.8.4.4", "8.8.8.8")
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == [
        ["175.45.176.7", "prefixes", "mine", "175.45.176.0/24"],     # later file wins
        ["175.45.177.7", "prefixes", "STAR-KP", "175.45.177.0/24"],
        ["8.8.4.4", "prefixes", "GOOGLE", "8.8.4.0/24"],
        ["8.8.8.8", "prefixes", "resolver", "8.8.8.0/24"],
    ]


def test_config_tables(tmp_path, data_dir):
    (tmp_path / "w.csv").write_text("192.0.2.0/24,lab\n")
    (tmp_path / "exits").write_text("ExitAddress 198.51.100.9 2024-10-30 08:07:48\n")
    cfg = tmp_path / "nk.toml"
    cfg.write_text('[tables]\nwatch = ["w.csv"]\n'
                   'peers = [{path = "exits", format = "tor"}]\n'
                   'defaults = false\n')
    r = nk("-c", cfg, "192.0.2.5", "198.51.100.9", "157.240.1.1")
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == [
        ["192.0.2.5", "watch", "lab", "192.0.2.0/24"],
        ["198.51.100.9", "peer", "tor", "198.51.100.9/32"],
        ["157.240.1.1", "-", "-", "-"],                 # defaults = false: no shipped peers
    ]
    cfg.write_text('[tables]\npeers = ["w.csv"]\n')      # defaults on: shipped watch + peers too
    r = nk("-c", cfg, "175.45.176.1", "192.0.2.5", "157.240.1.1")
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == [
        ["175.45.176.1", "watch", "KP-allocated", "175.45.176.0/22"],
        ["192.0.2.5", "peer", "lab", "192.0.2.0/24"],
        ["157.240.1.1", "peer", "facebook", "157.240.0.0/17"],
    ]


def test_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("10.0.0.0/8,a\n10.0.0.0/99,b\n")
    r = nk("--prefixes", bad, "10.1.1.1")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"nkstream lookup: error: {bad}:2: prefix length /99 is longer than /32 in '10.0.0.0/99'\n"
    r = nk("not-an-address")
    assert r.returncode == 1
    assert r.stderr == "nkstream lookup: error: not an IP address: 'not-an-address'\n"
    r = nk("--prefixes", tmp_path / "missing.csv", "1.2.3.4")
    assert r.returncode == 1 and "missing.csv: no such file" in r.stderr
    r = nk()
    assert r.returncode == 2                                # usage error
    r = nk("-c", "x.toml", "--prefixes", bad, "1.2.3.4")
    assert r.returncode == 2
