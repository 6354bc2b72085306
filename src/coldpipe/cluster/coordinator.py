"""The coordinator (the source, at the access point): reaches the agents of a cluster file, measures them, runs.

- :func:`load_cluster`: ``agents: [{name, address}]`` (YAML or JSON), and/or ``discover: true`` (mDNS).
- :meth:`Coordinator.status`: each agent's state, round trip and clock offset.
- :meth:`Coordinator.measure`: each agent's profile (measured by the agent) and its uplink/downlink to
  here (the link profiler, token-checked), then :func:`scenario_from_measurements` builds the Scenario
  from these figures only.
- :meth:`Coordinator.run`: one request through a plan; TTFT on this clock; spans mapped from each agent's.
  Heartbeats (``clock`` every :data:`HEARTBEAT_S`) notice a silent agent within :data:`DEAD_S`
  (:class:`AgentLost`).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from coldpipe.cluster.clocks import estimate_offset
from coldpipe.cluster.transport import Channel, Keys, TransportTimeout, decode
from coldpipe.core.types import AP, Device, Network, Plan, Scenario, Workload
from coldpipe.errors import ColdpipeError, InputError

__all__ = ["AgentLost", "AgentRef", "Coordinator", "load_cluster", "ranges_of", "scenario_from_measurements"]

log = logging.getLogger("coldpipe.cluster")

HEARTBEAT_S = 0.25
DEAD_S = 1.5  # no heartbeat answer for this long: the agent is lost
ANNOUNCE_S = 0.3  # t0 is announced this far ahead, so every agent is waiting at t0
PROGRESS_S = 1.0  # decoding progress lines at most this often


class AgentLost(ColdpipeError):
    """An agent stopped answering during a run (``name``; ``at_s`` since the request)."""

    def __init__(self, name: str, at_s: float, why: str) -> None:
        self.name, self.at_s = name, at_s
        super().__init__(f"agent {name} lost {at_s:.2f} s after the request: {why}")


@dataclass(frozen=True)
class AgentRef:
    name: str
    address: str  # HOST:PORT
    # HOST:PORT of a store-and-forward relay that the other agents send this agent's inputs through (the
    # testbed's access point, coldpipe.testbed.relay); None: they connect to it directly
    relay: str | None = None
    discovered: bool = False  # found by mDNS (not authenticated until its channel answers)


def load_cluster(
    path: str | Path | None,
    keys: Keys | None = None,
    *,
    discover: bool = False,
    discover_timeout_s: float | None = None,
) -> list[AgentRef]:
    """The agents of a cluster file: ``agents: [{name: jetson, address: 192.168.1.20:7070}, ...]``.

    An agent may name a ``relay: HOST:PORT`` (``testbed up`` writes it): its inputs from other agents go
    through that store-and-forward relay (the testbed's access point) instead of straight to it.

    ``discover: true`` (optionally ``discover_timeout_s``, default 2 s) in the file, or ``discover=True``
    here (``path`` may then be None), adds the agents of ``keys``' cluster found by mDNS
    (:func:`coldpipe.cluster.discovery.discover`); ``agents:`` may then be left out. A listed agent
    also found keeps its listed entry; found at another address, it is an error naming both.
    """
    from coldpipe.cluster.discovery import DEFAULT_TIMEOUT_S

    listed: list[AgentRef] = []
    timeout_s = DEFAULT_TIMEOUT_S if discover_timeout_s is None else discover_timeout_s
    if path is not None:
        listed, file_discover, file_timeout_s = _read_cluster_file(path, discover)
        discover = discover or file_discover
        if discover_timeout_s is None and file_timeout_s is not None:
            timeout_s = file_timeout_s
    if not discover:
        return listed
    if keys is None:
        raise InputError("discover", "discovery needs the join token (its cluster id)", "pass --token-file")
    from coldpipe.cluster.discovery import discover as mdns_discover

    out = {a.name: a for a in listed}
    for name, address in mdns_discover(keys, timeout_s):
        a = AgentRef(name, address, discovered=True)
        have = out.get(a.name)
        if have is None:
            out[a.name] = a
        elif have.address != a.address:
            raise InputError(
                "discover",
                f"agent {a.name!r} is listed at {have.address} and advertised at {a.address}",
                "fix the cluster file's address or the agent's --name",
            )
    if AP in out:
        raise InputError("agents[].name", f"an agent may not be named {AP!r}")
    return list(out.values())


def _read_cluster_file(path: str | Path, discover: bool) -> tuple[list[AgentRef], bool, float | None]:
    """(listed agents, the file's ``discover``, its ``discover_timeout_s`` or None)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(
            "CLUSTER", f"cannot read {str(path)!r}: {exc}", "a YAML/JSON file with agents: [...]"
        ) from None
    if not isinstance(data, dict):
        data = {}
    file_discover = data.get("discover", False)
    if not isinstance(file_discover, bool):
        raise InputError("discover", f"got {file_discover!r}", "write discover: true or discover: false")
    timeout_s = data.get("discover_timeout_s")
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0
    ):
        raise InputError("discover_timeout_s", f"got {timeout_s!r}", "seconds > 0, e.g. discover_timeout_s: 2")
    agents = data.get("agents")
    if (discover or file_discover) and agents in (None, []):
        return [], file_discover, timeout_s
    if not isinstance(agents, list) or not agents:
        raise InputError(
            "agents",
            f"{str(path)!r} lists no agents",
            "write agents: [{name: NAME, address: HOST:PORT}], or discover: true",
        )
    out = []
    for i, a in enumerate(agents):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("address"), str):
            raise InputError(f"agents[{i}]", f"got {a!r}", "each agent is {name: NAME, address: HOST:PORT}")
        for key in ("address", "relay"):
            if key == "relay" and a.get(key) is None:
                continue
            host, _, port = str(a[key]).rpartition(":")
            if not isinstance(a[key], str) or not host or not port.isdigit():
                raise InputError(f"agents[{i}].{key}", f"cannot read {a[key]!r} as HOST:PORT")
        out.append(AgentRef(a["name"], a["address"], a.get("relay")))
    names = [a.name for a in out]
    if len(set(names)) != len(names) or AP in names:
        raise InputError("agents[].name", f"names must be unique and not {AP!r}: {names}")
    return out, file_discover, None if timeout_s is None else float(timeout_s)


