"""The device catalog (data/devices.yaml) and catalog devices in scenario files."""

from __future__ import annotations

import pytest

from coldpipe.errors import InputError
from coldpipe.profiler.catalog import FIGURES, catalog_device_fields, load_catalog, parse_catalog
from coldpipe.scenario_file import scenario_from_dict

REQUIRED = (
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-orin-agx",
    "raspberry-pi-5-sd",
    "raspberry-pi-5-nvme",
    "snapdragon-8-gen-3-phone",
    "apple-a17-pro-phone",
    "macbook-air-m2",
    "intel-n100-mini-pc",
)


def _scenario(*devices: dict) -> dict:
    return {"workload": {"prompt_tokens": 128}, "model": {"catalog": "llama-3.2-1b"}, "devices": list(devices)}


def test_catalog_has_the_required_devices() -> None:
    cat = load_catalog()
    assert len(cat) >= 10
    assert set(REQUIRED) <= set(cat)


@pytest.mark.parametrize("key", sorted(load_catalog()))
def test_every_figure_has_a_source_and_a_sane_value(key: str) -> None:
    e = load_catalog()[key]
    assert set(e.figures) == set(FIGURES)
    for name, fig in e.figures.items():
        assert len(fig.source) > 10, f"{key}.{name} has no real source"
        assert fig.value > 0
    assert 0 < e.efficiency <= 1
    assert 1e9 < e.value("memory") < 1e12  # between 1 GB and 1 TB
    assert 1e10 < e.peak_flops < 1e15


@pytest.mark.parametrize("key", sorted(load_catalog()))
def test_every_entry_loads_as_a_scenario_device(key: str) -> None:
    sc = scenario_from_dict(_scenario({"catalog": key, "name": "dev", "uplink": "100 Mbit/s", "downlink": 1e8}))
    d, e = sc.devices[0], load_catalog()[key]
    assert d.flops == pytest.approx(e.peak_flops * e.efficiency)
    assert d.load_bandwidth == e.value("load_bandwidth")
    assert d.memory == e.value("memory")
    assert d.startup == e.value("startup")
    assert d.mem_bandwidth == e.value("mem_bandwidth")


def test_overrides_win_over_the_catalog() -> None:
    sc = scenario_from_dict(
        _scenario(
            {
                "catalog": "jetson-orin-nx",
                "name": "cam-3",
                "memory": "8 GB",
                "startup": "1 s",
                "uplink": 1e8,
                "downlink": 1e8,
            },
            {"catalog": "jetson-orin-nx", "name": "cam-4", "efficiency": 0.5, "uplink": 1e8, "downlink": 1e8},
            {"catalog": "jetson-orin-nx", "name": "cam-5", "flops": "1 TFLOPS", "uplink": 1e8, "downlink": 1e8},
        )
    )
    base = catalog_device_fields("jetson-orin-nx")
    cam3, cam4, cam5 = sc.devices
    assert cam3.memory == 8e9 and cam3.startup == 1.0 and cam3.flops == base["flops"]
    assert cam4.flops == pytest.approx(load_catalog()["jetson-orin-nx"].peak_flops * 0.5)
    assert cam4.memory == base["memory"]
    assert cam5.flops == 1e12


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ({"catalog": "jetson-orin-mx", "name": "a", "uplink": 1, "downlink": 1}, r"^devices\[0\]\.catalog: unknown"),
        ({"catalog": "jetson-orin-nx", "name": "a"}, r"^devices\[0\]\.uplink: is required"),
        (
            {"catalog": "jetson-orin-nx", "name": "a", "uplink": 1, "downlink": 1, "efficiency": 1.5},
            r"^devices\[0\]\.efficiency",
        ),
        (
            {"name": "a", "efficiency": 0.5, "flops": 1, "load_bandwidth": 1, "memory": 1, "uplink": 1, "downlink": 1},
            r"^devices\[0\]\.efficiency: only applies to a catalog device",
        ),
        (
            {"name": "a", "load_bandwidth": 1, "memory": 1, "uplink": 1, "downlink": 1},
            r"^devices\[0\]\.flops: is required",
        ),
        (
            {"catalog": "jetson-orin-nx", "name": "a", "uplink": 1, "downlink": 1, "memry": 1},
            r"^devices\[0\]\.memry: is not a known field",
        ),
    ],
)
def test_bad_catalog_devices_give_one_line_errors(device: dict, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        scenario_from_dict(_scenario(device))
    assert "\n" not in str(info.value)


def _entry(**figures: object) -> dict:
    good = {name: {"value": 1, "source": "spec sheet X"} for name in FIGURES}
    good["efficiency"] = {"value": 0.5, "source": "estimate: why"}
    good.update(figures)  # type: ignore[arg-type]
    return {"devices": {"dev": good}}


def test_parse_catalog_accepts_a_minimal_entry() -> None:
    assert parse_catalog(_entry())["dev"].efficiency == 0.5


@pytest.mark.parametrize(
    ("figures", "match"),
    [
        ({"memory": {"value": "8 GB"}}, r"dev\.memory: must be \{value"),
        ({"memory": {"value": "8 GB", "source": "  "}}, r"dev\.memory\.source: is empty"),
        ({"memory": {"value": "8 GB/s", "source": "x"}}, r"dev\.memory\.value"),
        ({"efficiency": {"value": 2, "source": "x"}}, r"dev\.efficiency\.value: must be <= 1"),
        ({"colour": {"value": 2, "source": "x"}}, r"dev\.colour: is not a known catalog field"),
    ],
)
def test_parse_catalog_rejects_uncited_or_malformed_figures(figures: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_catalog(_entry(**figures))
