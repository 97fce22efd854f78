"""Serve the demo exchange with hypercorn's trio worker (a real HTTP server, not ours)."""

from __future__ import annotations

import ipaddress
import logging
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ntx.demo.app import DemoApp

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    app: DemoApp,
    *,
    host: str = LOOPBACK,
    port: int = 0,
    quiet: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled; reports its base URL (with the real port) when listening.

    Port 0 picks a free port. `quiet` keeps hypercorn's own log off the terminal.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    if quiet:
        silent = logging.getLogger("ntx.demo.hypercorn")
        silent.addHandler(logging.NullHandler())
        silent.propagate = False
        config.errorlog = silent
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, cast(Any, app), config, mode="asgi"))
        task_status.started(binds[0])
