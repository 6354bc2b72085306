"""Finding agents by zeroconf/mDNS (DNS-SD ``_coldpipe._tcp.local.``) instead of a list (docs/cluster.md#discovery).

- :class:`Advertiser`: an agent's service (``coldpipe agent --advertise``): its port, its listen address
  (or every non-loopback IPv4 address when it listens on 0.0.0.0), TXT ``name``, ``v`` (the protocol
  version) and ``cluster`` (:func:`cluster_id`); unregistered by :meth:`Advertiser.close`.
- :func:`discover`: browse for ``timeout_s``, keep the services whose ``cluster`` is this token's and whose
  ``v`` is this version: one (name, HOST:PORT) per agent name.

Discovery is a hint, never trust: anyone on the network can advertise anything (the cluster id is not
secret: it is broadcast). The coordinator reaches each discovered agent over CurveZMQ, which checks that
the peer holds that agent name's key (derived from the token), as for a listed agent.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import socket
import threading
import time
from typing import Any

from coldpipe.cluster.transport import Keys
from coldpipe.errors import InputError

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advertiser",
    "Found",
    "browse",
    "cluster_id",
    "discover",
    "require_zeroconf",
]

log = logging.getLogger("coldpipe.cluster")

SERVICE_TYPE = "_coldpipe._tcp.local."
PROTOCOL_VERSION = "1"  # TXT v: the agents' message protocol; another version is ignored (and counted)
DEFAULT_TIMEOUT_S = 2.0


def cluster_id(keys: Keys) -> str:
    """16 hex digits naming this token's cluster: an HMAC-SHA256 under a key derived from the token.

    One-way: it tells agents of different tokens apart without revealing the token (nor any CURVE key,
    which come from other HKDF infos); it is public once advertised, so it grants nothing.
    """
    key = keys.secret("coldpipe discovery")
    return hmac.new(key, b"coldpipe cluster id", "sha256").hexdigest()[:16]


def require_zeroconf() -> Any:
    """The zeroconf module, or an InputError saying it is not installed."""
    try:
        import zeroconf
    except ImportError:
        raise InputError(
            "--advertise/--discover", "the zeroconf package is not installed", "pip install zeroconf==0.154.0"
        ) from None
    return zeroconf


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40] or "host"


def _local_ipv4(include_loopback: bool) -> list[str]:
    import ifaddr

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and (include_loopback or not ipaddress.ip_address(ip.ip).is_loopback):
                out.append(ip.ip)
    return sorted(set(out), key=out.index)


class Advertiser:
    """An agent's DNS-SD service, registered in a background thread (mDNS probing takes ~1.7 s).

    ``host`` is the listen address: a specific address is advertised (and multicast) on that interface
    only; ``0.0.0.0`` advertises every non-loopback IPv4 address, on every interface.
    """

    def __init__(self, keys: Keys, name: str, host: str, port: int) -> None:
        self.name, self.port = name, port
        if host in ("0.0.0.0", ""):
            self.addresses = _local_ipv4(include_loopback=False) or ["127.0.0.1"]
            self.interfaces: Any = None  # all
        else:
            try:
                addr = socket.gethostbyname(host)
            except OSError as exc:
                raise InputError("--listen", f"cannot resolve {host!r} to advertise it: {exc}") from None
            self.addresses, self.interfaces = [addr], [addr]
        zc_mod = require_zeroconf()
        # the instance name is unique per (name, host, port), so two agents of one name are both seen
        # (and refused by the coordinator) instead of merging into one mDNS record
        host_label = _label(socket.gethostname())[:20]
        node = _label(f"{name}-{host_label}-{port}")
        self.info = zc_mod.ServiceInfo(
            SERVICE_TYPE,
            f"{_label(name)[:24]} on {host_label} port {port}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=port,
            properties={"name": name, "v": PROTOCOL_VERSION, "cluster": cluster_id(keys)},
            server=f"coldpipe-{node}.local.",
        )
        kw: dict[str, Any] = {"ip_version": zc_mod.IPVersion.V4Only}
        if self.interfaces is not None:
            kw["interfaces"] = self.interfaces
        try:
            self.zc = zc_mod.Zeroconf(**kw)
        except OSError as exc:  # no multicast-capable interface, a port 5353 that refuses us, ...
            raise InputError("--advertise", f"cannot start mDNS on {self.addresses}: {exc}") from None
        self.registered = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._register, name="coldpipe-advertise", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        try:
            self.zc.register_service(self.info, allow_name_change=True)
        except Exception as exc:  # the agent serves without advertising; says why on one line
            log.warning("agent %s: could not advertise over mDNS: %s", self.name, exc)
            return
        with self._lock:
            if self._closed:
                return
            self.registered.set()
        log.info(
            "agent %s: advertised as %r on %s port %d", self.name, self.info.name, ",".join(self.addresses), self.port
        )

    def close(self) -> None:
        """Unregister (a goodbye packet: browsers drop it at once) and close; idempotent."""
        self._thread.join(5.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            registered = self.registered.is_set()
        if registered:
            try:
                self.zc.unregister_service(self.info)
            except Exception as exc:  # closing anyway
                log.warning("agent %s: could not unregister its mDNS service: %s", self.name, exc)
        self.zc.close()

    def __enter__(self) -> Advertiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Found:
    """What a browse saw: the services of this cluster (name -> addresses), and how many it ignored."""

    def __init__(self) -> None:
        self.agents: dict[str, list[str]] = {}  # agent name -> ["HOST:PORT", ...] (one per service)
        self.other_cluster = 0
        self.other_version = 0
        self.unreadable = 0


def _pick(addresses: list[str], own: list[str]) -> str:
    """The address of a service to connect to: one on a subnet of this host's, else the first."""
    import ifaddr

    nets = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip in own:
                nets.append(ipaddress.ip_network(f"{ip.ip}/{ip.network_prefix}", strict=False))
    for a in addresses:
        if any(ipaddress.ip_address(a) in n for n in nets):
            return a
    return addresses[0]


