"""Rules as data: loading the shipped defaults, merging and overriding user files,
validation errors (exact messages), and what compile resolves."""
import pytest

from nkstream._core import tag_fields
from nkstream.rules import CATEGORIES, DEFAULT_RULES, Rules, RulesError


from label_table import LabelTable


def write(tmp_path, text, name="user.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def tag_of(rules, **fields):
    core = rules.compile(LabelTable())
    return rules.tags[tag_fields(core, **fields)[0]]


# ------------------------------------------------------------------ defaults

# DESIGN.md vocabulary and issue 4 item 2: each named tag and its category.
REQUIRED = {
    "pptp-ctrl": "vpn-obfuscation", "gre-pptp": "vpn-obfuscation", "ipsec-ike": "vpn-obfuscation",
    "ipsec-natt": "vpn-obfuscation", "esp": "vpn-obfuscation", "ah": "vpn-obfuscation",
    "tor": "vpn-obfuscation", "openvpn": "vpn-obfuscation", "wireguard": "vpn-obfuscation",
    "bitcoin": "mining", "monero": "mining", "stratum": "mining",
    "https": "browsing-email-downloads", "tls": "browsing-email-downloads",
    "http": "browsing-email-downloads", "smtp": "browsing-email-downloads",
    "imap": "browsing-email-downloads", "imaps": "browsing-email-downloads",
    "pop3": "browsing-email-downloads", "pop3s": "browsing-email-downloads",
    "submission": "browsing-email-downloads", "smtps": "browsing-email-downloads",
    "quic": "browsing-email-downloads",
    "rtmp": "video-gaming", "video-stream": "video-gaming", "steam": "video-gaming",
    "xbox-live": "video-gaming", "riot-games": "video-gaming",
    "dns": "infrastructure",
}


def test_defaults_load():
    r = Rules.load()
    assert r.tags[0] == "unknown" and r.tag_category[0] == "unknown"
    assert len(r.tags) == len(r.tag_category) == len(set(r.tags))
    assert r.categories == CATEGORIES
    assert set(r.tag_category) <= set(CATEGORIES)
    for t, c in REQUIRED.items():
        assert r.category_of(t) == c, t
    assert r.files == [str(DEFAULT_RULES)]
    # every default tag says where its facts come from
    for t in r.tags[1:]:
        assert r.definition(t).source, t


def test_defaults_can_be_skipped(tmp_path):
    p = write(tmp_path, '[tag.x]\ncategory = "other"\nports = ["tcp:1"]\n')
    r = Rules.load(p, defaults=False)
    assert r.tags == ("unknown", "x")
    assert r.tag_category == ("unknown", "other")


# ------------------------------------------------------------ merge / override

def test_user_file_overrides_a_tag_whole(tmp_path):
    base = Rules.load()
    p = write(tmp_path, """
[tag.https]
category = "other"
ports = ["tcp:4443"]
""")
    r = Rules.load(p)
    assert r.tags == base.tags                              # same ids
    assert r.category_of("https") == "other"
    assert tag_of(r, proto=6, sport=40000, dport=4443) == "https"
    assert tag_of(r, proto=6, sport=40000, dport=443) == "unknown"   # old rules gone


def test_user_file_adds_tags_after_the_defaults(tmp_path):
    base = Rules.load()
    p = write(tmp_path, '[tag.my-vpn]\ncategory = "vpn-obfuscation"\nports = ["udp:7000-7010"]\n')
    r = Rules.load(p)
    assert r.tags == base.tags + ("my-vpn",)
    assert tag_of(r, proto=17, sport=40000, dport=7005) == "my-vpn"


def test_disabled_tag_keeps_its_id_and_drops_its_rules(tmp_path):
    p = write(tmp_path, '[tag.pptp-ctrl]\ncategory = "vpn-obfuscation"\nenabled = false\nports = ["tcp:1723"]\n')
    r = Rules.load(p)
    assert r.tag_id("pptp-ctrl") == Rules.load().tag_id("pptp-ctrl")
    assert tag_of(r, proto=6, sport=40000, dport=1723) == "unknown"


def test_equal_priority_later_file_wins(tmp_path):
    p = write(tmp_path, '[tag.dns-alt]\ncategory = "other"\nports = ["udp:53"]\n')
    r = Rules.load(p)
    assert tag_of(r, proto=17, sport=40000, dport=53) == "dns-alt"
    p2 = write(tmp_path, '[tag.weak]\ncategory = "other"\nports = [{spec = "udp:53", priority = 99}]\n', "w.toml")
    assert tag_of(Rules.load(p2), proto=17, sport=40000, dport=53) == "dns"


def test_later_payload_signature_wins_a_tie(tmp_path):
    p = write(tmp_path, '[tag.mine]\ncategory = "other"\npayload = [{pattern = "f9 be b4 d9", proto = "tcp"}]\n')
    r = Rules.load(p)
    btc = bytes.fromhex("f9beb4d976657273696f6e000000000055000000") + bytes(10)
    assert tag_of(r, proto=6, sport=40000, dport=12345, payload=btc) == "mine"


def test_services_override_per_label(tmp_path):
    p = write(tmp_path, '[services]\nfacebook = ["facebook.com"]\nmyservice = ["example.org"]\n')
    r = Rules.load(p)
    peers = LabelTable()
    core = r.compile(peers)
    assert core.sni_service("fbcdn.net") is None                        # replaced list
    assert peers.labels[core.sni_service("www.facebook.com")[0]] == "facebook"
    assert peers.labels[core.sni_service("a.example.org")[0]] == "myservice"
    assert peers.labels[core.sni_service("qq.com")[0]] == "tencent"      # others kept


def test_suffix_moved_to_another_service_by_a_later_file(tmp_path):
    p = write(tmp_path, '[services]\nmeta-cdn = ["fbcdn.net"]\n')
    peers = LabelTable()
    core = Rules.load(p).compile(peers)
    assert peers.labels[core.sni_service("x.fbcdn.net")[0]] == "meta-cdn"


def test_from_string_and_load_agree(tmp_path):
    text = '[tag.x]\ncategory = "other"\nports = ["tcp:1"]\n'
    assert Rules.from_string(text).tags == Rules.load(write(tmp_path, text)).tags


# ----------------------------------------------------------------- compile

def test_compile_interns_labels_in_the_peer_table():
    peers = LabelTable("tor", "facebook")
    r = Rules.load()
    core = r.compile(peers)
    assert peers.labels[:3] == [None, "tor", "facebook"]       # existing ids unchanged
    for name in ("youtube", "baidu", "mullvad", "icloud-private-relay"):
        assert name in peers.labels
    t, _ = tag_fields(core, proto=17, sport=1, dport=2, peer_label=1)
    assert r.tags[t] == "tor"


def test_compile_against_real_prefix_table_if_present():
    prefixes = pytest.importorskip("nkstream.prefixes")
    table = prefixes.PrefixTable()
    r = Rules.load()
    core = r.compile(table)
    tor = table.label_id("tor")
    assert r.tags[tag_fields(core, proto=17, sport=1, dport=2, peer_label=tor)[0]] == "tor"


def test_compiled_tables_are_bucketed():
    core = Rules.load().compile(LabelTable())
    sizes = core.bucket_sizes()
    # a payload byte only meets the signatures that admit it (plus the few whose
    # pattern starts later), never the whole list
    assert max(sizes) < core.n_signatures
    assert sizes[0x16] < core.n_signatures // 2
    # and per transport: a TCP payload never walks the UDP-only signatures (QUIC,
    # DNS, WireGuard...) nor a UDP payload the TCP-only ones
    tcp, udp = core.bucket_sizes(6), core.bucket_sizes(17)
    assert all(t <= m and u <= m for t, u, m in zip(tcp, udp, sizes))
    assert sum(tcp) < sum(sizes) and sum(udp) < sum(sizes)
    assert core.bucket_sizes(132) == core.bucket_sizes(47)    # both "other"


# --------------------------------------------------------------- validation

BAD = [
    ('[tag.x]\nports = ["tcp:1"]\n', "rule 'x': missing 'category'"),
    ('[tag.x]\ncategory = "videos"\n',
     "rule 'x': unknown category 'videos' (expected one of video-gaming, browsing-email-downloads, "
     "vpn-obfuscation, mining, infrastructure, other, unknown)"),
    ('[tag.x]\ncategory = "unknown"\n', "rule 'x': category 'unknown' is reserved for the tag 'unknown'"),
    ('[tag.unknown]\ncategory = "other"\n', "rule 'unknown': 'unknown' is reserved (tag 0: nothing matched)"),
    ('[tag.X]\ncategory = "other"\n', "rule 'X': tag names are 1-63 characters of a-z, 0-9, '.', '_', '-'"),
    ('[tag.x]\ncategory = "other"\nport = ["tcp:1"]\n',
     "rule 'x': unknown key 'port' (expected one of category, description, enabled, gre, payload, "
     "peer_labels, ports, protocols, sni, source)"),
    ('[tag.x]\ncategory = "other"\nports = ["1723"]\n',
     "rule 'x': port spec '1723' must look like 'tcp:443', 'tcp/udp:53' or 'udp:5000-5500'"),
    ('[tag.x]\ncategory = "other"\nports = ["icmp:1"]\n',
     "rule 'x': port spec 'icmp:1': unknown transport 'icmp' (expected tcp, udp or sctp)"),
    ('[tag.x]\ncategory = "other"\nports = ["tcp:70000"]\n', "rule 'x': port spec 'tcp:70000': '70000' out of range 0..65535"),
    ('[tag.x]\ncategory = "other"\nports = ["tcp:9-3"]\n', "rule 'x': port spec 'tcp:9-3': '9-3': range start above its end"),
    ('[tag.x]\ncategory = "other"\nports = [{spec = "tcp:1", priority = 0}]\n',
     "rule 'x': port spec 'tcp:1' priority 0 out of range 1..255"),
    ('[tag.x]\ncategory = "other"\nprotocols = [256]\n', "rule 'x': IP protocol 256 out of range 0..255"),
    ('[tag.x]\ncategory = "other"\ngre = [{protocol_type = 1}]\n', "rule 'x': gre entry: missing 'version'"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "16 0g"}]\n',
     "rule 'x': pattern byte '0g' is not hh, ??, hh/mm or lo-hi (hex)"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "16 30/0f"}]\n',
     "rule 'x': pattern byte '30/0f': value has bits outside the mask"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "04-01"}]\n',
     "rule 'x': pattern byte '04-01': range start above its end"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "16", text = "x"}]\n',
     "rule 'x': payload: give exactly one of 'pattern' (hex bytes) or 'text'"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "' + "00 " * 65 + '"}]\n',
     "rule 'x': payload pattern is 65 bytes, more than 64"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "01", len = 148, min_len = 2}]\n',
     "rule 'x': payload: 'len' excludes 'min_len'/'max_len'"),
    ('[tag.x]\ncategory = "other"\npayload = [{pattern = "01 02 03", max_len = 2}]\n',
     "rule 'x': payload pattern cannot fit within max_len"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "{", contains = "login"}]\n',
     "rule 'x': payload contains must be a non-empty list of non-empty strings"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "{", within = 10}]\n',
     "rule 'x': payload 'within' needs 'contains'"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "{", contains = ["a"], within = 5000}]\n',
     "rule 'x': payload within 5000 out of range 1..4096"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "GET", proto = "icmp"}]\n',
     "rule 'x': payload proto 'icmp' must be tcp, udp or sctp"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "GET", offset = -1}]\n',
     "rule 'x': payload offset -1 out of range 0..1500"),
    ('[tag.x]\ncategory = "other"\npayload = [{text = "GET", mask = "ff"}]\n',
     "rule 'x': payload: unknown key 'mask' (expected one of contains, len, len_multiple, "
     "length_prefix, max_len, min_len, note, offset, pattern, ports, priority, proto, text, within)"),
    ('[tag.x]\ncategory = "other"\nsni = ["bad domain"]\n', "rule 'x': sni entry 'bad domain' is not a valid suffix"),
    ('[tag.x]\ncategory = "other"\npeer_labels = [""]\n', "rule 'x': peer_labels entry '' is not a valid label"),
    ('[services]\nfacebook = "fbcdn.net"\n', "service 'facebook': must be a list of domain-suffix strings"),
    ('[services]\nfacebook = ["fb cdn.net"]\n', "service 'facebook': 'fb cdn.net' is not a domain suffix (like 'fbcdn.net')"),
    ('[rules]\nx = 1\n', "unknown top-level key 'rules' (expected [tag.NAME] tables and [services])"),
    ('[tag.a]\ncategory = "other"\nports = ["tcp:7"]\n[tag.b]\ncategory = "other"\nports = ["tcp:5-9"]\n',
     "rule 'b': tcp port 7 is also claimed by rule 'a' at the same priority 100"),
    ('[tag.a]\ncategory = "other"\npeer_labels = ["x"]\n[tag.b]\ncategory = "other"\npeer_labels = ["x"]\n',
     "rule 'b': peer label 'x' is also claimed by rule 'a' at the same priority 50"),
    ('[services]\na = ["x.com"]\nb = ["x.com"]\n', "service 'b': suffix 'x.com' is also listed for service 'a'"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(": ", 1)[-1][:40] for _, m in BAD])
