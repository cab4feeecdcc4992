#!/usr/bin/env bash
# GPU check for in2r-graph, for a machine with one or more NVIDIA GPUs and no
# network. Usage, from the repository root:
#
#   bash benchmarks/gpu/check.sh OUT_DIR [WHEEL_DIR]
#
# It installs the project into a virtual environment (from WHEEL_DIR with
# --no-index when given, so no network is needed; otherwise from the
# package index), then within about 8 minutes:
#   1. trains the Flickr8k main job on GPU 0 (12 epochs, 40 % caption noise,
#      the fixed noise file) and records its summary and wall time;
#   2. runs the neighbour-search benchmark on the GPU (FAISS GPU when the
#      installed faiss has GPU support, exact torch search otherwise);
#   3. when two or more GPUs are visible, runs a 2-process torchrun job with
#      NCCL on a slice of Flickr8k and records both ranks' state files.
# Everything it produces goes under OUT_DIR: logs, summaries, nvidia-smi.
set -uo pipefail
out=${1:?usage: check.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
data_root=${IN2R_GRAPH_DATA_ROOT:-../shared/data}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$out/check.log"; }

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed: no GPU driver?"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

if [ ! -x .venv-gpu/bin/python ]; then
  python3 -m venv --system-site-packages .venv-gpu
  if [ -n "$wheels" ]; then
    .venv-gpu/bin/pip install --quiet --no-index --find-links "$wheels" -e ".[test]" >> "$out/install.log" 2>&1
  else
    .venv-gpu/bin/pip install --quiet -e ".[test]" >> "$out/install.log" 2>&1
  fi
fi
py=.venv-gpu/bin/python
gpus=$($py -c "import torch; print(torch.cuda.device_count())")
log "visible GPUs: $gpus; torch $($py -c 'import torch; print(torch.__version__, torch.version.cuda)')"
$py -c "import faiss; print('faiss', faiss.__version__, 'GPUs', faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0)" >> "$out/check.log" 2>&1

log "1. main job on Flickr8k, GPU 0"
start=$(date +%s)
timeout 300 .venv-gpu/bin/in2r-graph train --data-root "$data_root" --dataset flickr8k_precomp \
  --noise-file "$data_root/flickr8k_precomp/noise/train_cap2img_noise0.4_seed1234.npy" \
  --set train.device=cuda:0 --set train.progress=false --out-dir "$out/runs" --run-name flickr8k-gpu \
  > "$out/main_job.log" 2>&1
log "main job exit $? after $(( $(date +%s) - start )) s"

log "2. search benchmark on the GPU"
if [ -f benchmarks/perf/bench_search.py ]; then
  timeout 120 $py benchmarks/perf/bench_search.py --quick --device cuda --out "$out/search.json" > "$out/search.log" 2>&1
  log "search benchmark exit $?"
fi

if [ "$gpus" -ge 2 ]; then
  log "3. two-process NCCL run"
  timeout 180 .venv-gpu/bin/torchrun --standalone --nproc-per-node 2 -m in2r_graph train \
    --data-root "$data_root" --dataset flickr8k_precomp --set data.max_train_pairs=5000 --epochs 3 \
    --set train.progress=false --out-dir "$out/runs" --run-name ddp-2gpu > "$out/ddp.log" 2>&1
  log "two-process run exit $?"
else
  log "3. skipped: fewer than 2 GPUs"
fi
log "done; results in $out"
