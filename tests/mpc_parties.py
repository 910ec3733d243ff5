"""Run one function as three MPyC parties in forked processes on free local ports."""

from __future__ import annotations

import multiprocessing as mp
import socket
from collections.abc import Callable
from typing import Any


def free_ports(n: int = 3) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_three(target: Callable[..., None], args: tuple[Any, ...], timeout: float) -> list[Any]:
    """``target(pid, ports, *args, queue)`` in three forked processes; what each put on the
    queue, in arrival order.  Processes still alive afterwards are killed."""
    ports = free_ports()
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(i, ports, *args, q)) for i in range(3)]
    for p in procs:
        p.start()
    try:
        return [q.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
