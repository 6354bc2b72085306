"""streamed-weights in the local runtime (docs/model.md#streamed-weights): rank 0, the source, stands for the
access point that holds the model file and serves blocks' tensors over a loopback socket; the loader of a
streaming rank fetches its blocks from it instead of reading its storage, one block after another, each
taking the model's transfer time ``8n/downlink + hop`` from the moment the previous one arrived (it sleeps
until then, as :class:`~coldpipe.runtime.links.Links` does for activations; it can only be slower).

Supported: ``network.sharing: none``, ``weights: ap``, a streaming device holding one stage, no head shard,
and not sparse-embedding's block 0 (:func:`unsupported` says why a plan is refused). ``tdma``/``fdma``
(transfers waiting for each other across ranks) and peer sources are not emulated.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any

__all__ = ["BlockServer", "StreamClient", "unsupported"]


def unsupported(scenario: Any, plan: Any) -> str | None:
    """Why the local runtime cannot run ``plan``'s streams (None: it can, or nothing streams)."""
    from coldpipe.core.streamed import streams

    if not streams(scenario, plan):
        return None
    if scenario.network.sharing != "none":
        return f"network.sharing {scenario.network.sharing!r} (transfers waiting for each other) is not emulated"
    for st in plan.stages:
        dev = scenario.device(st.device)
        if dev.weights == "local":
            continue
        if dev.weights != "ap":
            return f"device {st.device!r} streams from a peer ({dev.weights!r}), which is not emulated"
        if [s.device for s in plan.stages].count(st.device) > 1:
            return f"device {st.device!r} streams and holds several stages (reuse), which is not emulated"
        if st.first == 0 and "sparse-embedding" in scenario.mechanisms:
            return f"device {st.device!r} streams sparse-embedding's rows, which is not emulated"
    if any(scenario.device(sh.device).weights != "local" for sh in plan.head_shards):
        return "a streaming device holds a head shard, which is not emulated"
    return None


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = sock.recv_into(view[done:])
        if n == 0:
            raise ConnectionError("the block server closed the connection")
        done += n


class BlockServer:
    """Rank 0: serves ``ckpt()``'s block ``b`` (its tensors' bytes in (file, offset) order) to each request."""

    def __init__(self, ckpt: Any) -> None:
        self.ckpt = ckpt  # a callable: the checkpoint the current job indexes (sublayer: the split blocks)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: dict[str, int] = {}
        try:
            with conn:
                while True:
                    head = bytearray(4)
                    try:
                        _recv_exact(conn, memoryview(head))
                    except ConnectionError:
                        return
                    (b,) = struct.unpack("<i", head)
                    ckpt = self.ckpt()
                    for e in sorted((ckpt.tensors[n] for n in ckpt.blocks[b]), key=lambda e: (e.file, e.offset)):
                        if e.file not in fds:
                            fds[e.file] = os.open(e.file, os.O_RDONLY)
                        conn.sendall(os.pread(fds[e.file], e.nbytes, e.offset))
        finally:
            for fd in fds.values():
                os.close(fd)

    def close(self) -> None:
        self.sock.close()


class StreamClient:
    """A streaming rank's loader: one connection to the block server; :meth:`fetch` returns a block's tensors."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))

    def fetch(self, ckpt: Any, b: int) -> tuple[dict[str, Any], int]:
        """Block ``b``'s tensors (fresh memory, as :func:`~coldpipe.runtime.checkpoint.read_tensor` gives) and bytes."""
        import torch

        from coldpipe.runtime.checkpoint import torch_dtype

        self.sock.sendall(struct.pack("<i", b))
        tensors, n = {}, 0
        for e in sorted((ckpt.tensors[name] for name in ckpt.blocks[b]), key=lambda e: (e.file, e.offset)):
            buf = torch.empty(e.nbytes, dtype=torch.uint8)
            _recv_exact(self.sock, memoryview(buf.numpy()))
            tensors[e.name] = buf.view(torch_dtype(e.dtype_name, "--checkpoint")).reshape(e.shape)
            n += e.nbytes
        return tensors, n

    def close(self) -> None:
        self.sock.close()
