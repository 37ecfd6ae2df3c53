"""Every prefix-file loader on the real files in shared/data and on hand-written bad
files (exact `FILE:LINE: what` messages).  Expected values are computed independently
from the raw text with `ipaddress` (or read from the files' own headers)."""
import gzip
import ipaddress
import json
import random

import pytest

from nkstream.prefixes import (PrefixFileError, PrefixTable, as_short_name, default_peers,
                               default_watch, range_to_cidrs, sniff_format)
from nkstream.reference import ReferencePrefixTable


def _rows(path, comment):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [l for l in f if l.strip() and not l.startswith(comment)]


def _header_count(path, key):
    with gzip.open(path, "rt") as f:
        for line in f:
            if not line.startswith(";"):
                break
            if line.startswith("; " + key):
                return int(line.split(":", 1)[1])
    raise AssertionError(f"no {key} in {path}")


# ------------------------------------------------------------------ ipasn

@pytest.fixture(scope="module")
def ipasn2014(data_dir):
    return PrefixTable.load(data_dir / "ipasn_20140513.dat.gz")


def test_ipasn_full_table(data_dir, ipasn2014):
    path = data_dir / "ipasn_20140513.dat.gz"
    assert sniff_format(str(path)) == "ipasn"
    rows = _rows(path, ";")
    assert len(ipasn2014) == len(rows) == _header_count(path, "Prefixes") == 512621
    # Every 25th row checked against ipaddress (prefix and AS<n> label).
    for line in rows[::25]:
        pfx, asn = line.split()
        net = ipaddress.ip_network(pfx)
        got = ipasn2014.match(str(net.network_address))
        assert got is not None
        # the row's own prefix, or a longer one inside it that also starts there
        assert ipaddress.ip_network(got[1]).subnet_of(net)
        if got[1] == str(net):
            assert got[0] == f"AS{int(asn)}"
    assert ipasn2014.match("8.8.8.8") == ("AS15169", "8.8.8.0/24")
    assert ipasn2014.lookup("175.45.176.1") == "AS131279"


def test_ipasn_asnames_labels(data_dir):
    names = json.load(gzip.open(data_dir / "asnames.json.gz"))
    assert names["15169"].startswith("GOOGLE ")
    t = PrefixTable.load(data_dir / "ipasn_20140513.dat.gz", asnames=str(data_dir / "asnames.json.gz"))
    assert len(t) == 512621
    assert t.match("8.8.8.8") == ("GOOGLE", "8.8.8.0/24")
    assert t.lookup("175.45.176.1") == "STAR-KP"       # 'STAR-KP Ryugyong-dong, KP'
    assert t.lookup("31.13.64.1") == "FACEBOOK"
    # Every label is either an AS handle from the names file or AS<n> for ASNs it lacks.
    handles = {as_short_name(int(k), v) for k, v in names.items()}
    for lab in t.labels[1:]:
        assert lab in handles or (lab.startswith("AS") and lab[2:].isdigit()), lab


def test_as_short_name():
    assert as_short_name(15169, "GOOGLE - Google Inc., US") == "GOOGLE"
    assert as_short_name(45090, "CNNIC-TENCENT-NET-AP Shenzhen Tencent Computer Systems Company Limited, CN") == "CNNIC-TENCENT-NET-AP"
    assert as_short_name(0, "-Reserved AS-, ZZ") == "AS0"
    assert as_short_name(7, None) == "AS7"
    assert as_short_name(8, "") == "AS8"


def test_ipasn6_ipv6_part(data_dir):
    path = data_dir / "ipasn6_20151101.dat.gz"
    t = PrefixTable.load(path)
    n4, _, _, n6, _, _ = t._arrays()
    assert len(n4) == _header_count(path, "Prefixes-v4")
    assert len(n6) == _header_count(path, "Prefixes-v6") == 27693
    v6rows = [l.split() for l in _rows(path, ";") if ":" in l.split()[0]]
    ref = ReferencePrefixTable()
    for pfx, asn in v6rows:
        ref.add(pfx, f"AS{int(asn)}")
    rng = random.Random(5)
    for pfx, _ in rng.sample(v6rows, 2000):
        net = ipaddress.ip_network(pfx)
        for a in (net.network_address, net.broadcast_address,
                  net.network_address + rng.randrange(net.num_addresses)):
            assert t.match(str(a)) == ref.match(str(a)), a
    assert t.lookup("2001:4860:4860::8888") == "AS15169"


# ------------------------------------------------------------------ RIR

