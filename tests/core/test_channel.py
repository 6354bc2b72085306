"""The wireless channel (core/channel.py, docs/channel.md) against values computed by hand in watts."""

from __future__ import annotations

import itertools
import math

import pytest

from coldpipe.core.channel import AccessPoint, PathLoss, Radio, free_space_loss_db, link_rates, shannon_rate_bps
from coldpipe.errors import InputError
from coldpipe.scenario_file import scenario_from_dict


def _watts(dbm: float) -> float:
    return 1e-3 * 10 ** (dbm / 10)


def _hand_rate(band_hz: float, tx_w: float, loss_db: float, n0_dbm_hz: float) -> float:
    """Shannon in the linear domain: W log2(1 + P g / (N0 W))."""
    gain = 10 ** (-loss_db / 10)
    noise_w = _watts(n0_dbm_hz) * band_hz
    return band_hz * math.log2(1 + tx_w * gain / noise_w)


def _ap(sharing: str = "tdma", **kw: float) -> AccessPoint:
    return AccessPoint(
        bandwidth_hz=kw.get("bandwidth_hz", 20e6),
        path_loss=PathLoss(exponent=kw.get("exponent", 3.0), reference_loss_db=40.0),
        noise_psd_dbm_hz=-174.0,
        tx_power_dbm=20.0,
        sharing=sharing,  # type: ignore[arg-type]
    )


def test_tdma_rate_at_10_m_by_hand() -> None:
    # 20 dBm = 0.1 W; loss 40 + 30 log10(10) = 70 dB; noise -174 dBm/Hz over 20 MHz = 7.96e-14 W
    # SNR = 0.1 * 1e-7 / 7.96e-14 = 125 594; rate = 20e6 * log2(125 595) = 338.77 Mbit/s
    up, down = link_rates(_ap("tdma"), [Radio(distance_m=10.0, tx_power_dbm=20.0)])[0]
    assert up == pytest.approx(338.77e6, rel=1e-4)
    assert up == pytest.approx(_hand_rate(20e6, 0.1, 70.0, -174.0), rel=1e-12)
    assert down == pytest.approx(up, rel=1e-12)  # same power both ways under tdma