def browse(keys: Keys, timeout_s: float, interfaces: list[str] | None = None) -> Found:
    """Browse ``_coldpipe._tcp.local.`` for ``timeout_s`` (on ``interfaces``' IPv4 addresses, or all)."""
    zc_mod = require_zeroconf()
    kw: dict[str, Any] = {"ip_version": zc_mod.IPVersion.V4Only}
    if interfaces is not None:
        kw["interfaces"] = interfaces
    try:
        zc = zc_mod.Zeroconf(**kw)
    except OSError as exc:
        raise InputError("discover", f"cannot start mDNS browsing: {exc}") from None
    names: set[str] = set()
    lock = threading.Lock()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        with lock:
            if state_change is zc_mod.ServiceStateChange.Removed:
                names.discard(name)
            else:
                names.add(name)

    found = Found()
    want = cluster_id(keys)
    try:
        browser = zc_mod.ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        time.sleep(timeout_s)
        browser.cancel()
        own = list(interfaces) if interfaces is not None else _local_ipv4(include_loopback=True)
        with lock:
            seen = sorted(names)
        for service in seen:
            info = zc_mod.ServiceInfo(SERVICE_TYPE, service)
            if not info.request(zc, 500):
                found.unreadable += 1
                continue
            props = {
                k.decode(errors="replace"): (v or b"").decode(errors="replace") for k, v in info.properties.items()
            }
            addrs = info.parsed_addresses(zc_mod.IPVersion.V4Only)
            if props.get("cluster") != want:
                found.other_cluster += 1
            elif props.get("v") != PROTOCOL_VERSION:
                found.other_version += 1
            elif not props.get("name") or not addrs or not info.port:
                found.unreadable += 1
            else:
                found.agents.setdefault(props["name"], []).append(f"{_pick(addrs, own)}:{info.port}")
    finally:
        zc.close()
    return found


def discover(
    keys: Keys, timeout_s: float = DEFAULT_TIMEOUT_S, interfaces: list[str] | None = None
) -> list[tuple[str, str]]:
    """The agents of this token's cluster advertised on the network: (name, HOST:PORT), sorted by name.

    Two services of one agent name: an error naming both addresses. None: an error saying how long it
    looked and what to check. Nothing here is authenticated: the coordinator's CurveZMQ channel is.
    """
    if not timeout_s > 0:
        raise InputError("discover_timeout_s", f"must be > 0 seconds, got {timeout_s!r}")
    found = browse(keys, timeout_s, interfaces)
    for name, addrs in found.agents.items():
        if len(addrs) > 1:
            raise InputError(
                "discover",
                f"two agents advertise the name {name!r}: at {addrs[0]} and at {addrs[1]}",
                "give each agent its own --name",
            )
    if not found.agents:
        ignored = []
        if found.other_cluster:
            ignored.append(f"{found.other_cluster} of another cluster (another token)")
        if found.other_version:
            ignored.append(f"{found.other_version} of another protocol version")
        if found.unreadable:
            ignored.append(f"{found.unreadable} unreadable")
        seen = f"; ignored {', '.join(ignored)}" if ignored else ""
        raise InputError(
            "discover",
            f"no agent of this cluster answered within {timeout_s:g} s of mDNS browsing{seen}",
            "check the agents run with --advertise and this --token-file, that multicast UDP 5353 passes "
            "between here and them, or raise discover_timeout_s / --discover-timeout",
        )
    return [(name, addrs[0]) for name, addrs in sorted(found.agents.items())]
