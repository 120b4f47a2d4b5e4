"""Processes as owners: who this process is, whether a recorded owner is provably dead, and tying a child's life to
its parent's.

A pid means something only on the host, boot and PID namespace that issued it: the same number in another container
(same host name, another PID namespace) or after a reboot names another process or none. So an owner is recorded as
its pid together with a `machine_key`, a digest of host name, boot id and PID-namespace inode, and its death is
believed only when the key is this process's own and the pid is gone. Where the key cannot be determined (no
/proc), nothing is ever proved dead, and callers fall back to other evidence (a stale heartbeat).

Files and folders a process writes under temporary names carry `owner_tag()` in the name, so that a later sweep can
remove the ones whose writer is provably dead (`tag_is_dead`), and only those. This module imports only the
standard library: a spawned worker imports it (through `samscale.sweep.lifeline`) before torch.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1
_TAG = re.compile(r"owner-(\d+)-([0-9a-f]{12})(?![0-9a-f])")


@functools.lru_cache(maxsize=1)
def machine_key() -> str | None:
    """12 hex digits naming this host, boot and PID namespace; None where they cannot be read (then no pid of this
    process's records is ever trusted to be dead)."""
    if not sys.platform.startswith("linux"):
        return hashlib.sha256(f"{sys.platform}:{socket.gethostname()}".encode()).hexdigest()[:12]
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha256(f"{socket.gethostname()}:{boot}:{namespace}".encode()).hexdigest()[:12]


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` of this PID namespace exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def provably_dead(pid: int, key: str | None) -> bool:
    """True only when `key` is this process's `machine_key()` and no process `pid` exists: then the pid's owner is
    dead. A pid recorded on another host, boot or PID namespace proves nothing (False)."""
    mine = machine_key()
    return mine is not None and key == mine and pid > 0 and not pid_alive(pid)


def owner_tag(pid: int | None = None) -> str:
    """`owner-PID-KEY`: the part of a temporary name that says which process writes it."""
    return f"owner-{os.getpid() if pid is None else pid}-{machine_key() or '0' * 12}"


def tag_is_dead(name: str) -> bool:
    """Whether `name` carries an `owner_tag()` whose process is provably dead (False for names without one)."""
    match = _TAG.search(name)
    return match is not None and provably_dead(int(match.group(1)), match.group(2))


def die_with_parent(parent_pid: int) -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies; exit now if `parent_pid` is gone already
    (the signal only covers deaths after it is set)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)
