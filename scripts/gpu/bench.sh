#!/usr/bin/env bash
# The attention / decode benchmarks on an NVIDIA machine, with the PyTorch SDPA peer in the same run. It expects a
# built dist/ and a .gpu/ folder whose enter.sh puts node (and python with torch, for the peer) on the PATH; from
# the project root:   source .gpu/enter.sh && bash scripts/gpu/bench.sh
# Writes logs and JSON under $OUT (default ./gpu-bench-out) and prints a short table last. Builds nothing there.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-bench-out}
mkdir -p "$OUT"
[ -f dist/cli/main.js ] || { echo "dist/cli/main.js missing: build here and carry dist/" >&2; exit 1; }
command -v node >/dev/null || { echo "node not on PATH: source .gpu/enter.sh first" >&2; exit 1; }
LIMIT=${LIMIT:-200} # seconds per step, so that one stuck step cannot eat the whole lease
step() { # name, command...
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/steps.txt"
  local t0=$SECONDS
  timeout "$LIMIT" "$@" >"$OUT/$name.md" 2>"$OUT/$name.err"
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
  [ $rc -eq 0 ] || tail -n 5 "$OUT/$name.err"
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"$OUT/nvidia-smi.txt" 2>&1
step gpu node dist/cli/main.js gpu --json
step attention node dist/cli/main.js bench attention --shape llama3-8b --contexts 4096,32768,65536,131072 \
  --prefill-contexts 4096,16384,32768 --prefill-sample 8 --repeat 10 --out "$OUT/attention-llama3-8b.json"
step decode node dist/cli/main.js bench decode --synthetic llama3-attn --contexts 4096,32768,131072 \
  --fill-tokens 32768 --budget 4096 --steps 16 --repeat 5 --out "$OUT/decode-llama3-attn.json"
# the host cost of a decode step: 32 layers of Llama-3-8B's head layout at narrow widths
step step-narrow node dist/cli/main.js bench step --contexts 4096,130944 --batch 1,8 --sampling greedy,top-p \
  --steps 16 --warmup 4 --out "$OUT/step-llama3-8b-narrow.json"
# the whole decode step at Llama-3-8B's real widths, 4 layers of bf16 (~2.8 GB written once under $TMPDIR), contexts
# 4k and 128k with sparse decode (budget 4096), the KV of every position really there (fill pages = context / 64)
step step-real node dist/cli/main.js bench step --preset llama3-8b --layers 4 --contexts 4096,130944 --batch 1,8 \
  --sampling greedy,top-p --steps 16 --warmup 4 --fill-pages 2048 --max-seqs 8 \
  --out "$OUT/step-llama3-8b-4l.json"
if python3 -c 'import torch' 2>/dev/null; then
  step sdpa python3 scripts/gpu/sdpa_peer.py --contexts 4096,32768,65536,131072 --prefill 4096,16384,32768 \
    --out "$OUT/sdpa-peer.json"
else
  echo "SKIPPED the PyTorch SDPA peer: python3 cannot import torch on this machine" | tee "$OUT/sdpa.md"
fi
for f in gpu attention decode step-narrow step-real sdpa; do [ -f "$OUT/$f.md" ] && { echo; echo "### $f"; cat "$OUT/$f.md"; }; done
echo
echo "### summary (one layer, llama3-8b attention shape, ms)"
python3 scripts/gpu/sdpa_peer.py --summary "$OUT/attention-llama3-8b.json" "$OUT/sdpa-peer.json" || true
