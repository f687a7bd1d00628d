"""Gratuitous ARP: tell every host of a LAN which MAC now answers for an address.

Both forms are sent, because neighbours differ in which they honour: a broadcast ARP
request for the address itself (RFC 5227's announcement) and a broadcast ARP reply whose
target hardware address is the sender's (Linux takes a reply as gratuitous only then,
and only a gratuitous frame overrides an entry inside its lock time).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
# Ethernet's minimum frame without the FCS; a driver that does not pad would send a runt.
MIN_FRAME = 60


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def frame(op: int, mac: bytes, addr: str, source: bytes | None = None) -> bytes:
    """One broadcast ARP frame announcing that `addr` is at `mac`, sent from `source`
    (default `mac`; a farm's virtual MAC must never be a frame's source)."""
    ip = ipaddress.IPv4Address(addr).packed
    target_mac = ZERO_MAC if op == ARPOP_REQUEST else mac
    eth = BROADCAST + (source or mac) + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, ETH_P_IP, 6, 4, op) + mac + ip + target_mac + ip
    return (eth + arp).ljust(MIN_FRAME, b"\x00")


def announce(ifname: str, mac: bytes, addrs: list[str], source: bytes | None = None) -> None:
    """Send one request and one reply per address on ifname (raises OSError, e.g. link down)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, ETH_P_ARP))
        for addr in addrs:
            for op in (ARPOP_REQUEST, ARPOP_REPLY):
                sock.send(frame(op, mac, addr, source))
