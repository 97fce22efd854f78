"""Serve the demo exchange with hypercorn's trio worker (a real HTTP server, not ours)."""

from __future__ import annotations

import ipaddress
import logging
from functools import partial
from typing import Any, Protocol, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ntx.demo.app import QuietResets, Receive, Scope, Send

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AsgiApp(Protocol):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


async def serve(
    app: AsgiApp,
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
    log = logging.getLogger("ntx.demo.server.quiet" if quiet else "ntx.demo.server")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler() if quiet else logging.StreamHandler())
        log.addFilter(QuietResets())
    config.errorlog = log
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, cast(Any, app), config, mode="asgi"))
        task_status.started(binds[0])
