"""Run a command under the system-call filter of a systemd unit, without systemd.

    python -m tests.seccomp_filter deploy/edge.service -- COMMAND [ARG...]

The unit's ``SystemCallFilter=`` lines are resolved as systemd resolves them (the first one an allow
list, then each ``~`` line removes and each plain line adds; groups expanded by ``systemd-analyze
syscall-filter``), plus the calls systemd always allows (systemd.exec(5)); every other call fails with
the unit's ``SystemCallErrorNumber=`` or, without one, kills the process, as under systemd. The filter
is loaded with libseccomp (through ctypes) and inherited by COMMAND and every thread and child of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

#: Allowed by systemd whatever the filter says (systemd.exec(5), SystemCallFilter=).
IMPLICIT: Final = frozenset({"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn",
                             "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep",
                             "clock_nanosleep"})
_SCMP_ACT_KILL_PROCESS: Final = 0x80000000
_SCMP_ACT_ALLOW: Final = 0x7FFF0000
_SCMP_ACT_ERRNO: Final = 0x00050000


def libseccomp() -> str | None:
    return ctypes.util.find_library("seccomp")


@functools.cache
def expand(name: str) -> frozenset[str]:
    """The system calls of ``name``: a call, or an ``@group`` (recursively)."""
    if not name.startswith("@"):
        return frozenset({name})
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    calls: set[str] = set()
    for line in out.splitlines():
        item = line.strip()
        if line.startswith("    ") and item and not item.startswith("#"):
            calls |= expand(item)
    return frozenset(calls)


def unit_filter(unit: Path) -> tuple[frozenset[str], int | None]:
    """The calls the unit allows, and the errno for the others (None: the process is killed)."""
    allowed: set[str] | None = None
    errno_value: int | None = None
    for line in unit.read_text().splitlines():
        if m := re.fullmatch(r"\s*SystemCallErrorNumber=(\w+)\s*", line):
            errno_value = getattr(errno, m.group(1))
        if not (m := re.fullmatch(r"\s*SystemCallFilter=(~?)(.*)", line)):
            continue
        calls = set().union(*(expand(tok) for tok in m.group(2).split()))
        if allowed is None:
            if m.group(1):
                raise ValueError(f"{unit}: the first SystemCallFilter= is a deny list; only allow lists are modelled")
            allowed = calls
        elif m.group(1):
            allowed -= calls
        else:
            allowed |= calls
    if allowed is None:
        raise ValueError(f"{unit} has no SystemCallFilter=")
    return frozenset(allowed | IMPLICIT), errno_value


def load(allowed: frozenset[str], errno_value: int | None) -> None:
    """Install the filter on this process (and so on everything it executes from now on)."""
    path = libseccomp()
    if path is None:
        raise OSError("libseccomp not found")
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    default = _SCMP_ACT_KILL_PROCESS if errno_value is None else _SCMP_ACT_ERRNO | errno_value
    ctx = lib.seccomp_init(default)
    for name in sorted(allowed):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # a call this architecture does not have is no rule
            lib.seccomp_rule_add(ctx, _SCMP_ACT_ALLOW, number, 0)
    if lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp_load failed")


def main(argv: list[str]) -> None:
    split = argv.index("--")
    load(*unit_filter(Path(argv[0])))
    os.execvp(argv[split + 1], argv[split + 1:])


if __name__ == "__main__":
    main(sys.argv[1:])
