"""Refuse every non-loopback network connection and name lookup in this Python process.

Loaded into each process of a test run through `sitecustomize.py` in this folder (put the folder on PYTHONPATH
and set OFFLINE_GUARD_LOG), so papermill's kernels are guarded too. Loopback stays open: the kernels talk to
papermill over 127.0.0.1. Every refused attempt is appended to the log, so a test can also assert that
nothing even tried.
"""

import ipaddress
import os
import socket

_ORIGINAL = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex,
             "getaddrinfo": socket.getaddrinfo}


def _is_loopback(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str):
    log = os.environ.get("OFFLINE_GUARD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"pid {os.getpid()}: {what}\n")
    raise OSError(f"offline guard: network access refused ({what})")


def _connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse(f"connect to {address!r}")
    return _ORIGINAL["connect"](self, address)


def _connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        _refuse(f"connect to {address!r}")
    return _ORIGINAL["connect_ex"](self, address)


def _getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host):
        _refuse(f"name lookup of {host!r}")
    return _ORIGINAL["getaddrinfo"](host, *args, **kwargs)


def install() -> None:
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = _connect, _connect_ex, _getaddrinfo


def uninstall() -> None:
    socket.socket.connect, socket.socket.connect_ex = _ORIGINAL["connect"], _ORIGINAL["connect_ex"]
    socket.getaddrinfo = _ORIGINAL["getaddrinfo"]
