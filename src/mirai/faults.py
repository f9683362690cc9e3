"""Fault injection for the kill harness (`scripts/kill_harness.py`): a named site in the code can SIGKILL its own
process the n-th time it is reached, so a test can land a kill exactly inside a checkpoint write or between
the files of one checkpoint. Off unless the environment sets MIRAI_FAULT="site:n"; costs one dict lookup."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(site: str) -> None:
    """Die here (SIGKILL, as a pre-emption would) if MIRAI_FAULT names this site and this is its n-th hit."""
    spec = os.environ.get("MIRAI_FAULT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != site:
        return
    _hits[site] = _hits.get(site, 0) + 1
    if _hits[site] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
