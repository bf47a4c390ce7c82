"""Shared pieces every service of the helper may use: the admin config, the audit log, the
process-exit watcher, the act thread, and hooks run when the helper stops. The facade builds one
Services and hands it to each handler; resources.py (cgroups) receives it too.

Threads: the D-Bus facade and polkit run on the asyncio loop; every act that changes the system
(rtnetlink, iptables, nft, the lease store) runs on ONE worker thread, in call order. That
serializes all state changes (no duplicate address or port under concurrent calls) and keeps
blocking kernel calls off the loop. pyroute2's synchronous API cannot run inside a running loop,
which is a second reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .audit import Audit
from .config import Config
from .lifetime import ExitWatcher

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    audit: Audit
    exits: ExitWatcher
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyctr-act"))

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Run `hook` (on the act thread) when the helper stops, before the network goes."""
        self.shutdown_hooks.append(hook)

    async def act(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` on the act thread and wait for its result (from the asyncio loop)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.worker, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn` on the act thread without waiting (e.g. from an exit callback)."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("background act %s failed", getattr(fn, "__name__", fn))
        self.worker.submit(run)
