from __future__ import annotations

import json

import pytest

from coldpipe.cli._common import scenario_arg
from coldpipe.core.types import Block, Device, Plan, Scenario, Stage, Workload
from coldpipe.errors import InputError


def test_plan_round_trips_through_json_and_text() -> None:
    plan = Plan((Stage("orin", 0, 9), Stage("pi 5", 10, 33)))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert Plan.parse(str(plan)) == plan


def test_plan_from_bad_dict_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"plan\.stages"):
        Plan.from_dict({"stages": [{"device": "x"}]})


def test_scenario_round_trips_through_json() -> None:
    sc = scenario_arg("demo")
    again = Scenario.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert again == sc


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flops": 0.0}, "flops: must be > 0"),
        ({"memory": -1.0}, "memory: must be > 0"),
        ({"startup": float("nan")}, "startup: must be finite"),
        ({"uplink": "fast"}, "uplink: must be a number"),
    ],
)
def test_device_fields_are_checked(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "flops": 1.0,
        "load_bandwidth": 1.0,
        "startup": 0.0,
        "memory": 1.0,
        "uplink": 1.0,
        "downlink": 1.0,
    }
    base.update(kwargs)
    with pytest.raises(InputError, match=match):
        Device("x", **base)  # type: ignore[arg-type]


def test_scenario_rejects_duplicate_names_and_unknown_source() -> None:
    d = Device("x", 1.0, 1.0, 0.0, 1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="duplicate device names"):
        Scenario([Block("b", 1.0, 1.0, 1.0)], [d, d], Workload(1))
    with pytest.raises(InputError, match="source"):
        Scenario([Block("b", 1.0, 1.0, 1.0)], [d], Workload(1), source="phone")


def test_workload_defaults_prompt_bytes_to_four_per_token() -> None:
    assert Workload(512).prompt_bytes == 2048.0
