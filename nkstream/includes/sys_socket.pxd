# Declarations from <sys/socket.h> (and the SOL_PACKET / SO_ATTACH_FILTER constants
# it pulls in from <bits/socket.h> and <asm-generic/socket.h>) used by the AF_PACKET
# engine.  Only what nkstream calls is declared.
from libc.stdint cimport uint16_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        unsigned short sa_family

    enum:
        AF_PACKET
        SOCK_RAW
        SOCK_CLOEXEC
        SOL_SOCKET
        SOL_PACKET
        SO_ERROR
        SO_ATTACH_FILTER
        SO_RCVBUF

    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr* addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void* val, socklen_t len)
    int getsockopt(int fd, int level, int name, void* val, socklen_t* len)

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    long sysconf(int name)
    enum:
        _SC_PAGESIZE

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
