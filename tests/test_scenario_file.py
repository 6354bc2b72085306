"""Scenario files: the public field names, units, and one-line errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldpipe.core.architectures import CATALOG
from coldpipe.errors import InputError
from coldpipe.scenario_file import load_scenario, scenario_from_dict

GOOD = {
    "source": "ap",
    "network": {"hop_latency": 0.003},
    "workload": {"prompt_tokens": 512, "new_tokens": 1, "prompt_bytes": 2048, "token_bytes": 4},
    "model": {"catalog": "llama-3.1-8b", "dtype": "bfloat16"},
    "devices": [
        {
            "name": "orin-agx",
            "flops": 20e12,
            "load_bandwidth": 2e9,
            "startup": 0.3,
            "memory": 24e9,
            "uplink": 4e8,
            "downlink": 6e8,
        },
        {
            "name": "pi",
            "flops": "50 GFLOPS",
            "load_bandwidth": "400 MB/s",
            "startup": "300 ms",
            "memory": "8 GiB",
            "uplink": "100 Mbit/s",
            "downlink": "150 Mbit/s",
        },
    ],
}


def _with(path: str, value: object) -> dict:
    data = json.loads(json.dumps(GOOD))
    keys = path.replace("]", "").replace("[", ".").split(".")
    node = data
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


def test_the_documented_example_loads(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(GOOD))  # YAML accepts JSON
    sc = load_scenario(f)
    assert sc.n_blocks == CATALOG["llama-3.1-8b"].num_hidden_layers + 2
    pi = sc.device("pi")
    assert (pi.flops, pi.load_bandwidth, pi.startup, pi.memory) == (5e10, 4e8, 0.3, 8 * 2**30)
    assert (pi.uplink, pi.downlink) == (1e8, 1.5e8)
    assert sc.workload.prompt_bytes == 2048


def test_explicit_blocks_and_hf_config(tmp_path: Path) -> None:
    blocks = [
        {"name": f"b{i}", "weight_bytes": "1 GB", "flops": 2e10, "out_bytes": 1e6, "kv_bytes": 0} for i in range(3)
    ]
    sc = scenario_from_dict(_with("model", {"blocks": blocks}))
    assert [b.weight_bytes for b in sc.blocks] == [1e9] * 3
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(CATALOG["qwen2.5-0.5b"].to_hf_config()))
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(_with("model", {"hf_config": "cfg", "dtype": "float32"})))
    sc = load_scenario(f)
    assert sc.n_blocks == 26 and sc.blocks[1].weight_bytes % 4 == 0
    sc = scenario_from_dict(_with("model.dtype", "q4_k_m"))  # a llama.cpp quantisation
    assert sc.blocks[1].weight_bytes == CATALOG["llama-3.1-8b"].params_per_layer * 4.8944 / 8


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("devices[1].uplink", "100 MB", "devices[1].uplink: unit 'MB' is a size in bytes, not a bit rate"),
        ("devices[0].memory", -5, "devices[0].memory: must be > 0, got -5"),
        ("devices[0].flops", KeyError, "devices[0].flops: is required"),
        ("devices[0].colour", "red", "devices[0].colour: is not a known field"),
        ("workload.prompt_tokens", 0, "workload.prompt_tokens: must be >= 1, got 0"),
        ("model.catalog", "llama-9", "model: unknown catalog model 'llama-9'"),
        ("model.dtype", "q4_k", "model.dtype: unknown dtype 'q4_k' (use one of float32, float16, bfloat16, float8"),
        ("source", "phone", "source: 'phone' is neither 'ap' nor a device"),
        ("network.hop_latency", "3 GB", "network.hop_latency: unit 'GB' is a size in bytes, not a duration"),
    ],
)
def test_bad_fields_are_named(path: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        scenario_from_dict(_with(path, value))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: [\n")
    with pytest.raises(InputError, match="not valid YAML/JSON"):
        load_scenario(bad)
    with pytest.raises(InputError, match="expected a mapping"):
        scenario_from_dict([1, 2])


def test_bursts_and_residency_fields() -> None:
    data = _with("workload.requests", 4)
    data["workload"]["completion"] = "mean"
    data["devices"][0]["resident"] = [[0, 9], [20, 21]]
    sc = scenario_from_dict(data)
    assert (sc.workload.requests, sc.workload.completion) == (4, "mean")
    assert sc.device("orin-agx").resident == ((0, 9), (20, 21))
    with pytest.raises(InputError, match=r"^workload\.completion"):
        scenario_from_dict(_with("workload.completion", "median"))
    with pytest.raises(InputError, match="goes past the last block"):
        scenario_from_dict(_with("devices[0].resident", [[0, 99]]))
