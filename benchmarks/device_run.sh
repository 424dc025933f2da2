#!/usr/bin/env bash
# Every benchmark on an accelerator, in one prepared run of under 10 minutes.
#
# Run from the repository root on a machine whose python3 has a GPU build of jax (and optax):
#     OUT=/some/folder bash benchmarks/device_run.sh
# Each benchmark writes its Markdown table to $OUT/<name>.md (default folder: benchmarks/out),
# ready for benchmarks/RESULTS.md.  Every step has its own time limit, so one slow step
# cannot take the others' time; a step that fails is reported and the run goes on.
# dynamax and hmmlearn are timed only where installed (carry them as wheels if wanted).
set -uo pipefail
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

run() {  # run NAME SECONDS COMMAND...: tee the output to $out/NAME.md, report the status
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.md"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started))s"
}

run devices 30 "$python" -c "import jax; print(jax.__version__, jax.devices())"
# 10M float32 parameters in 4 leaves (issue 2's tree); 20 donated steps per timed repeat so
# that microsecond kernels are not hidden behind dispatch; every optimizer and the wrappers
run optimizers 150 "$python" benchmarks/optimizers.py --number 20 --repeats 5 --rounds 3
run mlp 50 "$python" benchmarks/mlp.py --rounds 5 --steps 50 --no-torch
# issue 12's transformer row: 4 layers, d=256, sequence 128, batch 32, AdamW
run transformer 90 "$python" benchmarks/mlp.py --model transformer --rounds 5 --transformer-steps 10 --no-torch
run hmm 85 "$python" benchmarks/hmm.py
run hmm_float32 45 "$python" benchmarks/hmm.py --quick --float32
run hmm_fit 30 "$python" benchmarks/hmm_fit.py
# issue 14's batch sweep (float32, K = 8 and 32, B up to 4096; hmmlearn left out: it runs on
# the host CPU); the GPU targets: batched inference >= 20x the 2-core CPU at B = 4096
run hmm_batch 100 "$python" benchmarks/hmm_batch.py --dtypes float32 --states 8 32 --repeats 3 --hmmlearn-max-steps 0