def _apnic_records(path, types=("ipv4", "ipv6"), statuses=("allocated", "assigned")):
    out = []
    for line in _rows(path, "#"):
        f = line.strip().split("|")
        if len(f) >= 7 and f[2] in types and f[1] not in ("*", "") and f[6] in statuses:
            out.append(f)
    return out


def test_rir_apnic(data_dir):
    path = data_dir / "delegated-apnic-20241109.txt.gz"
    assert sniff_format(str(path)) == "rir"
    t = PrefixTable.load(path)
    ref = ReferencePrefixTable()
    nets = 0
    for f in _apnic_records(path):
        first = ipaddress.ip_address(f[3])
        if f[2] == "ipv4":
            blocks = list(ipaddress.summarize_address_range(first, first + int(f[4]) - 1))
        else:
            blocks = [ipaddress.ip_network(f"{f[3]}/{f[4]}")]
        for b in blocks:
            ref.add(str(b), f[1])
            nets += 1
    assert len(t) == len(ref) == nets
    assert dict(t.prefixes()) == dict(ref.prefixes())
    assert t.match("175.45.176.1") == ("KP", "175.45.176.0/22")
    assert t.lookup("1.1.1.1") == "AU"


def test_rir_filters(data_dir):
    path = data_dir / "delegated-apnic-20241109.txt.gz"
    kp = PrefixTable.load(path, format="rir", countries=("kp",))
    want = {f[3] for f in _apnic_records(path) if f[1] == "KP"}
    got = {p.split("/")[0] for p, _ in kp.prefixes()}
    assert got == want and want          # KP's blocks are power-of-two sized and aligned
    assert set(kp.labels[1:]) == {"KP"}
    assigned = PrefixTable.load(path, statuses=("assigned",))
    assert len(assigned) == len([f for f in _apnic_records(path, statuses=("assigned",))])
    assert len(PrefixTable.load(path, registries=("ripencc",))) == 0
    assert len(PrefixTable.load(path, registries=("APNIC",))) == len(PrefixTable.load(path))


def test_rir_non_power_of_two_counts(tmp_path):
    # Rows shaped like ARIN/RIPE files: counts that are not powers of two and a start
    # that is not aligned to its count, which become several CIDRs.
    p = tmp_path / "delegated-test.txt"
    p.write_text(
        "2|arin|20241109|3|19830101|20241108|-0500\n"
        "arin|*|ipv4|*|3|summary\n"
        "arin|US|ipv4|24.36.0.0|768|19960701|allocated\n"
        "ripencc|DE|ipv4|81.200.0.128|1408|20020101|assigned|abc\n"
        "lacnic|BR|ipv4|200.0.0.1|7|19990101|allocated\n"
        "lacnic|BR|ipv4|200.1.0.0|256|19990101|reserved\n"
        "arin|US|asn|701|1|19900803|allocated\n"
    )
    t = PrefixTable.load(p)
    want = []
    for start, count, cc in (("24.36.0.0", 768, "US"), ("81.200.0.128", 1408, "DE"), ("200.0.0.1", 7, "BR")):
        a = ipaddress.IPv4Address(start)
        want += [(str(n), cc) for n in ipaddress.summarize_address_range(a, a + count - 1)]
    assert sorted(t.prefixes()) == sorted(want)
    assert len(want) > 3
    assert t.match("24.36.2.255") == ("US", "24.36.2.0/24")
    assert t.lookup("24.36.3.0") is None


def test_range_to_cidrs_matches_ipaddress():
    rng = random.Random(11)
    for _ in range(3000):
        bits = rng.choice((32, 128))
        first = rng.randrange(1 << bits)
        last = min((1 << bits) - 1, first + rng.randrange(1 << rng.randrange(bits)))
        got = range_to_cidrs(first, last, bits)
        cls = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
        want = [(int(n.network_address), n.prefixlen)
                for n in ipaddress.summarize_address_range(cls(first), cls(last))]
        assert got == want
    assert range_to_cidrs(0, (1 << 32) - 1) == [(0, 0)]


# ------------------------------------------------------------------ CSV

def test_csv_service_prefixes(data_dir):
    path = data_dir / "service-prefixes-2024-10.csv"
    t = PrefixTable.load(path)
    ref = ReferencePrefixTable()
    for line in _rows(path, "#"):
        pfx, label = line.strip().split(",")
        ref.add(pfx, label)
    assert len(t) == len(ref) > 30000
    assert dict(t.prefixes()) == dict(ref.prefixes())
    assert t.lookup("157.240.1.1") == "facebook"


