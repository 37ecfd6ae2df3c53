# Declarations from <poll.h>: waiting for the next TPACKET_V3 block.  The kernel
# reports POLLIN when the block user space is due to read next is TP_STATUS_USER and
# POLLERR with SO_ERROR = ENETDOWN when the interface goes down (af_packet.c
# packet_notifier).
cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    enum:
        POLLIN
        POLLERR
        POLLHUP
        POLLNVAL
    int poll(pollfd* fds, nfds_t nfds, int timeout)
