# Declarations from <net/if.h>: interface name -> index for bind() and membership.
cdef extern from "<net/if.h>" nogil:
    enum:
        IF_NAMESIZE
    unsigned int if_nametoindex(const char* ifname)
