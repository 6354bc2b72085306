#!/usr/bin/env bash
# The fidelity case (docs/runtime.md#fidelity-outside-the-benchmark) through the CLI, as the README's quick start
# runs it: profile-host with GAP (default: its own default, the devices' idle; GAP=0: the old back-to-back
# profile), then each plan twice, cold. Usage: [GAP=0] [PY=.venv/bin/python] scripts/fidelity_cli.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
cp() { "$PY" -m coldpipe "$@"; }
[ -f out/fidelity-qwen2/config.json ] || cp make-checkpoint --config qwen2.5-0.5b --layers 8 --hidden 512 --heads 8 \
    --kv-heads 2 --intermediate 1536 --vocab 8192 --out out/fidelity-qwen2
cp profile-host --checkpoint out/fidelity-qwen2 --calibrate examples/fidelity-qwen2.yaml --scenario-out out/fid-cal.json \
    --reps 3 --out out/fid-host.json ${GAP:+--gap "$GAP"}
for plan in optimal/layer optimal/none optimal/layer optimal/none; do
    echo "plan $plan"
    cp run out/fid-cal.json --local --checkpoint out/fidelity-qwen2 --host-profile out/fid-host.json --plan "$plan" \
        | grep -E "TTFT"
done
uptime
