"""A kernel-enforced testbed on one Linux host: one network namespace + cgroups + agent per scenario device.

``up`` (needs root, cgroup v1 ``cpu``, ``blkio``, ``memory`` hierarchies, ``ip`` and ``tc``):

- namespace ``coldpipe-NAME-ap`` (the access point) holds a bridge ``10.77.K.1/24``; each device's
  namespace ``coldpipe-NAME-dI`` has ``10.77.K.(10+I)`` on a veth pair into the bridge. ``tc tbf`` shapes
  the device-side veth's egress at the device's ``uplink`` and the AP-side veth's egress at its
  ``downlink``. The host reaches the AP through one more veth pair (``10.78.K.0/30``, not shaped): the
  coordinator is the source at the AP. (No netem in this kernel: ``network.hop_latency`` is not added.)
- cgroups ``coldpipe-NAME-dI``: ``cpu.cfs_quota_us`` = the device's FLOP/s as a share of one host core
  (a decoder layer of the checkpoint timed on this host, :func:`coldpipe.cluster.measure.layer_flops`);
  refused when the shares exceed the host's cores. ``blkio.throttle.read_bps_device`` = ``load_bandwidth``
  on the block device holding the checkpoint; ``memory.limit_in_bytes`` = ``memory`` + the agent
  process's own footprint (:data:`PROCESS_BYTES`).
- the AP namespace runs a store-and-forward relay (:mod:`coldpipe.testbed.relay`, ``10.77.K.1:7071``)
  and the cluster file routes every device-to-device message through it (``relay:`` per agent): the AP
  receives each message whole, then forwards it, so a transfer takes ``8n/up + 8n/down`` as on the
  model's shared channel, both rates set by tc (``up(relay=False)``: straight through the bridge).
- each device gets its own copy of the checkpoint (its own page cache pages) and an agent, started in
  its namespace and cgroups, which measures itself like any real device.

``down`` removes everything whose name carries the testbed's prefix (processes in its cgroups,
namespaces, the host veth, cgroups, files), with or without the state file: after a crash too.
"""

from coldpipe.testbed.bed import PROCESS_BYTES, down, up

__all__ = ["PROCESS_BYTES", "down", "up"]
