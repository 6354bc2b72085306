"""Good files to start from, and seeded mutations of them: scenarios, plans, checkpoints, traces, CLI arguments.

Every generator takes a :class:`random.Random` and a scratch directory and yields ``(family, argv)`` cases
for :func:`fuzzing.run_case`. The same seed gives the same cases (CI is reproducible); the families are
what docs/reliability.md counts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import save_file

from coldpipe.checkpoint_files import architecture_tensors
from coldpipe.core.architectures import Architecture
from coldpipe.core.simulator import simulate
from coldpipe.core.types import Plan
from coldpipe.scenario_file import scenario_from_dict

Case = tuple[str, list[str]]
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

ARCH = Architecture("llama", 16, 32, 2, 2, 1, 64, 8, tie_word_embeddings=False, max_position_embeddings=256)

BLOCKS_SCENARIO: dict[str, Any] = {
    "source": "ap",
    "network": {"hop_latency": "3 ms"},
    "workload": {"prompt_tokens": 8, "new_tokens": 2, "prompt_bytes": 32, "token_bytes": 4},
    "model": {
        "name": "tiny",
        "blocks": [
            {"name": f"b{i}", "weight_bytes": f"{10 + i} MB", "flops": 1e9 * (1 + i), "out_bytes": "64 KB"}
            for i in range(4)
        ],
    },
    "devices": [
        {
            "name": "a",
            "flops": "1 TFLOPS",
            "load_bandwidth": "1 GB/s",
            "startup": "0.2 s",
            "memory": "40 MB",
            "uplink": "100 Mbit/s",
            "downlink": "200 Mbit/s",
        },
        {
            "name": "b",
            "flops": "2 TFLOPS",
            "load_bandwidth": "500 MB/s",
            "memory": "30 MB",
            "uplink": "50 Mbit/s",
            "downlink": "80 Mbit/s",
            "mem_bandwidth": "10 GB/s",
        },
        {"name": "c", "catalog": "raspberry-pi-5-nvme", "radio": {"distance_m": 5}},
    ],
}
BLOCKS_SCENARIO["network"]["bandwidth_hz"] = "80 MHz"

PLAN = {"stages": [{"device": "a", "first": 0, "last": 1}, {"device": "b", "first": 2, "last": 3}]}

# values that break naive readers: wrong types, YAML 1.1 booleans, non-finite, huge, negative, fractional
HOSTILE: list[Any] = [
    None,
    True,
    False,
    "on",
    "yes",
    "off",
    0,
    -1,
    2.7,
    1e9,
    1e308,
    -1e308,
    10**30,
    "1e9",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "x" * 5000,
    [],
    {},
    [1, 2],
    {"a": 1},
    "3 parsecs",
    "1 GB",
    "10 ms",
    "-5 MB",
    "1e400 B",
    "0x10",
    "\u00e9\u4e2d",
    "\x00",
    7,
    1,
    3,
    2**63,
    -(2**63),
    0.0,
    -0.0,
    1e-300,
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return doc
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return doc


def mutate_doc(rng: random.Random, doc: Any) -> Any:
    """One to three structural edits: a value replaced by a hostile one, a key dropped or added, a list grown."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)
        path = rng.choice(paths)
        op = rng.random()
        try:
            if op < 0.55:
                doc = _set(doc, path, copy.deepcopy(rng.choice(HOSTILE)))
            elif op < 0.7 and path:
                doc = _delete(doc, path)
            elif op < 0.8:
                node = doc
                for k in path:
                    node = node[k]
                if isinstance(node, dict):
                    node[rng.choice(["colour", "prompt_tokens", "name", "x" * 300, "flops"])] = rng.choice(HOSTILE)
                elif isinstance(node, list) and node:
                    node.extend(copy.deepcopy(node) * rng.choice([1, 3, 50]))
            elif op < 0.9:  # renamed duplicate devices, many devices
                devs = doc.get("devices") if isinstance(doc, dict) else None
                if isinstance(devs, list) and devs:
                    n = rng.choice([2, 300, 10_000])
                    devs[:] = [dict(devs[0], name=f"d{i}") if isinstance(devs[0], dict) else devs[0] for i in range(n)]
            else:  # huge workload counts
                wl = doc.get("workload") if isinstance(doc, dict) else None
                if isinstance(wl, dict):
                    wl[rng.choice(["requests", "new_tokens", "prompt_tokens"])] = rng.choice(
                        [1000, 10**7, 1e7, 2**40, 1025, 257]
                    )
        except (KeyError, IndexError, TypeError):
            pass
    return doc


