#!/usr/bin/env bash
# Runs the burn benchmark (release) and its PyTorch peer with the same thread count, alternating,
# ROUNDS times (default 3), and prints the best figure of each side and the ratio burn / PyTorch.
# Best-of rather than median across rounds: on a shared 2-core machine a competing process only
# ever slows a run down, and PyTorch's OpenMP threads suffer from it far more than rayon's.
#
#   crates/tern-model/bench/run.sh                 # everything
#   crates/tern-model/bench/run.sh infer           # only figures whose name contains "infer"
#   SKIP_TORCH=1 ROUNDS=1 crates/tern-model/bench/run.sh
#
# PyTorch goes into a throwaway virtual environment under /tmp, never into the project. From
# PyPI's default index `pip install torch` pulls the CUDA build (~2.7 GB download, ~2 minutes
# here); it runs on the CPU all the same.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
threads="${THREADS:-$(nproc)}"
rounds="${ROUNDS:-3}"
export RAYON_NUM_THREADS="$threads"
out="$(mktemp -d /tmp/tern-model-bench.XXXXXX)"
trap 'rm -rf "$out"' EXIT

(cd "$root" && cargo bench -p tern-model --bench model --no-run)
if [[ -z "${SKIP_TORCH:-}" ]]; then
  venv="${TORCH_VENV:-/tmp/tern-torch-venv}"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "== installing torch into $venv (throwaway)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet torch
  fi
fi

: > "$out/burn.txt"
: > "$out/torch.txt"
for round in $(seq "$rounds"); do
  echo "== round $round/$rounds: burn (release, $threads threads), load $(cut -d' ' -f1 /proc/loadavg)"
  (cd "$root" && cargo bench -q -p tern-model --bench model -- "$@") | tee -a "$out/burn.txt"
  if [[ -z "${SKIP_TORCH:-}" ]]; then
    echo "== round $round/$rounds: PyTorch (CPU, $threads threads)"
    THREADS="$threads" "$venv/bin/python" -W ignore "$here/torch_peer.py" "$@" | tee -a "$out/torch.txt"
  fi
done

echo
echo "== best of $rounds rounds (rows/s); infer-burn is compared with PyTorch's infer"
python3 - "$out/burn.txt" "$out/torch.txt" <<'PY'
import re, sys
def read(path):
    d = {}
    for line in open(path):
        m = re.match(r"^([\w-]+ batch=\d+) rows/s=(\d+)", line)
        if m:
            d[m.group(1)] = max(d.get(m.group(1), 0.0), float(m.group(2)))
    return d
burn, torch = read(sys.argv[1]), read(sys.argv[2])
print(f"{'figure':<24}{'burn':>12}{'pytorch':>12}{'burn/pytorch':>14}")
for k in burn:
    t = torch.get(k.replace("infer-burn", "infer"))
    ratio = f"{burn[k] / t:.2f}" if t else "-"
    print(f"{k:<24}{burn[k]:>12,.0f}{(t or 0):>12,.0f}{ratio:>14}")
PY