def test_validation_errors(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(RulesError) as e:
        Rules.load(p, defaults=False)
    assert str(e.value) == f"{p}: {message}"
    assert isinstance(e.value, ValueError)


def test_invalid_toml_names_file_and_line(tmp_path):
    p = write(tmp_path, '[tag.x]\ncategory = other\n')
    with pytest.raises(RulesError) as e:
        Rules.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: invalid TOML: ") and "line 2" in msg


def test_unreadable_file(tmp_path):
    p = tmp_path / "missing.toml"
    with pytest.raises(RulesError) as e:
        Rules.load(p)
    assert str(e.value) == f"{p}: cannot read rules: No such file or directory"


def test_not_utf8(tmp_path):
    p = tmp_path / "latin.toml"
    p.write_bytes(b'[tag.x]\ncategory = "caf\xe9"\n')
    with pytest.raises(RulesError) as e:
        Rules.load(p)
    assert str(e.value) == f"{p}: not UTF-8 text (byte offset 23)"


def test_conflict_across_files_is_not_an_error(tmp_path):
    a = write(tmp_path, '[tag.a]\ncategory = "other"\nports = ["tcp:7"]\n', "a.toml")
    b = write(tmp_path, '[tag.b]\ncategory = "other"\nports = ["tcp:7"]\n', "b.toml")
    r = Rules.load(a, b, defaults=False)
    assert tag_of(r, proto=6, sport=40000, dport=7) == "b"
    r = Rules.load(b, a, defaults=False)
    assert tag_of(r, proto=6, sport=40000, dport=7) == "a"


def test_pattern_syntax_compiles_to_the_documented_bytes(tmp_path):
    p = write(tmp_path, '[tag.x]\ncategory = "other"\npayload = [{pattern = "ab ?? 80/c0 10-1f", proto = "udp"}]\n')
    r = Rules.load(p, defaults=False)
    sig = r.definition("x").payload[0]
    assert sig["pattern"] == [(0xFF, 0xAB, 0xAB), (0, 0, 0), (0xC0, 0x80, 0x80), (0xFF, 0x10, 0x1F)]
    ok = bytes([0xAB, 0x00, 0xBF, 0x15])
    assert tag_of(r, proto=17, sport=1, dport=2, payload=ok) == "x"
    for bad in (bytes([0xAC, 0, 0xBF, 0x15]), bytes([0xAB, 0, 0x40, 0x15]), bytes([0xAB, 0, 0x80, 0x20]), ok[:3]):
        assert tag_of(r, proto=17, sport=1, dport=2, payload=bad) == "unknown", bad


def test_every_default_tag_is_documented():
    doc = (DEFAULT_RULES.parent.parent.parent / "docs" / "signatures.md").read_text()
    r = Rules.load()
    for t, c in zip(r.tags[1:], r.tag_category[1:]):
        assert f"| `{t}` | {c} |" in doc, t
