"""``coldpipe model-info`` and ``coldpipe scenario random``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldpipe.cli import main
from coldpipe.cli.scenario_cmd import parse_mix, random_scenario
from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.errors import InputError
from coldpipe.scenario_file import load_scenario
from test_checkpoint_profile import tiny_config, write_checkpoint


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def test_catalog_table_matches_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["model-info", "--catalog", "llama-3.2-1b", "--prompt-tokens", "256", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    ref = blocks_for(CATALOG["llama-3.2-1b"], prompt_tokens=256)
    assert [r["weight_bytes"] for r in doc["blocks"]] == [b.weight_bytes for b in ref]
    assert [r["flops"] for r in doc["blocks"]] == [b.flops for b in ref]
    assert doc["totals"]["kv_bytes"] == sum(b.kv_bytes for b in ref)


def test_checkpoint_table_has_exact_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = write_checkpoint(tmp_path)
    code, out, _ = _run(["model-info", "--checkpoint", str(tmp_path), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["totals"]["weight_bytes"] == sum(a.nbytes for a in tensors.values())
    # the positional form takes a directory as a checkpoint
    code, out2, _ = _run(["model-info", str(tmp_path), "--json"], capsys)
    assert json.loads(out2) == json.loads(out)


def test_hf_config_and_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(tiny_config()))
    code, out, _ = _run(["model-info", "--hf-config", str(tmp_path / "config.json"), "--prompt-tokens", "8"], capsys)
    assert code == 0
    assert "layer2" in out and "norm+head" in out and "total" in out


def test_scenario_argument_uses_its_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["model-info", "demo", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["model"] == "llama-3.1-8b"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["model-info"], "give exactly one of"),
        (["model-info", "--catalog", "llama-9"], "--catalog: unknown model 'llama-9'"),
        (["model-info", "--catalog", "llama-3.2-1b", "--prompt-tokens", "0"], "--prompt-tokens"),
        (["model-info", "--checkpoint", "/nope"], "--checkpoint: '/nope' is not a directory"),
        (["model-info", "--hf-config", "/nope.json"], "--hf-config: no such file"),
    ],
)
def test_bad_model_info_inputs(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1


def test_random_scenario_is_reproducible_and_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["scenario", "random", "--devices", "6", "--catalog-mix", "jetson-orin-nx:2,raspberry-pi-5-sd:1",
            "--radius-m", "40", "--seed", "7"]  # fmt: skip
    code, out_a, _ = _run(argv, capsys)
    code_b, out_b, _ = _run(argv, capsys)
    assert code == code_b == 0 and out_a == out_b
    path = tmp_path / "s.yaml"
    assert _run([*argv, "--out", str(path)], capsys)[0] == 0
    sc = load_scenario(path)
    assert len(sc.devices) == 6
    assert {d.name.rsplit("-", 1)[0] for d in sc.devices} <= {"jetson-orin-nx", "raspberry-pi-5-sd"}
    # the file plans: the generated scenario is a complete input
    assert _run(["plan", str(path), "--json"], capsys)[0] == 0


def test_random_distances_stay_in_the_disc() -> None:
    doc = random_scenario(n_devices=200, mix=parse_mix("all"), radius_m=25.0, seed=3)
    dists = [d["radio"]["distance_m"] for d in doc["devices"]]
    assert all(1.0 <= x <= 25.0 for x in dists)
    # uniform over the area: about a quarter of the devices within half the radius
    assert 0.12 < sum(x <= 12.5 for x in dists) / len(dists) < 0.4


@pytest.mark.parametrize(
    ("mix", "match"),
    [
        ("jetson:1", "unknown catalog device"),
        ("jetson-orin-nx:x", "no number"),
        ("jetson-orin-nx:0", "must be > 0"),
    ],
)
def test_bad_catalog_mix(mix: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_mix(mix)
