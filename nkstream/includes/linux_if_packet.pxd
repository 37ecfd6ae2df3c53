# Declarations from <linux/if_packet.h> and <linux/if_ether.h> used by the AF_PACKET
# engine (nkstream/core/source_afpacket.pxi).  Only the fields nkstream reads or
# writes are declared; Cython takes the real layout from the header.
#
# References: include/uapi/linux/if_packet.h (Linux), and
# Documentation/networking/packet_mmap.rst ("TPACKET_V3", "AF_PACKET fanout mode",
# "PACKET_STATISTICS") in the kernel tree.
from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef extern from "<linux/if_ether.h>" nogil:
    enum:
        ETH_P_ALL           # 0x0003: every protocol (bind / sll_protocol)
        ETH_P_8021Q         # 0x8100: 802.1Q tag, the TPID assumed when the kernel
                            # does not report one (TP_STATUS_VLAN_TPID_VALID unset)
        ETH_P_8021AD        # 0x88A8: 802.1ad service tag

cdef extern from "<linux/if_packet.h>" nogil:
    # struct sockaddr_ll: the address of a packet socket; bind() by interface index.
    struct sockaddr_ll:
        unsigned short sll_family
        uint16_t sll_protocol      # __be16
        int sll_ifindex

    # struct packet_mreq: PACKET_ADD_MEMBERSHIP / PACKET_DROP_MEMBERSHIP argument.
    # The kernel keeps a per-socket membership list and undoes it on close
    # (packet_release -> packet_flush_mclist), so a dead process leaves no
    # promiscuity count behind.
    struct packet_mreq:
        int mr_ifindex
        unsigned short mr_type
        unsigned short mr_alen

    # TPACKET_V3 ring request (PACKET_RX_RING).  packet_mmap.rst: the block size must
    # be a multiple of the page size, tp_frame_size a multiple of TPACKET_ALIGNMENT,
    # tp_frame_nr == tp_block_size / tp_frame_size * tp_block_nr; frames are variable
    # length inside a V3 block, so tp_frame_size is only checked, not used for layout.
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov    # block timeout in ms (0: kernel picks)
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word

    # PACKET_STATISTICS for TPACKET_V3.  Reset to zero by every read; tp_packets
    # already includes tp_drops (net/packet/af_packet.c packet_getsockopt).
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
        unsigned int tp_freeze_q_cnt

    struct tpacket_hdr_v1:
        uint32_t block_status      # TP_STATUS_KERNEL (0) or TP_STATUS_USER
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
        uint32_t blk_len           # valid bytes in the block, padding included
        uint64_t seq_num           # increases by one per block the kernel closes

    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1

    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr

    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci       # valid with TP_STATUS_VLAN_VALID
        uint16_t tp_vlan_tpid      # valid with TP_STATUS_VLAN_TPID_VALID

    # One packet in a V3 block.  In C `hv1` is a member of an anonymous union, so
    # `h.hv1.tp_vlan_tci` names the same field as the header's `h->hv1.tp_vlan_tci`.
    struct tpacket3_hdr:
        uint32_t tp_next_offset    # offset of the next packet from this header; 0: last
        uint32_t tp_sec
        uint32_t tp_nsec           # V3 timestamps are in nanoseconds
        uint32_t tp_snaplen        # bytes present at tp_mac
        uint32_t tp_len            # bytes on the wire
        uint32_t tp_status
        uint16_t tp_mac            # offset of the link-layer header from this header
        uint16_t tp_net
        tpacket_hdr_variant1 hv1

    enum tpacket_versions:
        TPACKET_V1
        TPACKET_V2
        TPACKET_V3

    enum:
        TPACKET_ALIGNMENT
        TPACKET3_HDRLEN

        # socket options (level SOL_PACKET)
        PACKET_ADD_MEMBERSHIP
        PACKET_DROP_MEMBERSHIP
        PACKET_RX_RING
        PACKET_STATISTICS
        PACKET_VERSION
        PACKET_FANOUT

        # packet_mreq.mr_type
        PACKET_MR_PROMISC

        # PACKET_FANOUT modes and flags: the option value is
        # group_id | (mode | flags) << 16 (packet_mmap.rst "AF_PACKET fanout mode")
        PACKET_FANOUT_HASH
        PACKET_FANOUT_LB
        PACKET_FANOUT_CPU
        PACKET_FANOUT_FLAG_DEFRAG

        # tp_status / block_status bits
        TP_STATUS_KERNEL
        TP_STATUS_USER
        TP_STATUS_LOSING
        TP_STATUS_VLAN_VALID
        TP_STATUS_BLK_TMO
        TP_STATUS_VLAN_TPID_VALID
