"""``testbed up`` refuses, with the numbers, devices this host cannot emulate (no root needed: checked first)."""

from __future__ import annotations

import pytest

from coldpipe.core.types import Block, Device, Scenario, Workload
from coldpipe.errors import InputError
from coldpipe.testbed.bed import cpu_shares


def _sc(*flops: float) -> Scenario:
    devs = [Device(f"d{i}", f, 1e8, 0.0, 1e9, 1e7, 1e7) for i, f in enumerate(flops)]
    return Scenario([Block("b", 1.0, 1.0, 1.0)], devs, Workload(4))


def test_shares_are_flops_over_a_host_core() -> None:
    assert cpu_shares(_sc(5e9, 2.5e9), 10e9) == [0.5, 0.25]


def test_a_device_faster_than_a_core_is_refused() -> None:
    with pytest.raises(InputError, match=r"1.50 x this host's 10.00 GFLOP/s per core"):
        cpu_shares(_sc(15e9), 10e9)


def test_shares_beyond_the_host_are_refused() -> None:
    with pytest.raises(InputError, match=r"need 2.70 cores"):
        cpu_shares(_sc(*[9e9] * 3), 10e9)


def test_a_device_below_the_smallest_quota_is_refused() -> None:
    with pytest.raises(InputError, match=r"smallest cpu quota"):
        cpu_shares(_sc(0.5e9), 10e9)
