"""Regression tests for every defect of issue 15 that needs no running ranks (those are in test_run_lifecycle.py,
test_runtime.py and test_profiler.py): bad checkpoints refused before any rank starts, bounded work and
errors, strict parsing. Each runs the CLI's entry point (one line, exit 2) or the reader it calls."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
from mutations import ARCH, BLOCKS_SCENARIO, PLAN, write_checkpoint

from coldpipe.cli import main
from coldpipe.core.limits import MAX_NESTING
from coldpipe.errors import MAX_LINE_CHARS


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with one line. Returns that line."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("coldpipe: error: ") and len(lines[0]) <= MAX_LINE_CHARS + 200
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("good") / "sharded", shards=3)


def _copy(src: Path, tmp_path: Path) -> Path:
    d = tmp_path / "c"
    shutil.copytree(src, d)
    return d


def _header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n])


def _write_header(path: Path, header: dict, n_old: int) -> None:
    raw = path.read_bytes()
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n_old :])


def _zero_bytes(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"")


def _truncated(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _corrupt_header(d: Path) -> None:
    f = d / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8:20] = b"\xff" * 12
    f.write_bytes(bytes(raw))


def _header_past_file(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 2**63) + f.read_bytes()[8:])


def _wrong_shape(d: Path) -> None:
    f = d / "model.safetensors"
    n, h = _header(f)
    e = h["model.layers.0.mlp.up_proj.weight"]
    e["shape"] = [e["shape"][1], e["shape"][0]]  # same bytes, transposed: only the architecture check sees it
    _write_header(f, h, n)


def _missing_shard(d: Path) -> None:
    next(iter(sorted(d.glob("model-*.safetensors")))).unlink()


def _index_names_missing_file(d: Path) -> None:
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))


CASES = {
    "zero-bytes": (False, _zero_bytes, "too short to be a safetensors file"),
    "truncated": (False, _truncated, "data section"),
    "corrupt-header": (False, _corrupt_header, "no valid JSON header"),
    "header-past-file": (False, _header_past_file, "-byte header in a"),
    "wrong-shape": (False, _wrong_shape, "tensor 'model.layers.0.mlp.up_proj.weight' has shape"),
    "missing-shard": (True, _missing_shard, "names shards missing"),
    "index-names-missing-file": (True, _index_names_missing_file, "model-00009-of-00009.safetensors"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_run_and_model_info_refuse_a_bad_checkpoint_alike_before_any_rank(
    case: str, ckpt: Path, sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `run` gave raw tracebacks (or failed after the ranks started) where model-info was clean."""
    is_sharded, damage, words = CASES[case]
    d = _copy(sharded if is_sharded else ckpt, tmp_path)
    damage(d)
    scen = tmp_path / "s.json"
    scen.write_text(json.dumps({**BLOCKS_SCENARIO}))
    info_line = _cli(capsys, "model-info", "--checkpoint", str(d), "--json")
    run_line = _cli(capsys, "run", str(scen), "--local", "--checkpoint", str(d), "--plan",
                    "a[0-1] > b[2-3]", "--write-spec", str(tmp_path / "spec.json"))  # fmt: skip
    for line in (info_line, run_line):
        assert words in line and str(d) in line, line
    assert not (tmp_path / "spec.json").exists()


