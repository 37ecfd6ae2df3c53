"""tag_frame: the tagger behind the real decoder (decode_packet), held against the
tagger fed with tshark's reading of the same packets, on every corpus packet.

tag_frame lives in nkstream/core/rules_frame.pxi, which the spine includes once the
decoder (decode.pxi) and the rules (rules.pxi) are both merged."""
import pytest

from nkstream import _core
from nkstream.rules import Rules

from conftest import corpus_captures
from tiny_pcap import frames
from tshark_packets import packets

pytestmark = pytest.mark.skipif(not hasattr(_core, "tag_frame"),
                                reason="rules_frame.pxi is not in the spine yet (needs decode.pxi)")


class LabelTable:
    def __init__(self):
        self.labels = [None]

    def label_id(self, name):
        if name not in self.labels:
            self.labels.append(name)
        return self.labels.index(name)


def test_tag_frame_equals_tagging_tshark_fields(corpus_dir):
    rules = Rules.load()
    core = rules.compile(LabelTable())
    n = 0
    for path in corpus_captures():
        fr = list(frames(path))
        pk = list(packets(path))
        assert len(fr) == len(pk), path.name
        for (linktype, frame), d in zip(fr, pk):
            got = _core.tag_frame(core, frame, linktype)
            want = _core.tag_fields(core, proto=d["proto"], sport=d["sport"], dport=d["dport"],
                                    payload=d["payload"], gre_ver=d["gre_ver"], gre_ptype=d["gre_ptype"])
            assert got[:2] == want, (path.name, d["number"], rules.tags[got[0]], rules.tags[want[0]])
            n += 1
    assert n > 20000