def text_attacks(rng: random.Random, good: str) -> str:
    """Text-level damage: truncation, byte noise, duplicate keys, YAML bombs, deep nesting, odd scalars."""
    op = rng.randrange(10)
    if op == 0:
        return good[: rng.randrange(len(good) + 1)]
    if op == 1:
        chars = list(good)
        for _ in range(rng.randint(1, 8)):
            chars[rng.randrange(len(chars))] = rng.choice("{}[]:,'\"&*!|>-#%@`\t\n\x00")
        return "".join(chars)
    if op == 2:  # a repeated top-level key (the last would win)
        lines = good.splitlines()
        i = rng.randrange(len(lines))
        return "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
    if op == 3:  # a billion laughs
        depth = rng.randint(3, 12)
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, depth)]
        return good + "\n" + "\n".join(lines) + "\n"
    if op == 4:  # deep nesting
        n = rng.choice([70, 1000, 100_000])
        return good + "\nextra: " + "[" * n + "]" * n + "\n"
    if op == 5:
        return good.replace("8", rng.choice(["on", "yes", "8.0", "0o10", "1:30", "1_0", ".inf", ".nan", "8e0"]), 1)
    if op == 6:
        return "&x [*x]" if rng.random() < 0.5 else "a: &x\n  b: *x\n"
    if op == 7:
        return rng.choice(["", "---\n---\n", "null", "[]", "42", "!!python/object:os.system 'true'", "\ufeff" + good])
    if op == 8:  # a long line
        return good + "\nname: " + "z" * rng.choice([10_000, 1_000_000]) + "\n"
    return good.replace(":", "::", 1)


def json_attacks(rng: random.Random, good: str) -> str:
    op = rng.randrange(7)
    if op == 0:
        return good[: rng.randrange(len(good) + 1)]
    if op == 1:
        return (
            good.replace("{", '{"stages": 1, ', 1) if rng.random() < 0.5 else good.replace("}", ', "a": 1, "a": 2}', 1)
        )
    if op == 2:
        n = rng.choice([70, 1000, 100_000])
        return "[" * n + "]" * n
    if op == 3:
        return good.replace("0", rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "2.7", "true", "1" * 5000]), 1)
    if op == 4:
        b = bytearray(good.encode())
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", errors="surrogateescape")
    if op == 5:
        return good + rng.choice(["x", "\n{}", "  ", "\x00"])
    return rng.choice(["", "null", "[]", "{}", '"x"', "{" * 3])


# --- the corpus -----------------------------------------------------------------------------------------------


def write_checkpoint(d: Path, shards: int = 1, arch: Architecture = ARCH) -> Path:
    """A tiny random Llama checkpoint (numpy + safetensors; the names and shapes transformers uses)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(arch.to_hf_config()))
    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s).astype(np.float32) for n, s in architecture_tensors(arch).items()}
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
        return d
    wm = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(d / fname), metadata={"format": "pt"})
        wm.update(dict.fromkeys(part, fname))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return d


def checkpoint_scenario(ckpt: str) -> dict[str, Any]:
    doc = copy.deepcopy(BLOCKS_SCENARIO)
    doc["model"] = {"checkpoint": ckpt, "dtype": "float32"}
    return doc


def synthetic_trace(doc: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """A runtime-format trace of the scenario's simulated timeline (what `coldpipe run` writes, in shape)."""
    sc = scenario_from_dict(doc)
    tl = simulate(sc, Plan.from_dict(plan), "layer")
    events: list[dict[str, Any]] = []
    for j, st in enumerate(tl.stages):
        events.append({"ph": "M", "name": "process_name", "pid": j, "args": {"name": st.device}})
        for b in st.blocks:
            for cat, t0, t1 in (
                ("load", b.load_start_s, b.load_end_s),
                ("compute", b.compute_start_s, b.compute_end_s),
            ):
                events.append(
                    {
                        "name": f"{cat} b{b.block}",
                        "cat": cat,
                        "ph": "X",
                        "ts": t0 * 1e6,
                        "dur": (t1 - t0) * 1e6,
                        "pid": j,
                        "tid": 1,
                        "args": {"device": st.device, "block": b.block, "bytes": None},
                    }
                )
    meta = {
        "plan": plan,
        "overlap": "layer",
        "measured_ttft": tl.ttft_s,
        "predicted_ttft": tl.ttft_s,
        "token_ids": [1],
        "measured_e2e": None,
        "scenario": sc.to_dict(),
    }
    return {"traceEvents": events, "coldpipe": meta}


