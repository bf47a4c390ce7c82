"""The sync channel between pyctr and the container's first processes.

A SOCK_SEQPACKET socketpair (one message per send, close-on-exec): short text messages,
and SCM_RIGHTS for the one descriptor that travels (the pty master with -t). Built on
the _socket C module: socket.py costs ~2 ms of import (its enum conversions), which
`pyctr run` pays on every start.
"""

from __future__ import annotations

import _socket
import struct

_FD_BYTES = struct.calcsize("i")


def pair() -> tuple[_socket.socket, _socket.socket]:
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)


def send(sock: _socket.socket, text: str, fds: list[int] | None = None) -> None:
    ancillary = []
    if fds:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                      struct.pack(f"{len(fds)}i", *fds))]
    sock.sendmsg([text.encode()], ancillary)


def recv(sock: _socket.socket, max_fds: int = 1) -> tuple[bytes, list[int]]:
    """One message and any descriptors it carried (b"" when the other end is closed)."""
    msg, ancillary, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(max_fds * _FD_BYTES))
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_BYTES
            fds.extend(struct.unpack(f"{usable // _FD_BYTES}i", data[:usable]))
    return msg, fds
