"""Threads for the daemon's background work: local training and the evaluation of new models.

Both have a slot or longer to finish; votes, proposals and gossip on the event loop have
milliseconds, and finality waits for block verification (which stays at the daemon's priority).
On a busy device, or a machine many daemons share, the kernel should run a waiting event loop
before more background work.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("fedchain.fl")

BACKGROUND_NICENESS = 10
"""How much lower a background thread's CPU priority is than the daemon's (Linux nice levels)."""


def background_priority() -> None:
    """Lower the calling thread's CPU priority by :data:`BACKGROUND_NICENESS`.

    Linux applies ``setpriority`` with a thread id to that thread alone; where a platform refuses
    (or a sandbox forbids it) the work keeps the daemon's priority.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICENESS)
    except (OSError, AttributeError) as exc:
        log.info("background work keeps the daemon's CPU priority (%s)", exc)


def background_worker(name: str) -> ThreadPoolExecutor:
    """One thread at background priority: its jobs run in order."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=background_priority)
