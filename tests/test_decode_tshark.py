"""Every packet of every public-corpus capture: nkstream's decode equals tshark's.

For each capture tshark can read we run tshark once (fields per packet) and compare
with decode_columns() over the same file read by tests/pcapfile.py, both put in
the terms `nkstream verify` reports (nkstream/commands/verify.py):
- whether there is an IP header, and the OUTER one's version, src and dst;
- the IP protocol: IPv4 `ip.proto` of the outer header; IPv6 the Next Header after
  the outer header's extension headers (hop-by-hop, routing, fragment, dstopts);
- ports: when the protocol right after the outer IP header is TCP, UDP or SCTP, its
  first ports; otherwise nkstream must report no ports (e.g. GRE, IP-in-IP, AH: the
  ports tshark shows there belong to an inner header);
- VLAN ids before the outer IP header, outermost first.
tshark runs with IP reassembly and TCP desegmentation off so each packet is
dissected on its own, as nkstream sees it.

Packets where nkstream deliberately differs are listed in EXCEPTIONS with the reason
(also in docs/decoder.md); an exception that stops matching fails the test too, so
the table cannot go stale.
"""
import shutil

import pytest

from conftest import corpus_captures
from nkstream import _core
from nkstream.commands.verify import decode_view, tshark_rows, wireshark_view
from pcapfile import read_batch

# (capture, frame number) -> why nkstream's decode differs from tshark's on purpose.
EXCEPTIONS = {
}


CAPTURES = corpus_captures()


def test_corpus_present():
    assert len(CAPTURES) >= 50, "public corpus missing: set NKSTREAM_SHARED"


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_decode_matches_tshark(path):
    if shutil.which("tshark") is None:
        pytest.fail("tshark is required for the decoder cross-check (apt-get install tshark)")
    try:
        rows = tshark_rows(path, timeout=120)
    except RuntimeError:
        # Only a file tshark itself cannot read is left out, and it must be one
        # our reader rejects too (so nothing readable escapes the cross-check).
        with pytest.raises(Exception):
            read_batch(path)
        return
    data, recs = read_batch(path)
    assert len(rows) == len(recs), "%s: tshark saw %d packets, pcapfile %d" % (
        path.name, len(rows), len(recs))
    cols = _core.decode_columns(data, recs)
    mismatches = []
    for i, frame in enumerate(sorted(rows)):
        exp, got = wireshark_view(rows[frame]), decode_view(cols, i)
        why = EXCEPTIONS.get((path.name, frame))
        if why is None and exp != got:
            mismatches.append("frame %d: tshark %r nkstream %r (error %s)" % (
                frame, exp, got, _core.ERROR_NAMES[cols["error"][i]]))
        elif why is not None and exp == got:
            mismatches.append("frame %d is listed as an exception (%s) but now agrees"
                              % (frame, why))
    assert not mismatches, "%s:\n  %s" % (path.name, "\n  ".join(mismatches[:20]))
