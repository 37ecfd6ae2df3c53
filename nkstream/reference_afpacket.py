"""Slow, obviously correct reference of the AF_PACKET TPACKET_V3 block walker
(nkstream/core/source_afpacket.pxi afp_walk_block), written from the kernel's
structure definitions (include/uapi/linux/if_packet.h) with struct.unpack.

Tests hold the native walker against it on blocks captured from the kernel and on
generated and damaged blocks (Hypothesis).
"""
import struct

# struct tpacket_block_desc: u32 version, u32 offset_to_priv, then
# struct tpacket_hdr_v1: u32 block_status, u32 num_pkts, u32 offset_to_first_pkt,
# u32 blk_len, u64 seq_num, ts_first_pkt, ts_last_pkt.
BLOCK_DESC = struct.Struct("<IIIIIIQ")
# struct tpacket3_hdr: u32 tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len,
# tp_status; u16 tp_mac, tp_net; hv1 {u32 tp_rxhash, u32 tp_vlan_tci,
# u16 tp_vlan_tpid, u16 pad}; u8 tp_padding[8]  -> 48 bytes.
TPACKET3_HDR = struct.Struct("<IIIIIIHHIIHH8x")
assert TPACKET3_HDR.size == 48

TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100


def walk_block(block, linktype=1, iface=0, cap=None):
    """[(ts_ns, off, caplen, wirelen, linktype, vlan_tci, vlan_tpid, iface)], bad."""
    size = len(block)
    cap = size // 64 + 1 if cap is None else cap
    _, _, _, num_pkts, off, _, _ = BLOCK_DESC.unpack_from(block, 0)
    recs, bad = [], 0
    for i in range(num_pkts):
        if len(recs) >= cap or off + TPACKET3_HDR.size > size:
            bad += num_pkts - i
            break
        (nxt, sec, nsec, snaplen, wirelen, status, mac, _net,
         _rxhash, tci, tpid, _pad) = TPACKET3_HDR.unpack_from(block, off)
        start = off + mac
        if start + snaplen > size or snaplen > wirelen:
            bad += num_pkts - i
            break
        if status & TP_STATUS_VLAN_VALID:
            # the kernel took the outer tag off: 4 more bytes were on the wire
            v_tci = tci & 0xFFFF
            v_tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
            wire = (wirelen + 4) & 0xFFFFFFFF
        else:
            v_tci = v_tpid = 0
            wire = wirelen
        recs.append((sec * 1_000_000_000 + nsec, start, snaplen, wire, linktype, v_tci, v_tpid, iface))
        if nxt == 0:
            if i + 1 < num_pkts:
                bad += num_pkts - i - 1
            break
        off += nxt
    return recs, bad