def _yaml_alias_plan() -> str:
    """353 bytes of nested aliases that expand to ~10^9 values (the issue's plan file)."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    lines.append("stages: *i")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_gives_a_short_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a 353-byte YAML plan made a 663 MB error message (repr of the input) or a MemoryError."""
    f = tmp_path / "plan.yaml"
    f.write_text(_yaml_alias_plan())
    assert len(f.read_bytes()) < 400
    line = _cli(capsys, "plan", "demo", "--after", str(f))
    assert "aliases are expanded" in line


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        (("workload", "requests"), 10**7, "workload.requests: must be <= 256"),
        (("workload", "requests"), 1e7, "workload.requests: must be an integer"),
        (("workload", "prompt_tokens"), "on", "workload.prompt_tokens: must be an integer, got the string 'on'"),
        (("workload", "prompt_tokens"), True, "must be an integer, got the boolean true"),
        (("workload", "new_tokens"), 1000, None),  # with 1000 requests below
        (("devices",), "10000", "devices: must be a list"),
    ],
)
def test_counts_are_bounded_and_integers_strict(
    where: tuple[str, ...], value: object, words: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `requests: 1e7` (or 1000 x 1000 tokens) kept `plan` busy for minutes; `on` was read as 1."""
    doc = json.loads(json.dumps(BLOCKS_SCENARIO))
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    if words is None:
        doc["workload"]["requests"] = 200
        words = "decode steps, more than the"
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    assert words in _cli(capsys, "plan", str(f))


def test_ten_thousand_devices_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(json.dumps(BLOCKS_SCENARIO))
    doc["devices"] = [dict(doc["devices"][0], name=f"d{i}") for i in range(10_000)]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    assert "devices: has 10000 items, more than the 256 allowed" in _cli(capsys, "plan", str(f))


def test_yaml_one_one_booleans_are_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(BLOCKS_SCENARIO).replace('"prompt_tokens": 8', '"prompt_tokens": yes'))
    assert "workload.prompt_tokens: must be an integer, got the string 'yes'" in _cli(capsys, "plan", str(f))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_duplicate_keys_are_refused(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: duplicate keys in YAML/JSON were accepted (the last one won)."""
    f = tmp_path / f"s{suffix}"
    text = json.dumps(BLOCKS_SCENARIO)
    f.write_text(text.replace('"source": "ap"', '"source": "ap", "source": "a"'))
    assert "'source'" in _cli(capsys, "plan", str(f))
    assert "twice" in _cli(capsys, "plan", str(f))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_deep_nesting_is_an_error_not_a_recursion(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: deeply nested YAML/JSON gave RecursionError tracebacks."""
    f = tmp_path / f"s{suffix}"
    f.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert f"more than {MAX_NESTING} deep" in _cli(capsys, "plan", str(f))


def test_fractional_plan_indices_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: plan indices 2.7 were truncated to 2."""
    f = tmp_path / "plan.json"
    plan = json.loads(json.dumps(PLAN))
    plan["stages"][1]["first"] = 2.7
    f.write_text(json.dumps(plan))
    scen = tmp_path / "s.json"
    scen.write_text(json.dumps(BLOCKS_SCENARIO))
    line = _cli(capsys, "plan", str(scen), "--after", str(f))
    assert "plan.stages[1].first: must be a block index (an integer >= 0), got 2.7" in line


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("num_hidden_layers", 10**9, "num_hidden_layers: is 1000000000, more than the 1024"),
        ("num_hidden_layers", 1e9, "num_hidden_layers: must be a positive integer"),
        ("hidden_size", None, "hidden_size: missing from config.json"),
        ("vocab_size", "64", "vocab_size: must be a positive integer"),
        ("num_key_value_heads", None, None),  # null: the default (= heads), accepted
    ],
)
def test_config_json_sizes_are_strict_and_bounded(
    key: str, value: object, words: str | None, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `num_hidden_layers: 1e9` made `run` hang and model-info raise MemoryError; null fields
    in config.json gave tracebacks."""
    d = _copy(ckpt, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    if key == "num_key_value_heads":
        cfg["num_attention_heads"] = ARCH.num_key_value_heads  # null -> heads: one KV head per head
    (d / "config.json").write_text(json.dumps(cfg))
    if words is None:
        with pytest.raises(SystemExit):
            main(["model-info", "--checkpoint", str(d), "--json"])
        capsys.readouterr()
        return
    assert words in _cli(capsys, "model-info", "--checkpoint", str(d), "--json")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeout_must_be_finite_and_positive(
    value: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `--timeout nan` passed the check and gave a traceback in the ranks."""
    scen = tmp_path / "s.json"
    scen.write_text(json.dumps(BLOCKS_SCENARIO))
    line = _cli(capsys, "run", str(scen), "--local", "--checkpoint", str(ckpt), "--timeout", value)
    assert "--timeout: must be a finite number of seconds > 0" in line


def test_an_error_never_quotes_unbounded_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(json.dumps(BLOCKS_SCENARIO))
    doc["model"]["catalog"] = "x" * 1_000_000
    del doc["model"]["blocks"]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    line = _cli(capsys, "plan", str(f))
    assert "characters cut" in line and len(line) < MAX_LINE_CHARS + 200


def test_a_file_too_big_says_its_size_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("#" * (2**20 + 10))
    line = _cli(capsys, "plan", str(f))
    assert "1.05 MB (1048586 bytes)" in line and "(1048576 bytes)" in line
