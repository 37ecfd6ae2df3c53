"""Network interfaces for the live sensor, read over rtnetlink with pyroute2.

``list_interfaces()`` gives what ``nkstream ifaces`` prints; ``check_interface(name)``
is what ``nkstream run`` calls before opening a capture (a clear error when the
interface is missing or administratively down); ``wait_for_interface(name)`` waits
(bounded by the caller's ``stop`` callback and an optional timeout) for it to come
back up after the kernel reported ENETDOWN on the capture socket.
"""
import os
import time

IFF_UP = 0x1            # include/uapi/linux/if.h
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100

# rtnetlink IFLA_OPERSTATE values (RFC 2863 ifOperStatus, include/uapi/linux/if.h).
# UNKNOWN is what loopback and many virtual devices report while passing traffic.
_OPER_OK = ("UP", "UNKNOWN")


class InterfaceError(OSError):
    """The capture interface is missing or down (one-line message for the CLI)."""


def _driver(name):
    # The bound driver, as sysfs names it (virtual devices have none: report their
    # rtnetlink link kind instead, e.g. veth, bridge).
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/device/driver"))
    except OSError:
        return None


def _row(msg):
    name = msg.get("ifname")
    stats = msg.get("stats64") or msg.get("stats") or {}
    info = msg.get("linkinfo")
    kind = info.get("kind") if info is not None else None
    flags = msg["flags"]
    return {
        "name": name,
        "index": msg["index"],
        "admin": "up" if flags & IFF_UP else "down",
        "operstate": (msg.get("operstate") or "UNKNOWN").lower(),
        "mtu": msg.get("mtu"),
        "promiscuity": msg.get("promiscuity"),
        "promisc": bool(flags & IFF_PROMISC),
        "driver": _driver(name) or kind,
        "address": msg.get("address"),
        "rx_packets": stats.get("rx_packets", 0),
        "rx_bytes": stats.get("rx_bytes", 0),
        "rx_dropped": stats.get("rx_dropped", 0),
        "rx_missed": stats.get("rx_missed_errors", 0),
        "tx_packets": stats.get("tx_packets", 0),
        "tx_bytes": stats.get("tx_bytes", 0),
        "tx_dropped": stats.get("tx_dropped", 0),
    }


def _links(name=None):
    from pyroute2 import IPRoute          # imported lazily: it is a slow import
    with IPRoute() as ipr:
        if name is None:
            return [_row(m) for m in ipr.get_links()]
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return []
        return [_row(m) for m in ipr.get_links(idx[0])]


def list_interfaces():
    """Every interface: name, index, admin state, operstate, MTU, promiscuity count,
    driver and the kernel's rx/tx packet, byte and drop counters."""
    return sorted(_links(), key=lambda r: r["index"])


def interface_info(name):
    """The row of ``name``, or None if there is no such interface."""
    rows = _links(name)
    return rows[0] if rows else None


def is_up(info):
    return info is not None and info["admin"] == "up" and info["operstate"].upper() in _OPER_OK


def check_interface(name):
    """Row of ``name`` if it exists and is up; InterfaceError saying what is wrong."""
    info = interface_info(name)
    if info is None:
        names = ", ".join(r["name"] for r in list_interfaces())
        raise InterfaceError(f"no such interface {name!r} (interfaces: {names})")
    if info["admin"] != "up":
        raise InterfaceError(f"interface {name} is down (bring it up: ip link set {name} up)")
    if info["operstate"].upper() not in _OPER_OK:
        raise InterfaceError(f"interface {name} is up but has no link (operstate "
                             f"{info['operstate']}): check the cable or the peer")
    return info


def wait_for_interface(name, timeout=None, poll=0.2, stop=None):
    """Wait until ``name`` exists and is up; returns its row, or None when
    ``timeout`` seconds passed or ``stop()`` returned true first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = interface_info(name)
        if is_up(info):
            return info
        if stop is not None and stop():
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def sysfs_is_up(name):
    """Cheap check from /sys (no netlink socket): exists, IFF_UP and operstate up."""
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            flags = int(f.read(), 16)
        with open(f"/sys/class/net/{name}/operstate") as f:
            oper = f.read().strip().upper()
    except OSError:
        return False
    return bool(flags & IFF_UP) and oper in _OPER_OK


def sysfs_ifindex(name):
    try:
        with open(f"/sys/class/net/{name}/ifindex") as f:
            return int(f.read())
    except OSError:
        return None
