"""Helpers of the cluster tests: fixed device figures, a log collector, an agent in a thread."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from coldpipe.cluster.agent import Agent, AgentOptions
from coldpipe.cluster.transport import Keys

# figures given instead of measured (the agents of these tests skip `--profile auto` to start fast)
FIXED_PROFILE = {
    "flops": 2e9,
    "load_bandwidth": 200e6,
    "memory": 2e9,
    "mem_bandwidth": 5e9,
    "startup": 0.01,
    "prompt_tokens": 16,
}


class LogLines(logging.Handler):
    """Every record of the ``coldpipe.cluster`` logger, with the time it was emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))

    def wait_for(self, text: str, after: float, timeout_s: float) -> float | None:
        """Seconds from ``after`` to the first line containing ``text`` emitted after it, or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for t, msg in list(self.lines):
                if t >= after and text in msg:
                    return t - after
            time.sleep(0.01)
        return None


def start_agent(keys: Keys, name: str, checkpoint: Path, **opts: Any) -> tuple[Agent, threading.Thread, int]:
    """An agent serving on 127.0.0.1 (ephemeral port) in a daemon thread; (agent, thread, port)."""
    agent = Agent(keys, AgentOptions(name, "127.0.0.1", 0, str(checkpoint), dict(FIXED_PROFILE), 16, **opts))
    got: list[int] = []
    th = threading.Thread(target=agent.serve, kwargs={"on_ready": got.append}, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, "the agent did not start"
    return agent, th, got[0]


def start_relay(keys: Keys, agents: dict[str, str]) -> tuple[Any, threading.Thread, int]:
    """The testbed's store-and-forward relay on 127.0.0.1 (ephemeral port) in a daemon thread."""
    from coldpipe.testbed.relay import Relay

    relay = Relay(keys, "127.0.0.1", 0, agents)
    got: list[int] = []
    th = threading.Thread(target=relay.serve, kwargs={"on_ready": got.append}, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, "the relay did not start"
    return relay, th, got[0]
