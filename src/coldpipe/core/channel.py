"""The wireless channel: link rates of devices around one access point (docs/channel.md).

Pure functions, no I/O. Every device reaches the AP over one radio link; its rate follows
Shannon's formula on the log-distance path-loss gain:

- path loss (dB) ``PL(d) = PL0 + 10 * n * log10(max(d, d0) / d0)``, ``PL0`` the loss at the
  reference distance ``d0`` (by default the free-space loss ``20 * log10(4 * pi * d0 * f_c / c)``);
- received power (dBm) ``P_rx = P_tx + G_ant - PL(d)``;
- noise power (dBm) over a band ``W_k``: ``N = N0 + 10 * log10(W_k)`` with ``N0`` in dBm/Hz;
- rate (bit/s) ``R = W_k * log2(1 + 10 ** ((P_rx - N) / 10))``.

Sharing of the AP's band ``W`` among the ``K`` devices on the channel:

- ``"tdma"``: a transfer gets the whole channel, ``W_k = W``, at full transmit power (the model's
  transfers of one request never overlap, so nothing is shared while one is under way);
- ``"fdma"``: each device owns ``W_k = W / K`` at all times. Uplink: the device puts its whole
  power into its sub-band. Downlink: the AP splits its power equally, ``P_AP / K`` per sub-band,
  so its per-sub-band SNR equals the full-band SNR.

>>> ap = AccessPoint(bandwidth_hz=20e6, noise_psd_dbm_hz=-174.0, tx_power_dbm=20.0,
...                  path_loss=PathLoss(exponent=3.0, reference_loss_db=40.0), sharing="tdma")
>>> up, down = link_rates(ap, [Radio(distance_m=10.0, tx_power_dbm=20.0)])[0]
>>> round(snr_db(ap, Radio(distance_m=10.0, tx_power_dbm=20.0), 20e6), 2)   # 20 - 70 - (-174 + 73.01)
50.99
>>> round(up / 1e6, 1), up == down
(338.8, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from coldpipe.errors import InputError

__all__ = [
    "SHARINGS",
    "SPEED_OF_LIGHT_M_S",
    "AccessPoint",
    "PathLoss",
    "Radio",
    "Sharing",
    "free_space_loss_db",
    "link_rates",
    "received_power_dbm",
    "shannon_rate_bps",
    "snr_db",
]

SPEED_OF_LIGHT_M_S = 299_792_458.0

Sharing = Literal["fdma", "tdma"]
SHARINGS: tuple[Sharing, ...] = ("fdma", "tdma")


def _finite(field: str, value: float, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(field, f"must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise InputError(field, f"must be > 0, got {value!r}")


def free_space_loss_db(distance_m: float, carrier_hz: float) -> float:
    """Friis free-space path loss ``20 * log10(4 * pi * d * f / c)`` in dB.

    >>> round(free_space_loss_db(1.0, 5.0e9), 2)     # 1 m at 5 GHz
    46.43
    >>> round(free_space_loss_db(1.0, 2.4e9), 2)
    40.05
    """
    _finite("network.carrier_hz", carrier_hz, positive=True)
    _finite("distance_m", distance_m, positive=True)
    return 20.0 * math.log10(4.0 * math.pi * distance_m * carrier_hz / SPEED_OF_LIGHT_M_S)


@dataclass(frozen=True)
class PathLoss:
    """Log-distance path loss: ``PL0`` dB at ``reference_distance_m``, then ``10 * exponent`` dB per decade.

    Closer than the reference distance the loss stays ``PL0`` (the model is not meant for the near field).

    >>> PathLoss(exponent=2.0, reference_loss_db=40.0).loss_db(100.0)
    80.0
    >>> PathLoss(exponent=3.5, reference_loss_db=40.0).loss_db(0.5)
    40.0
    """

    exponent: float
    reference_loss_db: float
    reference_distance_m: float = 1.0

    def __post_init__(self) -> None:
        _finite("network.path_loss_exponent", self.exponent, positive=True)
        _finite("network.reference_loss_db", self.reference_loss_db)
        _finite("network.reference_distance_m", self.reference_distance_m, positive=True)

    def loss_db(self, distance_m: float) -> float:
        _finite("radio.distance_m", distance_m, positive=True)
        d = max(distance_m, self.reference_distance_m)
        return self.reference_loss_db + 10.0 * self.exponent * math.log10(d / self.reference_distance_m)


@dataclass(frozen=True)
class AccessPoint:
    """The AP's side of the channel: band, receiver noise, transmit power, path loss and sharing.

    ``noise_psd_dbm_hz`` is the noise power spectral density at the receivers including their
    noise figure (thermal noise at 290 K is -174 dBm/Hz).
    """

    bandwidth_hz: float
    path_loss: PathLoss
    noise_psd_dbm_hz: float = -174.0
    tx_power_dbm: float = 20.0
    sharing: Sharing = "fdma"

    def __post_init__(self) -> None:
        _finite("network.bandwidth_hz", self.bandwidth_hz, positive=True)
        _finite("network.noise_psd_dbm_hz", self.noise_psd_dbm_hz)
        _finite("network.ap_tx_power_dbm", self.tx_power_dbm)
        if self.sharing not in SHARINGS:
            raise InputError("network.sharing", f"unknown scheme {self.sharing!r}", f"use one of {list(SHARINGS)}")


@dataclass(frozen=True)
class Radio:
    """A device's radio: distance to the AP, transmit power, antenna gain (applied both ways)."""

    distance_m: float
    tx_power_dbm: float = 20.0
    antenna_gain_db: float = 0.0

    def __post_init__(self) -> None:
        _finite("radio.distance_m", self.distance_m, positive=True)
        _finite("radio.tx_power_dbm", self.tx_power_dbm)
        _finite("radio.antenna_gain_db", self.antenna_gain_db)


