"""Point-to-point messages between ranks with the model's link time, and what the main thread is doing.

Split out of :mod:`coldpipe.runtime.worker` (the program of one rank), which uses them.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["DOING", "Links", "doing", "span_tag"]

DOING = ["starting"]  # what the main thread is blocked on, for the one-line error


def doing(what: str) -> None:
    DOING[0] = what


class Links:
    """Point-to-point messages with the model's link time (docs/model.md#transfers), emulated on the receiving side.

    A message is a job's input: a small header ``[sent, request, step]`` (float64; ``step`` 0 is the prefill,
    ``k`` the ``k``-th decode step) then the payload, whose size the receiver derives from the header. A
    sender ``isend``s both at once and goes on computing; the receiver, once the payload is there, sleeps
    until ``sent + transfer(src, dst, n)`` for the payload's ``n`` bytes. So a transfer takes the model's time
    from the moment its data exists, never delays the sender's next computation, and several transfers on
    one link do not queue (docs/model.md#bursts; with one request it is the same as sleeping on the
    sender). Messages between two ranks arrive in the order they were sent, so every stage serves the jobs
    in the order the first stage received them, as the model says. The trace's ``send`` span is the
    emulated transfer ``[sent, sent + transfer]``; ``recv`` spans from posting the receive until arrival.
    """

    def __init__(self, ctx: Any, rec: Any, emulate: bool, sharing: str = "none") -> None:
        self.ctx = ctx
        self.rec = rec
        self.emulate = emulate
        self.sharing = sharing  # tdma/fdma (streamed-weights): each hop waits for its channel (runtime/stream.py)
        self.air: Any = None
        if emulate and sharing != "none":
            from coldpipe.runtime.stream import AirClient

            self.air = AirClient(ctx.air_port)
        self.pending: list[tuple[Any, Any]] = []  # (work, buffer): the buffer must live until the send ends

    def delay_s(self, src_dev: str, dst_dev: str, n_bytes: int) -> float:
        from coldpipe.core.simulator import transfer_s

        return transfer_s(self.ctx.scenario, src_dev, dst_dev, n_bytes) if self.emulate else 0.0

    def send(self, x: Any, dst_rank: int, src_dev: str, dst_dev: str, what: str, request: int, step: int) -> None:
        import torch
        import torch.distributed as dist

        payload = x.contiguous().view(-1).view(torch.uint8)  # raw bytes: any dtype, the receiver knows the shape
        n = payload.numel()
        sent = time.time()
        header = torch.tensor([sent, float(request), float(step)], dtype=torch.float64)
        doing(f"sending the {what} to rank {dst_rank}")
        for buf in (header, payload):
            self.pending.append((dist.isend(buf, dst_rank), buf))
        start = sent - self.rec.t0
        self.rec.add(f"send {what}", "send", start, start + self.delay_s(src_dev, dst_dev, n), None, n, request=request)

    def recv(
        self, shape_of: Any, dtype: Any, src_rank: int, src_dev: str, dst_dev: str, what: str
    ) -> tuple[int, int, Any]:
        """The next job's input from ``src_rank``: (request, step, tensor of shape ``shape_of(step)``)."""
        import torch
        import torch.distributed as dist

        start = self.rec.now()
        doing(f"receiving the {what} from rank {src_rank}")
        header = torch.empty(3, dtype=torch.float64)
        dist.recv(header, src_rank)
        sent, request, step = float(header[0]), int(header[1]), int(header[2])
        shape = shape_of(step)
        n = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
        buf = torch.empty(n, dtype=torch.uint8)
        dist.recv(buf, src_rank)
        if self.air is not None:
            from coldpipe.runtime.stream import hops

            wait = self.air.transfer_end(hops(self.ctx.scenario, src_dev, dst_dev, n, self.sharing), sent, 0)
            wait -= time.time()
        else:
            wait = sent + self.delay_s(src_dev, dst_dev, n) - time.time()
        if wait > 0:
            time.sleep(wait)
        name = what.split("/")[min(step, 1)] if "/" in what else what  # "prompt/token": the prompt, then tokens
        self.rec.add(f"recv {name}{span_tag(request, step)}", "recv", start, self.rec.now(), None, n, request=request)
        return request, step, buf.view(dtype).reshape(shape)

    def finish(self) -> None:
        """Wait for every send of this job to complete (before the job's collectives)."""
        doing("finishing the sends")
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()
        if self.air is not None:
            self.air.close()
            self.air = None


def span_tag(request: int, step: int) -> str:
    """`` r2 t5``: request 2 (omitted for the first), token 5 (omitted for the prefill, i.e. token 1)."""
    return (f" r{request}" if request else "") + (f" t{step + 1}" if step else "")
