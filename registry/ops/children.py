"""Child processes of `jobreg up`: in their own process group, ended with their parent, stopped in bounded time."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the hook runs between fork and exec
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def start(args: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group (a terminal's Ctrl-C reaches `up` alone, which then stops the
    children in order), to be ended by the kernel if `up` dies without stopping it."""
    return subprocess.Popen(
        list(args),
        env=None if env is None else dict(env),
        process_group=0,
        # The hook only calls prctl: safe even beside the embedded fakeredis's server thread.
        preexec_fn=_pdeathsig_setter(),
        **kwargs,
    )


def stop(
    procs: Sequence[subprocess.Popen[bytes]], grace_s: float, hurry: Callable[[], bool] = lambda: False
) -> list[subprocess.Popen[bytes]]:
    """SIGTERM every live process, wait up to ``grace_s`` (less once ``hurry()`` says so), then SIGKILL the rest;
    return those that had to be killed."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline and not hurry():
        time.sleep(0.05)
    killed = [proc for proc in procs if proc.poll() is None]
    for proc in killed:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    return killed