def test_csv_forms_and_merge_policy(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("# comment\n\n10.0.0.0/8,corp\n10.1.0.0/16 lab   # trailing comment\n"
                 "192.0.2.7\thost\n2001:db8::1,six\n10.0.0.0/8,corp2\n")
    t = PrefixTable.load(p)
    assert t.match("10.2.3.4") == ("corp2", "10.0.0.0/8")       # later line wins
    assert t.match("10.1.3.4") == ("lab", "10.1.0.0/16")        # longest prefix wins
    assert t.match("192.0.2.7") == ("host", "192.0.2.7/32")
    assert t.match("2001:db8::1") == ("six", "2001:db8::1/128")
    assert len(t) == 4
    q = tmp_path / "more.csv"
    q.write_text("10.1.0.0/16,override\n")
    assert t.load(q) is t                                        # instance: merge
    assert t.lookup("10.1.0.1") == "override"
    assert len(PrefixTable.load(q)) == 1                         # class: new table


def test_gzip_by_magic(tmp_path):
    p = tmp_path / "no-gz-suffix"
    p.write_bytes(gzip.compress(b"198.51.100.0/24,doc\n"))
    assert PrefixTable.load(p, format="csv").lookup("198.51.100.9") == "doc"


# ------------------------------------------------------------------ Tor

def test_tor_exit_list_forms(tmp_path, data_dir):
    p = tmp_path / "exit-addresses"
    p.write_text("ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\n"
                 "Published 2024-10-30 07:07:18\nLastStatus 2024-10-30 08:00:00\n"
                 "ExitAddress 162.247.74.201 2024-10-30 08:07:48\n")
    t = PrefixTable.load(p)
    assert list(t.prefixes()) == [("162.247.74.201/32", "tor")]
    bare = tmp_path / "torbulkexitlist"
    tor_rows = [l.split(",")[0] for l in _rows(data_dir / "service-prefixes-2024-10.csv", "#")
                if l.strip().endswith(",tor")]
    addrs = [r.split("/")[0] for r in tor_rows]
    bare.write_text("\n".join(addrs) + "\n")
    assert sniff_format(str(bare)) == "tor"
    tb = PrefixTable.load(bare)
    assert len(tb) == len(set(addrs)) > 500
    for a in addrs[:50]:
        bits = 32 if ":" not in a else 128
        assert tb.match(a) == ("tor", str(ipaddress.ip_network(f"{a}/{bits}")))


# ------------------------------------------------------------------ MaxMind DB

def _write_mmdb(path, dbtype, entries, ip_version=6):
    # An independent MMDB writer (PyPI mmdb-writer, a test dependency) makes the
    # databases; the real maxminddb reader reads them back inside the loader.
    import mmdb_writer as mw
    from netaddr import IPSet

    w = mw.MMDBWriter(ip_version=ip_version, database_type=dbtype,
                      ipv4_compatible=(ip_version == 6))
    for cidr, rec in entries:
        w.insert_network(IPSet([cidr]), rec)
    w.to_db_file(str(path))


def test_mmdb_country_and_aliases(tmp_path):
    p = tmp_path / "GeoLite2-Country-test.mmdb"
    kp = {"country": {"iso_code": "KP"}}
    _write_mmdb(p, "GeoLite2-Country", [
        ("175.45.176.0/22", kp),
        ("77.94.35.0/24", {"registered_country": {"iso_code": "GB"}}),  # no 'country'
        ("2001:db8::/32", {"country": {"iso_code": "XX"}}),
        ("2002:af2d:b000::/38", kp),          # 6to4 alias of 175.45.176.0/22
        ("2001:0:af2d:b000::/64", kp),        # inside Teredo 2001::/32
        ("::ffff:175.45.176.0/118", kp),      # IPv4-mapped
    ])
    assert sniff_format(str(p)) == "mmdb"
    t = PrefixTable.load(p)
    assert sorted(t.prefixes()) == sorted([("175.45.176.0/22", "KP"), ("77.94.35.0/24", "GB"),
                                           ("2001:db8::/32", "XX")])
    assert t.lookup("2002:af2d:b000::1") is None


def test_mmdb_asn(tmp_path):
    p = tmp_path / "GeoLite2-ASN-test.mmdb"
    _write_mmdb(p, "GeoLite2-ASN", [
        ("8.8.8.0/24", {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE"}),
        ("175.45.176.0/24", {"autonomous_system_number": 131279, "autonomous_system_organization": "Ryugyong-dong"}),
        ("2a03:2880::/29", {"autonomous_system_number": 32934, "autonomous_system_organization": "FACEBOOK"}),
    ], ip_version=6)
    t = PrefixTable.load(p)
    assert t.match("8.8.8.8") == ("GOOGLE", "8.8.8.0/24")
    assert t.lookup("2a03:2880::1") == "FACEBOOK"
    assert PrefixTable.load(p, label_by="asn").lookup("175.45.176.9") == "AS131279"


def test_mmdb_corrupt(tmp_path):
    p = tmp_path / "bad.mmdb"
    p.write_bytes(b"\x00" * 100 + b"\xab\xcd\xefMaxMind.com" + b"\x00" * 20)
    with pytest.raises(PrefixFileError, match=r"^" + str(p) + r": (not a|corrupt) MaxMind DB"):
        PrefixTable.load(p)


# ------------------------------------------------------------------ bad files

BAD = [
    ("csv", "10.0.0.0/8,a\n\n10.0.0.1/8,b\n", 3, "host bits set in '10.0.0.1/8'"),
    ("csv", "# x\n300.1.2.3/8,a\n", 2, "not an IP address: '300.1.2.3'"),
    ("csv", "10.0.0.0/33,a\n", 1, "prefix length /33 is longer than /32 in '10.0.0.0/33'"),
    ("csv", "10.0.0.0/8\n", 1, "no label for '10.0.0.0/8' (expected 'cidr,label')"),
    ("csv", "10.0.0.0/8,a,b\n", 1, "expected 'cidr,label', got '10.0.0.0/8,a,b'"),
    ("csv", "2001:db8::/x,a\n", 1, "bad prefix length in '2001:db8::/x'"),
    ("ipasn", "; c\n1.0.0.0/24\t15169\n1.0.4.0/24\tAS1\n", 3, "bad ASN 'AS1'"),
    ("ipasn", "1.0.0.0/24 15169 x\n", 1, "expected 'prefix<TAB>asn', got '1.0.0.0/24 15169 x'"),
    ("ipasn", "1.0.0.1/24\t1\n", 1, "host bits set in '1.0.0.1/24'"),
    ("ipasn", "1.0.0/24\t1\n", 1, "not an IP prefix: '1.0.0/24'"),
    ("rir", "apnic|KP|ipv4|175.45.176.0|1024|20091221|allocated\napnic|KP|ipv4|175.45.176.0|x|20091221|allocated\n",
     2, "bad value 'x' (an address count for ipv4, a prefix length for ipv6)"),
    ("rir", "apnic|KP|ipv4|175.45.176\n", 1, "expected 'registry|cc|type|start|value|date|status', got 'apnic|KP|ipv4|175.45.176'"),
    ("rir", "apnic|AU|ipv4|255.255.255.0|512|20000101|allocated\n", 1, "address count 512 from 255.255.255.0 leaves the IPv4 space"),
    ("rir", "apnic|AU|ipv6|2001:db8::1|32|20000101|allocated\n", 1, "host bits set in 2001:db8::1/32"),
    ("rir", "apnic|AU|ipv6|1.2.3.4|32|20000101|allocated\n", 1, "'1.2.3.4' is not an ipv6 address"),
    ("rir", "apnic|AU|ipx|1.2.3.4|32|20000101|allocated\n", 1, "unknown record type 'ipx'"),
    ("ipasn", "1.0.0.0/24\t\u00b2\n", 1, "bad ASN '\u00b2'"),          # isdigit() but not a number
    ("csv", "1.0.0.0/\u00b2,a\n", 1, "bad prefix length in '1.0.0.0/\u00b2'"),
    ("rir", "apnic|KP|ipv4|175.45.176.0|\u0661\u0662|20091221|allocated\n", 1,
     "bad value '\u0661\u0662' (an address count for ipv4, a prefix length for ipv6)"),
    ("tor", "ExitNode AB\nExitAddress 1.2.3 2024-10-30 08:07:48\n", 2, "not an IP address: '1.2.3'"),
    ("tor", "1.2.3.4 5.6.7.8\n", 1, "expected 'ExitAddress a.b.c.d ...' or an address, got '1.2.3.4 5.6.7.8'"),
]


@pytest.mark.parametrize("fmt,text,line,msg", BAD)
def test_bad_files_name_file_and_line(tmp_path, fmt, text, line, msg):
    p = tmp_path / f"bad.{fmt}"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(PrefixFileError) as ei:
        PrefixTable.load(p, format=fmt)
    assert str(ei.value) == f"{p}:{line}: {msg}"
    assert isinstance(ei.value, ValueError) and "\n" not in str(ei.value)


def test_truncated_gzip(tmp_path):
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(gzip.compress(b"10.0.0.0/8,a\n" * 2000)[:-30])
    with pytest.raises(PrefixFileError, match=r"^" + str(p) + r": cannot read: "):
        PrefixTable.load(p, format="csv")


def test_unknown_format_and_option(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("10.0.0.0/8,a\n")
    with pytest.raises(ValueError, match="unknown prefix file format 'bogus'"):
        PrefixTable.load(p, format="bogus")
    with pytest.raises(TypeError):
        PrefixTable.load(p, format="csv", countries=("KP",))


# ------------------------------------------------------------------ shipped defaults

def test_default_watch():
    w = default_watch()
    assert sorted(w.prefixes()) == [("175.45.176.0/22", "KP-allocated"),
                                    ("210.52.109.0/24", "KP-via-China-Netcom"),
                                    ("77.94.35.0/24", "KP-via-SatGate")]
    assert w.core.nbytes_v4 < 300 * 1024      # a small table stays small (no 64 MiB tbl24)


def test_default_peers_is_derived_from_service_prefixes(data_dir):
    p = default_peers()
    src = PrefixTable.load(data_dir / "service-prefixes-2024-10.csv")
    assert dict(p.prefixes()) == dict(src.prefixes())
    assert p.lookup("157.240.1.1") == "facebook"


def test_csv_header_row_and_sniffing_names(tmp_path):
    p = tmp_path / "monitor.csv"           # 'tor' inside a word is not a Tor list
    p.write_text("cidr,label\n203.0.113.0/24,mon\n")
    assert sniff_format(str(p)) == "csv"
    assert list(PrefixTable.load(p).prefixes()) == [("203.0.113.0/24", "mon")]
    q = tmp_path / "hosts-only.txt"
    q.write_text("203.0.113.9\n")
    with pytest.raises(PrefixFileError, match=r"hosts-only.txt:1: no label for '203.0.113.9'"):
        PrefixTable.load(q)
    assert PrefixTable.load(q, label="seen").match("203.0.113.9") == ("seen", "203.0.113.9/32")


def test_pickle_roundtrip_rebuilds_core():
    import pickle

    t = PrefixTable()
    t.add("10.0.0.0/8", "a").add("2001:db8::/32", "b")
    _ = t.core
    u = pickle.loads(pickle.dumps(t))
    assert list(u.prefixes()) == list(t.prefixes()) and u.labels == t.labels
    assert u.lookup("10.2.3.4") == "a" and u.lookup("2001:db8::5") == "b"


def test_core_is_immutable():
    t = PrefixTable().add("10.0.0.0/8", "a")
    core = t.core
    n4, l4, i4, n6, l6, i6 = t._arrays()
    with pytest.raises(TypeError):
        core.__init__(n4, l4, i4, n6, l6, i6)
    assert core.lookup_v4(0x0A000001) == 1


# ------------------------------------------------------------------ no crash on garbage

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_TOKENS = st.sampled_from(["10.0.0.0/8", "1.2.3.4", "2001:db8::/32", "::1", "/", "|", ",", "\t", " ",
                           "ipv4", "ipv6", "asn", "apnic", "KP", "1024", "allocated", "summary", "*",
                           "ExitAddress", "ExitNode", ";", "#", "²", "١٢", "-1", "99", "0", "x", "\x00"])
_FIELD = st.lists(st.one_of(_TOKENS, _TOKENS, st.text(max_size=4)), min_size=1, max_size=3).map("".join)
_LINE = st.tuples(st.sampled_from(["\t", ",", "|", " "]), st.lists(_FIELD, max_size=8)).map(lambda t: t[0].join(t[1]))
_LINES = st.lists(_LINE, max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_LINES, fmt=st.sampled_from(["csv", "rir", "ipasn", "tor", None]))
def test_garbage_gives_prefix_file_error_or_a_table(tmp_path, lines, fmt):
    p = tmp_path / "garbage.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        t = PrefixTable.load(p, format=fmt)
    except PrefixFileError as exc:
        msg = str(exc)
        assert msg.startswith(f"{p}:") and "\n" not in msg
        return
    # Whatever loaded must be consistent with itself.
    for cidr, label in t.prefixes():
        assert t.match(cidr.split("/")[0])[0] is not None