def test_exact_snr_of_one_gives_rate_equal_to_bandwidth() -> None:
    # 0 dBm sent, 40 dB lost: -40 dBm received; noise -100 dBm/Hz over 1 MHz = -40 dBm: SNR 1, rate = W
    ap = AccessPoint(1e6, PathLoss(2.0, 40.0), noise_psd_dbm_hz=-100.0, tx_power_dbm=0.0, sharing="tdma")
    up, down = link_rates(ap, [Radio(distance_m=1.0, tx_power_dbm=0.0)])[0]
    assert up == pytest.approx(1e6, rel=1e-12)
    assert down == pytest.approx(1e6, rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_fdma_splits_band_and_ap_power(k: int) -> None:
    ap = _ap("fdma")
    radios = [Radio(distance_m=25.0, tx_power_dbm=15.0)] * k
    loss = 40.0 + 30.0 * math.log10(25.0)
    for up, down in link_rates(ap, radios):
        # uplink: the device's whole power in W/K; downlink: the AP's power / K in W/K
        assert up == pytest.approx(_hand_rate(20e6 / k, _watts(15.0), loss, -174.0), rel=1e-12)
        assert down == pytest.approx(_hand_rate(20e6 / k, _watts(20.0) / k, loss, -174.0), rel=1e-12)


def test_tdma_never_slower_than_fdma() -> None:
    radios = [Radio(distance_m=d) for d in (3.0, 10.0, 40.0)]
    for (fu, fd), (tu, td) in zip(link_rates(_ap("fdma"), radios), link_rates(_ap("tdma"), radios), strict=True):
        assert tu >= fu and td >= fd


def test_rate_falls_with_distance_and_clamps_inside_reference() -> None:
    ap = _ap("tdma")
    rates = [link_rates(ap, [Radio(distance_m=d)])[0][0] for d in (0.2, 1.0, 5.0, 50.0, 500.0)]
    assert rates[0] == rates[1]  # closer than d0 = 1 m: loss stays PL0
    assert all(a > b for a, b in itertools.pairwise(rates[1:]))


def test_free_space_loss_known_values() -> None:
    assert free_space_loss_db(1.0, 2.4e9) == pytest.approx(40.05, abs=0.01)
    # +20 dB per decade of distance
    assert free_space_loss_db(10.0, 5e9) - free_space_loss_db(1.0, 5e9) == pytest.approx(20.0)


def test_shannon_zero_snr_is_zero_rate() -> None:
    assert shannon_rate_bps(20e6, 0.0) == 0.0


def test_no_radios_no_rates() -> None:
    assert link_rates(_ap(), []) == ()


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Radio(distance_m=0.0), "radio.distance_m"),
        (lambda: PathLoss(exponent=-1.0, reference_loss_db=40.0), "network.path_loss_exponent"),
        (lambda: AccessPoint(0.0, PathLoss(3.0, 40.0)), "network.bandwidth_hz"),
        (lambda: AccessPoint(1e6, PathLoss(3.0, 40.0), sharing="cdma"), "network.sharing"),  # type: ignore[arg-type]
    ],
)
def test_bad_channel_values_name_the_field(make, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        make()


def _radio_scenario(network: dict, radios: list[dict]) -> dict:
    return {
        "network": network,
        "workload": {"prompt_tokens": 64},
        "model": {"catalog": "llama-3.2-1b"},
        "devices": [{"catalog": "jetson-orin-nx", "name": f"d{i}", "radio": r} for i, r in enumerate(radios)],
    }


def test_scenario_radio_rates_by_hand() -> None:
    net = {"bandwidth_hz": "20 MHz", "reference_loss_db": 40, "path_loss_exponent": 3, "sharing": "tdma"}
    sc = scenario_from_dict(_radio_scenario(net, [{"distance_m": 10, "tx_power_dbm": 20}]))
    assert sc.devices[0].uplink == pytest.approx(338.77e6, rel=1e-4)
    assert sc.devices[0].downlink == pytest.approx(338.77e6, rel=1e-4)


def test_scenario_fdma_counts_only_radio_devices() -> None:
    net = {"bandwidth_hz": "20 MHz", "reference_loss_db": 40, "path_loss_exponent": 3, "sharing": "fdma"}
    data = _radio_scenario(net, [{"distance_m": 10}, {"distance_m": 10}])
    data["devices"].append({"catalog": "jetson-orin-nx", "name": "wired", "uplink": "1 Gbit/s", "downlink": 1e9})
    sc = scenario_from_dict(data)
    loss = 70.0
    assert sc.devices[0].uplink == pytest.approx(_hand_rate(10e6, 0.1, loss, -174.0), rel=1e-12)
    assert sc.devices[2].uplink == 1e9


def test_scenario_default_reference_loss_is_free_space() -> None:
    net = {"bandwidth_hz": 20e6, "carrier_hz": "2.4 GHz", "path_loss_exponent": 2.0, "sharing": "tdma"}
    a = scenario_from_dict(_radio_scenario(net, [{"distance_m": 30}])).devices[0].uplink
    fs = {"bandwidth_hz": 20e6, "carrier_hz": "2.4 GHz", "path_loss_model": "free-space", "sharing": "tdma"}
    b = scenario_from_dict(_radio_scenario(fs, [{"distance_m": 30}])).devices[0].uplink
    assert a == pytest.approx(b, rel=1e-12)
    assert a == pytest.approx(_hand_rate(20e6, 0.1, free_space_loss_db(30.0, 2.4e9), -174.0), rel=1e-12)


@pytest.mark.parametrize(
    ("network", "radio", "match"),
    [
        ({}, {"distance_m": 10}, r"^network\.bandwidth_hz: is required"),
        ({"bandwidth_hz": 2e7, "sharing": "ofdma"}, {"distance_m": 10}, r"^network\.sharing"),
        ({"bandwidth_hz": "20 GB"}, {"distance_m": 10}, r"^network\.bandwidth_hz"),
        ({"bandwidth_hz": 2e7}, {"distance_m": -3}, r"^devices\[0\]\.radio\.distance_m"),
        ({"bandwidth_hz": 2e7}, {"distance_m": 3, "power": 1}, r"^devices\[0\]\.radio\.power: is not a known"),
        (
            {"bandwidth_hz": 2e7, "path_loss_model": "free-space", "reference_loss_db": 30},
            {"distance_m": 3},
            r"^network\.reference_loss_db: is fixed",
        ),
    ],
)
def test_bad_radio_inputs_give_one_line_errors(network: dict, radio: dict, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        scenario_from_dict(_radio_scenario(network, [radio]))
    assert "\n" not in str(info.value)


def test_with_radio_distance_moves_radio_devices_and_lowers_rates() -> None:
    from coldpipe.scenario_file import with_radio_distance

    net = {"bandwidth_hz": "20 MHz", "reference_loss_db": 40, "path_loss_exponent": 3, "sharing": "tdma"}
    doc = _radio_scenario(net, [{"distance_m": 10}, {"distance_m": 10}])
    near = scenario_from_dict(doc).devices[0].uplink
    far_doc = with_radio_distance(doc, 100.0, devices=["d0"])
    far = scenario_from_dict(far_doc).devices
    assert far[0].uplink < near and far[1].uplink == near
    with pytest.raises(InputError, match="no device with a radio"):
        with_radio_distance(doc, 5.0, devices=["nobody"])
