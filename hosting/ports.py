"""Is a TCP port free, and if not, who holds it: for errors that name the port and the culprit
instead of a bare `Address already in use`."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a bind without SO_REUSEPORT fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not use
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def holder(port: int) -> str:
    """Which process listens on `port`, as far as /proc tells (Linux), e.g.
    `pid 4242 (python -m eventstore_server --listen 127.0.0.1:50051)`; '' when unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return ""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    return f"pid {pid} ({command.decode(errors='replace').strip()})"
    return ""


def busy_message(address: str) -> str:
    """`ADDRESS is in use by pid N (command)`, or without the holder when it is not known."""
    port = int(address.rsplit(":", 1)[1])
    who = holder(port)
    return f"{address} is in use" + (f" by {who}" if who else "")
