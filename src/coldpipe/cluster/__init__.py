"""coldpipe on real devices (docs/cluster.md): one agent per device, a coordinator at the access point.

- :mod:`.transport`: CurveZMQ sockets, keys derived from the join token (:mod:`.token`);
- :mod:`.agent`: ``coldpipe agent`` (measures itself with :mod:`.measure`, runs its stage, keeps it resident);
- :mod:`.coordinator`: status, measurements -> Scenario, one request; :mod:`.clocks`: clock offsets;
- :mod:`.run`: a request with recovery when an agent is lost.
"""
