"""Slow, obviously correct references that the native core is tested against.

``ReferencePrefixTable``: longest-prefix match with ``ipaddress`` and one dict per
(family, prefix length): look the address up masked to every length, longest first.
No tries, no leaf pushing, no numpy -- nothing shared with nkstream/core/lpm.pxi.
"""
import ipaddress


class ReferencePrefixTable:
    """Same semantics as nkstream.prefixes.PrefixTable: longest prefix wins; adding
    the same prefix again replaces its label (the later add wins)."""

    def __init__(self):
        # {version: {length: {network int: label}}}
        self._by_len = {4: {}, 6: {}}

    def add(self, cidr, label):
        net = ipaddress.ip_network(cidr, strict=True)
        self._by_len[net.version].setdefault(net.prefixlen, {})[int(net.network_address)] = label

    def __len__(self):
        return sum(len(d) for fam in self._by_len.values() for d in fam.values())

    def match(self, addr):
        """(label, prefix text) of the longest prefix containing addr, or None."""
        ip = ipaddress.ip_address(addr)
        bits = ip.max_prefixlen
        a = int(ip)
        fam = self._by_len[ip.version]
        for ln in range(bits, -1, -1):
            d = fam.get(ln)
            if not d:
                continue
            net = a & (((1 << ln) - 1) << (bits - ln))
            if net in d:
                return d[net], str(ipaddress.ip_network((net, ln)))
        return None

    def lookup(self, addr):
        m = self.match(addr)
        return m[0] if m else None

    def prefixes(self):
        for ver in (4, 6):
            for ln, d in self._by_len[ver].items():
                for net, label in d.items():
                    yield str(ipaddress.ip_network((net, ln))), label