class Corpus:
    """The good files, written once into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ckpt = write_checkpoint(root / "ckpt")
        self.ckpt_sharded = write_checkpoint(root / "ckpt-sharded", shards=3)
        self.scenario_yaml = yaml.safe_dump(BLOCKS_SCENARIO, sort_keys=False)
        self.scenario_json = json.dumps(BLOCKS_SCENARIO, indent=1)
        self.ckpt_scenario = root / "ckpt-scenario.yaml"
        self.ckpt_scenario.write_text(yaml.safe_dump(checkpoint_scenario(str(self.ckpt)), sort_keys=False))
        self.blocks_scenario = root / "scenario.yaml"
        self.blocks_scenario.write_text(self.scenario_yaml)
        self.plan_json = json.dumps(PLAN)
        self.trace = synthetic_trace(BLOCKS_SCENARIO, PLAN)
        self.trace_file = root / "trace.json"
        self.trace_file.write_text(json.dumps(self.trace))
        self.config = json.loads((self.ckpt / "config.json").read_text())
        self.n = 0

    def scratch(self, name: str) -> Path:
        self.n += 1
        d = self.root / "cases" / f"{self.n:06d}"
        d.mkdir(parents=True, exist_ok=True)
        return d / name


# --- families of cases ------------------------------------------------------------------------------------------

PLAN_CMDS: list[list[str]] = [
    ["plan", "{f}", "--time-limit", "0.2", "--json"],
    ["plan", "{f}", "--time-limit", "0.2", "--json"],
    ["plan", "{f}", "--time-limit", "0.2", "--objective", "e2e", "--json"],
    ["model-info", "{f}", "--json"],
    ["compare", "{f}", "--json"],
]


def scenario_cases(rng: random.Random, c: Corpus) -> Iterator[Case]:
    while True:
        r = rng.random()
        if r < 0.45:
            f = c.scratch("s.yaml")
            f.write_text(text_attacks(rng, c.scenario_yaml), encoding="utf-8", errors="surrogateescape")
            kind = "scenario-text"
        elif r < 0.9:
            doc = mutate_doc(rng, BLOCKS_SCENARIO)
            f = c.scratch(rng.choice(["s.yaml", "s.json"]))
            try:
                text = json.dumps(doc)
                if f.suffix != ".json" and len(text) < 50_000:  # big documents stay JSON (also YAML), fast to write
                    text = yaml.dump(doc, Dumper=_DUMPER)
            except (TypeError, ValueError):
                continue
            f.write_text(text, encoding="utf-8", errors="surrogateescape")
            kind = "scenario-doc"
        else:
            f = c.scratch("s.json")
            f.write_text(json_attacks(rng, c.scenario_json), encoding="utf-8", errors="surrogateescape")
            kind = "scenario-json"
        cmd = rng.choice(PLAN_CMDS)
        yield kind, [a.replace("{f}", str(f)) for a in cmd]


def plan_cases(rng: random.Random, c: Corpus) -> Iterator[Case]:
    while True:
        f = c.scratch("plan.json")
        if rng.random() < 0.5:
            f.write_text(json_attacks(rng, c.plan_json), encoding="utf-8", errors="surrogateescape")
            kind = "plan-text"
        else:
            f.write_text(json.dumps(mutate_doc(rng, PLAN)))
            kind = "plan-doc"
        if rng.random() < 0.6:
            yield kind, ["plan", str(c.blocks_scenario), "--after", str(f), "--json"]
        else:
            out = f.with_name("spec.json")
            yield (
                kind,
                [
                    "run",
                    str(c.ckpt_scenario),
                    "--checkpoint",
                    str(c.ckpt),
                    "--plan",
                    str(f),
                    "--write-spec",
                    str(out),
                ],
            )


def _rewrite_header(rng: random.Random, path: Path) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    e = header[name]
    op = rng.randrange(9)
    if op == 0:
        e["dtype"] = rng.choice(["F33", "Q4", "", 5, None, "F16", "I64", "F4", "BOOL"])
    elif op == 1:
        e["shape"] = rng.choice([[], [0], [-1], [2**62, 2**62], [1.5], ["4"], [3, 5], None, [10**40]])
    elif op == 2:
        e["data_offsets"] = rng.choice([[0, 0], [0, 2**64], [-4, 4], [5, 1], [0], None, [0.0, 64.0], [0, 64]])
    elif op == 3:  # overlap with another tensor
        other = header[rng.choice(names)]
        e["data_offsets"] = list(other["data_offsets"])
        e["shape"], e["dtype"] = other["shape"], other["dtype"]
    elif op == 4:
        header[name + "x"] = header.pop(name)
    elif op == 5:
        del header[name]
    elif op == 6:
        header["__metadata__"] = rng.choice([None, 5, {"format": 1}, []])
    elif op == 7:
        header[name] = rng.choice([None, 1, "x", [], {}])
    else:
        e["shape"] = list(reversed(e["shape"]))
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])


def _damage_checkpoint(rng: random.Random, d: Path) -> str:
    files = sorted(d.glob("*.safetensors"))
    f = rng.choice(files)
    op = rng.randrange(12)
    raw = f.read_bytes()
    if op == 0:
        f.write_bytes(raw[: rng.choice([0, 3, 8, 9, 40, len(raw) // 2, len(raw) - 1])])
        return "ckpt-truncate"
    if op == 1:
        b = bytearray(raw)
        (n,) = struct.unpack("<Q", raw[:8])
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(b), 8 + n))
            b[i] ^= 1 << rng.randrange(8)
        f.write_bytes(bytes(b))
        return "ckpt-bitflip"
    if op == 2:
        n = rng.choice([0, 1, 2**63, 2**64 - 1, len(raw), len(raw) - 8, 100 * 2**20 + 1])
        f.write_bytes(struct.pack("<Q", n) + raw[8:])
        return "ckpt-header-length"
    if op in (3, 4, 5):
        _rewrite_header(rng, f)
        return "ckpt-header-rewrite"
    if op == 6:
        f.unlink()
        return "ckpt-missing-shard"
    if op == 7:
        shutil.copy(f, d / rng.choice(["extra.safetensors", "model-00009-of-00009.safetensors"]))
        if (d / "model.safetensors.index.json").exists() and rng.random() < 0.5:
            idx = json.loads((d / "model.safetensors.index.json").read_text())
            idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "nope.safetensors"
            (d / "model.safetensors.index.json").write_text(json.dumps(idx))
        return "ckpt-extra-shard"
    if op == 8:
        cfg = json.loads((d / "config.json").read_text())
        key = rng.choice(list(cfg))
        cfg[key] = rng.choice([*HOSTILE, 10**9, 1e9, 0, None, "llama", 17])
        (d / "config.json").write_text(json.dumps(cfg))
        return "ckpt-config"
    if op == 9:
        (d / "config.json").write_text(
            json_attacks(rng, (d / "config.json").read_text()), encoding="utf-8", errors="surrogateescape"
        )
        return "ckpt-config-text"
    if op == 10:
        idx = d / "model.safetensors.index.json"
        if idx.exists():
            idx.write_text(json_attacks(rng, idx.read_text()), encoding="utf-8", errors="surrogateescape")
            return "ckpt-index-text"
        f.rename(d / "consolidated.safetensors")
        return "ckpt-renamed"
    (d / "config.json").unlink()
    return "ckpt-no-config"


def checkpoint_cases(rng: random.Random, c: Corpus) -> Iterator[Case]:
    while True:
        src = c.ckpt if rng.random() < 0.5 else c.ckpt_sharded
        d = c.scratch("ckpt")
        shutil.copytree(src, d)
        kind = _damage_checkpoint(rng, d)
        if rng.random() < 0.3:
            # (the first damage may have broken what the second one needs)
            with contextlib.suppress(OSError, ValueError, IndexError, KeyError, TypeError, struct.error):
                _damage_checkpoint(rng, d)
        r = rng.random()
        if r < 0.5:
            yield kind, ["model-info", "--checkpoint", str(d), "--json"]
        elif r < 0.75:
            s = d.with_name("s.yaml")
            s.write_text(yaml.dump(checkpoint_scenario(str(d)), Dumper=_DUMPER))
            yield kind, ["plan", str(s), "--time-limit", "0.2", "--json"]
        else:  # the runtime's own reader, before any rank starts
            spec = d.with_name("spec.json")
            yield (
                kind,
                [
                    "run",
                    str(c.ckpt_scenario),
                    "--checkpoint",
                    str(d),
                    "--plan",
                    "a[0-1] > b[2-3]",
                    "--write-spec",
                    str(spec),
                ],
            )


def trace_cases(rng: random.Random, c: Corpus) -> Iterator[Case]:
    good = json.dumps(c.trace)
    while True:
        f = c.scratch("trace.json")
        if rng.random() < 0.4:
            f.write_text(json_attacks(rng, good), encoding="utf-8", errors="surrogateescape")
            kind = "trace-text"
        else:
            f.write_text(json.dumps(mutate_doc(rng, c.trace)))
            kind = "trace-doc"
        yield kind, ["show", str(f), "--json", "--out", str(f.with_suffix(".svg"))]


NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e400", "1e9", "2.5", "abc", "", "99999999999999999999999", "1"]


def cli_cases(rng: random.Random, c: Corpus) -> Iterator[Case]:
    scen = str(c.blocks_scenario)
    templates: list[Callable[[], list[str]]] = [
        lambda: ["plan", scen, "--time-limit", rng.choice(NUMBERS)],
        lambda: [
            "plan",
            scen,
            "--overlap",
            rng.choice(["layer", "x", "", "none", "stage\n"]),
            "--solver",
            rng.choice(["auto", "dp", "brute", "heuristic", "zzz"]),
        ],
        lambda: ["plan", scen, "--objective", rng.choice(["ttft", "e2e", "tpot", "x"]), "--json"],
        lambda: [
            "model-info",
            "--catalog",
            rng.choice(["llama-3.2-1b", "nope", ""]),
            "--prompt-tokens",
            rng.choice(NUMBERS),
            "--new-tokens",
            rng.choice(NUMBERS),
        ],
        lambda: ["model-info", rng.choice(["llama-3.2-1b", str(c.ckpt), scen, "/nonexistent", "/dev/null", "/"])],
        lambda: ["model-info", "--checkpoint", str(c.ckpt), "--dtype", rng.choice(["float32", "q4_k_m", "x", ""])],
        lambda: [
            "run",
            "--local",
            str(c.ckpt_scenario),
            "--checkpoint",
            str(c.ckpt),
            "--timeout",
            rng.choice(NUMBERS),
            "--write-spec",
            str(c.scratch("spec.json")),
        ],
        lambda: [
            "run",
            "--local",
            str(c.ckpt_scenario),
            "--checkpoint",
            str(c.ckpt),
            "--threads",
            rng.choice(NUMBERS),
            "--new-tokens",
            rng.choice(NUMBERS),
            "--compute-clock",
            rng.choice(["cpu", "wall", "x"]),
            "--write-spec",
            str(c.scratch("spec.json")),
        ],
        lambda: [
            "run",
            str(c.ckpt_scenario),
            "--checkpoint",
            str(c.ckpt),
            "--plan",
            rng.choice(
                [
                    "a[0-1] > b[2-3]",
                    "a[0-1.5] > b[2-3]",
                    "a[0-9]",
                    "optimal/x",
                    "uniform/none",
                    "a[0-1] > a[2-3]",
                    ">" * 300,
                    "a[" + "9" * 5000 + "-1]",
                    "x" * 10_000,
                ]
            ),
            "--write-spec",
            str(c.scratch("spec.json")),
        ],
        lambda: [
            rng.choice(["plan", "show", "compare", "sweep", "report", "model-info", "bogus"]),
            rng.choice(["--help", "--nope", "", "-", "--json", "x" * 3000]),
        ],
        lambda: [
            "scenario",
            "random",
            "--devices",
            rng.choice(NUMBERS),
            "--seed",
            rng.choice(NUMBERS),
            "--out",
            str(c.scratch("r.yaml")),
        ],
    ]
    while True:
        yield "cli-args", rng.choice(templates)()


FAMILIES: dict[str, Callable[[random.Random, Corpus], Iterator[Case]]] = {
    "scenario": scenario_cases,
    "plan": plan_cases,
    "checkpoint": checkpoint_cases,
    "trace": trace_cases,
    "cli": cli_cases,
}


def cases(seed: int, c: Corpus, counts: dict[str, int]) -> Iterator[Case]:
    """``counts[family]`` cases of each family, interleaved, from one seed."""
    rng = random.Random(seed)
    gens = {name: FAMILIES[name](random.Random(rng.random()), c) for name in counts}
    left = dict(counts)
    while any(left.values()):
        for name, gen in gens.items():
            if left[name]:
                left[name] -= 1
                yield next(gen)