def shannon_rate_bps(bandwidth_hz: float, snr_linear: float) -> float:
    """Shannon capacity ``W * log2(1 + SNR)`` in bit/s.

    >>> shannon_rate_bps(1e6, 1.0)
    1000000.0
    >>> shannon_rate_bps(20e6, 0.0)
    0.0
    """
    return bandwidth_hz * math.log2(1.0 + snr_linear)


def received_power_dbm(tx_power_dbm: float, radio: Radio, path_loss: PathLoss) -> float:
    """``P_tx + G_ant - PL(d)`` in dBm."""
    return tx_power_dbm + radio.antenna_gain_db - path_loss.loss_db(radio.distance_m)


def snr_db(ap: AccessPoint, radio: Radio, band_hz: float, *, downlink: bool = False, tx_share: float = 1.0) -> float:
    """SNR in dB of one direction of ``radio``'s link over a band of ``band_hz``.

    ``tx_share`` is the fraction of the transmitter's power put into that band (the AP's power
    split of FDMA downlink).
    """
    tx = ap.tx_power_dbm if downlink else radio.tx_power_dbm
    tx += 10.0 * math.log10(tx_share)
    noise_dbm = ap.noise_psd_dbm_hz + 10.0 * math.log10(band_hz)
    return received_power_dbm(tx, radio, ap.path_loss) - noise_dbm


def link_rates(ap: AccessPoint, radios: Sequence[Radio]) -> tuple[tuple[float, float], ...]:
    """``(uplink_bps, downlink_bps)`` of each radio; all ``len(radios)`` of them share the AP's band.

    >>> pl = PathLoss(exponent=2.0, reference_loss_db=40.0)
    >>> ap = AccessPoint(bandwidth_hz=2e6, path_loss=pl, noise_psd_dbm_hz=-100.0, tx_power_dbm=0.0, sharing="fdma")
    >>> radios = [Radio(distance_m=1.0, tx_power_dbm=0.0), Radio(distance_m=0.5, tx_power_dbm=0.0)]
    >>> # W/K = 1 MHz, noise -100 + 60 = -40 dBm; uplink -40 dBm received: SNR 1; downlink half the AP power: SNR 1/2
    >>> [(up, round(down)) for up, down in link_rates(ap, radios)]
    [(1000000.0, 584963), (1000000.0, 584963)]
    """
    k = len(radios)
    if k == 0:
        return ()
    out = []
    for radio in radios:
        if ap.sharing == "tdma":
            band, share = ap.bandwidth_hz, 1.0
        else:
            band, share = ap.bandwidth_hz / k, 1.0 / k
        up = shannon_rate_bps(band, 10.0 ** (snr_db(ap, radio, band) / 10.0))
        down = shannon_rate_bps(band, 10.0 ** (snr_db(ap, radio, band, downlink=True, tx_share=share) / 10.0))
        out.append((up, down))
    return tuple(out)