def scenario_from_measurements(
    blocks: tuple[Any, ...],
    measured: dict[str, dict[str, Any]],
    workload: Workload,
    model_name: str,
) -> Scenario:
    """The Scenario of what was measured: one Device per agent, hop latency = median RTT / 2 (one AP hop)."""
    devices = []
    rtts = []
    for name, m in measured.items():
        p, link = m["profile"], m["link"]
        rtts.append(link["rtt"])
        resident = ranges_of(m.get("resident", []))
        devices.append(
            Device(
                name=name,
                flops=float(p["flops"]),
                load_bandwidth=float(p["load_bandwidth"]),
                startup=float(p["startup"]),  # t0 is announced ahead: only the loader's wake-up lateness
                memory=float(p["memory"]),
                # the link profiler's "uplink" is the coordinator sending, i.e. the device's downlink
                uplink=float(link["downlink"]),
                downlink=float(link["uplink"]),
                mem_bandwidth=float(p["mem_bandwidth"]),
                resident=resident,
            )
        )
    hop_s = statistics.median(rtts) / 2 if rtts else 0.0
    return Scenario(tuple(blocks), tuple(devices), workload, Network(hop_latency=hop_s), AP, model_name)


def ranges_of(blocks: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for b in sorted(blocks):
        if out and b == out[-1][1] + 1:
            out[-1][1] = b
        else:
            out.append([b, b])
    return tuple((a, b) for a, b in out)


class Coordinator:
    """Channels to every agent of a cluster; one request at a time."""

    def __init__(self, keys: Keys, agents: list[AgentRef]) -> None:
        self.keys = keys
        self.agents = {a.name: a for a in agents}
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ch = {a.name: Channel(keys, a.name, a.address, self.ctx) for a in agents}
        self.offsets: dict[str, float] = {}
        self._n = 0

    def close(self) -> None:
        for c in self.ch.values():
            c.close()
        self.ctx.term()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_discovered(self, timeout_s: float = 2.0) -> None:
        """Every agent found by mDNS answers over its CurveZMQ channel, or an error naming the first that
        does not (advertised by a host without this agent's key, or unreachable) -- before a long step."""
        for name, ref in self.agents.items():
            if not ref.discovered:
                continue
            try:
                self.ch[name].request("status", timeout_s)
            except TransportTimeout:
                raise InputError(
                    "discover",
                    f"agent {name!r} advertised at {ref.address} did not answer over the authenticated channel "
                    f"within {timeout_s:g} s (not this cluster's agent {name!r}, or unreachable)",
                    "check `cluster status --discover`; list the agents in the cluster file to bypass discovery",
                ) from None

    def status(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        out = []
        for name, ch in self.ch.items():
            row: dict[str, Any] = {"name": name, "address": self.agents[name].address}
            try:
                st, _ = ch.request("status", timeout_s)
                off, rtt = estimate_offset(lambda ch=ch: float(ch.request("clock", timeout_s)[0]["t"]))
                self.offsets[name] = off
                row.update(
                    reachable=True,
                    resident=st["resident"],
                    busy=bool(st["jobs"]),
                    fingerprint=st["fingerprint"],
                    rtt_s=rtt,
                    clock_offset_s=off,
                )
            except (TransportTimeout, ColdpipeError) as exc:
                row.update(reachable=False, error=str(exc))
            out.append(row)
        return out

    def measure(
        self, fingerprint: str, prompt_tokens: int, *, link_bytes: int = 4 * 2**20, progress: Any = None
    ) -> dict[str, dict[str, Any]]:
        """Each agent's profile, residency and its links to here; checks each checkpoint fingerprint."""
        from coldpipe.profiler.link import measure_link

        out = {}
        for name, ch in self.ch.items():
            if progress:
                progress(f"profiling {name}")
            prof, _ = ch.request("profile", 120.0, prompt_tokens=prompt_tokens)
            if prof["fingerprint"] != fingerprint:
                raise InputError(
                    "--checkpoint",
                    f"agent {name} holds a different checkpoint (fingerprint {prof['fingerprint'][:12]} vs "
                    f"{fingerprint[:12]} here)",
                    "give every agent the same checkpoint files as the coordinator's",
                )
            st, _ = ch.request("status", 5.0)
            port = int(ch.request("link", 5.0)[0]["port"])
            host = self.agents[name].address.rpartition(":")[0]
            if progress:
                progress(f"measuring the link to {name}")
            lk = measure_link(host, port, size_bytes=link_bytes, probes=10, token=self.keys.token)
            off, _rtt = estimate_offset(lambda ch=ch: float(ch.request("clock", 5.0)[0]["t"]))
            self.offsets[name] = off
            out[name] = {
                "profile": prof["profile"],
                "resident": st["resident"],
                "link": {k: lk[k].value for k in ("rtt", "uplink", "downlink")},
                "clock_offset_s": off,
            }
        return out

    def measured_scenario(
        self,
        checkpoint: str,
        fingerprint: str,
        dtype: str,
        workload: Workload,
        *,
        link_bytes: int = 4 * 2**20,
        progress: Any = None,
    ) -> tuple[Scenario, dict[str, dict[str, Any]]]:
        """The scenario built from this cluster's measurements only (:meth:`measure`), with the checkpoint's
        blocks for ``workload``; and the measurements themselves."""
        from coldpipe.profiler.checkpoint import profile_checkpoint

        cp = profile_checkpoint(
            checkpoint, prompt_tokens=workload.prompt_tokens, new_tokens=workload.new_tokens, dtype=dtype
        )
        measured = self.measure(fingerprint, workload.prompt_tokens, link_bytes=link_bytes, progress=progress)
        return scenario_from_measurements(cp.blocks, measured, workload, cp.name), measured

    # -- a run ------------------------------------------------------------------------------------------
    def _send(self, name: str, op: str, **fields: Any) -> int:
        self._n += 1
        self.ch[name].send({"op": op, "id": self._n, **fields})
        return self._n

    def abort(self, job: str, names: list[str], wait_s: float = 1.0, wait_for: list[str] | None = None) -> set[str]:
        """Tell every agent of ``job`` to stop it; wait up to ``wait_s`` for the answers of ``wait_for`` (default
        all: the channels have no linger, so an abort still queued when they close would be lost). Returns
        the agents that confirmed."""
        pending: dict[str, int] = {}
        for n in names:
            with contextlib.suppress(zmq.ZMQError):
                rid = self._send(n, "abort", job=job)
                if wait_for is None or n in wait_for:
                    pending[n] = rid
        confirmed: set[str] = set()
        deadline = time.time() + wait_s
        while pending and time.time() < deadline:
            for n, rid in list(pending.items()):
                sock = self.ch[n].sock
                with contextlib.suppress(zmq.ZMQError, ValueError):
                    while sock.poll(0):
                        h, _ = decode(sock.recv_multipart())
                        if h.get("re") == rid:
                            confirmed.add(n)
                            pending.pop(n)
                            break
            time.sleep(0.01)
        return confirmed

    def _rendezvous(
        self,
        job: str,
        plan: Plan,
        overlap: str,
        prompt: tuple[int, ...],
        fingerprint: str,
        new_tokens: int,
        cold: bool,
        say: Any,
    ) -> float:
        """``prepare`` every stage (in order), then ``start`` every agent at ``t0`` (on its clock); ``t0``."""
        stages = plan.stages
        names = [st.device for st in stages]
        for j, st in enumerate(stages):
            say(f"preparing stage {j} on {st.device} (blocks {st.first}-{st.last})")
            nxt: dict[str, Any] | None = None
            if j + 1 < len(stages):
                ref = self.agents[names[j + 1]]
                nxt = {"name": ref.name, "address": ref.address}
                if ref.relay:
                    nxt["relay"] = ref.relay
            self.ch[st.device].request(
                "prepare",
                30.0,
                job=job,
                first=st.first,
                last=st.last,
                overlap=overlap,
                prompt_tokens=len(prompt),
                new_tokens=new_tokens,
                next=nxt,
                fingerprint=fingerprint,
                cold=cold,
            )
        t0 = time.time() + ANNOUNCE_S
        for n in names:
            self.ch[n].request("start", 5.0, job=job, t0=t0 + self.offsets[n])
        say(f"every agent prepared; the request starts in {max(0.0, t0 - time.time()):.2f} s (t0)")
        return t0

    def run(
        self,
        scenario: Scenario,
        plan: Plan,
        overlap: str,
        prompt: tuple[int, ...],
        fingerprint: str,
        *,
        new_tokens: int = 1,
        cold: bool = True,
        timeout_s: float = 60.0,
        on_event: Any = None,
    ) -> dict[str, Any]:
        """One request; a result dict as the local runtime's (``runtime.report.build_report`` reads it)."""
        import numpy as np

        stages = plan.stages
        names = [st.device for st in stages]
        for n in names:
            if n not in self.offsets:
                self.offsets[n], _ = estimate_offset(lambda n=n: float(self.ch[n].request("clock", 5.0)[0]["t"]))
        job = f"j{int(time.time() * 1000) % 10**9}"
        say = on_event or (lambda _msg: None)
        try:  # Ctrl-C or a refusal while preparing: the agents prepared so far drop the job too
            t0 = self._rendezvous(job, plan, overlap, prompt, fingerprint, new_tokens, cold, say)
        except BaseException:
            self.abort(job, names)
            raise
        prompt_arr = np.asarray([prompt], dtype=np.int32)  # (1, s)

        def send_input(step: int, arr: Any) -> None:
            self.ch[names[0]].send(
                {
                    "op": "act",
                    "job": job,
                    "step": step,
                    "sent": time.time(),
                    "dtype": "int32",
                    "shape": list(arr.shape),
                },
                arr.tobytes(),
            )

        loaded: set[str] = set()
        if overlap != "none":
            time.sleep(max(0.0, t0 - time.time()))
            send_input(0, prompt_arr)
        tokens: list[int] = []
        first_s = last_s = 0.0
        next_say = 0.0  # decoding progress: at most one line per PROGRESS_S, and the last token
        reports: dict[str, list[dict[str, Any]]] = {}
        last_seen = {n: time.time() for n in names}
        next_beat = time.time()
        poller = zmq.Poller()
        sock_of = {self.ch[n].sock: n for n in names}
        for s in sock_of:
            poller.register(s, zmq.POLLIN)
        deadline = time.time() + timeout_s
        try:
            while len(tokens) < new_tokens or len(reports) < len(names):
                now = time.time()
                if now > deadline:
                    raise ColdpipeError(f"the run did not finish within {timeout_s:g} s")
                if now >= next_beat:
                    for n in names:
                        if n not in reports:
                            self._send(n, "clock")
                    next_beat = now + HEARTBEAT_S
                for n in names:
                    if n not in reports and now - last_seen[n] > DEAD_S:
                        raise AgentLost(n, now - t0, f"no heartbeat answer for {now - last_seen[n]:.1f} s")
                for sock, _ in poller.poll(50):
                    n = sock_of[sock]
                    while sock.poll(0):
                        h, payload = decode(sock.recv_multipart())
                        last_seen[n] = time.time()
                        op = h.get("op")
                        if op == "token":
                            tok = int(np.frombuffer(payload[0], dtype=np.int32)[0])
                            tokens.append(tok)
                            last_s = time.time() - t0
                            if len(tokens) == 1:
                                first_s = last_s
                                say(f"first token after {first_s:.3f} s")
                            elif last_s >= next_say or len(tokens) == new_tokens:
                                say(f"token {len(tokens)}/{new_tokens} after {last_s:.3f} s")
                                next_say = last_s + PROGRESS_S
                            if len(tokens) < new_tokens:
                                send_input(len(tokens), np.asarray([[tok]], dtype=np.int32))
                        elif op == "loaded":
                            loaded.add(n)
                            if len(loaded) == len(names):
                                send_input(0, prompt_arr)
                        elif op == "resident":
                            at = float(h["t"]) - self.offsets[n] - t0
                            say(f"{n}: its blocks are resident {at:.3f} s after the request")
                        elif op == "report":
                            reports[n] = h["spans"]
                        elif op == "failed":
                            raise ColdpipeError(f"agent {n} failed the stage: {h['error']}")
                        elif h.get("error"):
                            raise ColdpipeError(f"agent {n}: {h['error']}")
        except AgentLost as exc:  # told too (a stopped agent reads it when it resumes), but not waited for
            self.abort(job, names, wait_for=[n for n in names if n != exc.name])
            raise
        except BaseException:
            self.abort(job, names)
            raise
        out_stages = []
        for j, st in enumerate(stages):
            off = self.offsets[st.device]
            spans = [
                {**s, "start": s["start"] - off - t0, "end": s["end"] - off - t0, "request": 0}
                for s in reports[st.device]
            ]
            out_stages.append({"stage": j, "device": st.device, "spans": spans})
        return {
            "token_ids": tokens,
            "measured_ttft": first_s,
            "measured_e2e": last_s,
            "completions": [first_s],
            "stages": out_stages,
            "clock_offsets_s": {n: self.offsets[n] for n in names},
        }
