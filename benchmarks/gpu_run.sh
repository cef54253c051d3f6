#!/usr/bin/env bash
# One prepared GPU session (issue 11): everything a lent GPU's ~15 minutes should measure, into one folder.
#
#   bash benchmarks/gpu_run.sh OUT_DIR          # on the GPU machine (the device tool: OUT_DIR=$OUT)
#   bash benchmarks/gpu_run.sh OUT_DIR --dry    # here, on CPU: every step's plumbing, at toy size, in ~1 min
#
# Steps (each under its own `timeout`, so one slow step cannot eat the others' time; each step's output is in
# OUT_DIR/gpu_run.log, its wall time in OUT_DIR/timings.tsv):
#   0. install: the GPU image has torch + lightning but not litgpt / jsonargparse / submitit and cannot download;
#      wheels for them are carried in .gpu_wheels/ (made here with `bash benchmarks/gpu_run.sh --wheels`)
#   1. the card: nvidia-smi, torch's device name and version            → OUT_DIR/env.txt
#   2. the corpus of replicate.yaml's `small` scale: data/code-bpe4096 (stdlib + site-packages + C headers, BPE
#      4096, ≈ 80M training tokens), built there on 16 cores if missing
#   3. benchmarks/throughput.py --device cuda (trainer vs hand loop vs litgpt, MFU)  → OUT_DIR/throughput.txt
#   4. the `small` replicate at its main d, seed 0 (G_stack g = 2, G↑zero, scratch; their cooldowns), then the
#      rest of seed 0 as time allows; `stacking report` → OUT_DIR/results.csv, report.md, replicate-small.tar.gz
#      (every run's metrics.csv, summary.json, config.yaml and the report's figures)
#   5. benchmarks/paper_rehearsal.py --device cuda: stack-410m at its true shapes through `stacking sweep
#      scaling.yaml --scale paper` (bf16-mixed, compile, micro-batch 8; SentencePiece 32000 data built there),
#      base → G_stack → grown, SIGKILL after the grown run's first last.ckpt, resumed   → OUT_DIR/rehearsal/
#      (rehearsal.json: sec/step, peak RSS, FLOPs, resume checks; docs/paper_scale.md)
# Budgets (seconds) can be changed with THROUGHPUT_S, SWEEP_S, DATA_S, REPORT_S, REHEARSAL_S. The whole call stops
# at DEADLINE_S (default 570: the device tool kills a command at 600 s): each step's limit is cut to what is left and
# a step with under 20 s left is skipped. The steps' limits add up to more than one call, so split a session with
# STEPS (default "install data throughput sweep report rehearsal"), e.g. two calls back to back on the warm machine:
#   STEPS="install data throughput sweep" bash benchmarks/gpu_run.sh $OUT
#   STEPS="install report rehearsal" bash benchmarks/gpu_run.sh $OUT
set -uo pipefail
DEADLINE_S=${DEADLINE_S:-570}
STEPS=" ${STEPS:-install data throughput sweep report rehearsal} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }

if [ "${1:-}" = "--wheels" ]; then  # here, with internet to the package registries: the wheels the GPU image lacks
    rm -rf .gpu_wheels && mkdir -p .gpu_wheels
    python3 -m pip download -q --no-deps -d .gpu_wheels litgpt==0.5.13 "jsonargparse[signatures]==4.41.0" \
        docstring-parser typeshed-client submitit "lightning>=2.6.1,<2.7" sentencepiece zstandard
    grep -qx '/.gpu_wheels/' .git/info/exclude 2>/dev/null || echo '/.gpu_wheels/' >> .git/info/exclude
    ls .gpu_wheels
    exit 0
fi

OUT=${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [--dry] | --wheels}
DRY=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_run.log"
: > "$OUT/timings.tsv"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD… : run with a time limit, log output, record wall time and exit status
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS left=$((DEADLINE_S - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "=== [$(date +%T)] $name skipped: ${left}s left of DEADLINE_S=$DEADLINE_S" | tee -a "$LOG"
        printf '%s\t0\tskipped\n' "$name" >> "$OUT/timings.tsv"
        return 0
    fi
    echo "=== [$(date +%T)] $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" | tee -a "$OUT/timings.tsv"
    return 0
}

if [ "$DRY" = "--dry" ]; then
    PY=${PY:-python}
    DATA=data/stdlib-bytes; DATA_ARGS=(--out "$DATA" --tokenizer bytes)
    SCALE=demo; ONLY='*G_stack-depth-g2-d327680-s0*'; SWEEP_ARGS=(--dry-run)
    TP_ARGS=(--device cpu --smoke --compile 0)   # torch.compile on CPU spends minutes in the C++ compiler
    THROUGHPUT_S=${THROUGHPUT_S:-600}; SWEEP_S=${SWEEP_S:-300}; DATA_S=${DATA_S:-300}
    REHEARSAL_ARGS=(--dry --steps 6); REHEARSAL_S=${REHEARSAL_S:-300}   # toy size on CPU, bytes data: ~1 min
else
    PY=${PY:-python3}
    DATA=data/code-bpe4096; DATA_ARGS=(--out "$DATA" --sources stdlib site-packages c-headers)
    SCALE=small; ONLY='*-s0-*'; SWEEP_ARGS=(--jobs 1)
    TP_ARGS=(--device cuda)
    THROUGHPUT_S=${THROUGHPUT_S:-150}; SWEEP_S=${SWEEP_S:-330}; DATA_S=${DATA_S:-240}
    # sentencepiece is a dependency (carried in .gpu_wheels); without it the rehearsal's data is stacking's BPE 32000
    REHEARSAL_ARGS=(--device cuda --threads 8 --tokenizer spm); REHEARSAL_S=${REHEARSAL_S:-360}
    if wanted install && ! "$PY" -c "import litgpt, jsonargparse, submitit, stacking" 2>/dev/null; then
        step install 120 bash -c "'$PY' -m pip install -q --no-index --no-deps .gpu_wheels/*.whl && \
            '$PY' -m pip install -q --no-deps --no-build-isolation -e ."
    fi
fi

{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; "$PY" -c "import torch, platform; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', \
'python', platform.python_version())"; git rev-parse HEAD 2>/dev/null; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$LOG"

wanted data && { [ -f "$DATA/meta.json" ] || step data "$DATA_S" "$PY" -m stacking data "${DATA_ARGS[@]}"; }
wanted throughput && step throughput "$THROUGHPUT_S" bash -c \
    "'$PY' benchmarks/throughput.py ${TP_ARGS[*]} > '$OUT/throughput.txt' 2>&1"
# the main d first (G_stack g = 2, G↑zero, scratch: --only keeps their bases), then the rest of seed 0
wanted sweep && for only in '*-G_stack-depth-g2-*-s0-*' '*-G_zero-depth-g2-*-s0-*' 'scratch-*-s0-*' "$ONLY"; do
    [ "$DRY" = "--dry" ] && only=$ONLY
    left=$((SWEEP_S - $(awk -F'\t' '$1 ~ /^sweep/ {s += $2} END {print s + 0}' "$OUT/timings.tsv")))
    [ "$left" -gt 20 ] || break
    step "sweep $only" "$left" "$PY" -m stacking sweep experiments/grids/replicate.yaml --scale "$SCALE" \
        --only "$only" "${SWEEP_ARGS[@]}"
    [ "$DRY" = "--dry" ] && break
done
SWEEP=sweeps/replicate-$SCALE
[ "$DRY" = "--dry" ] && SWEEP=${DRY_SWEEP:-sweeps/lr-scratch-demo}  # a dry run trains nothing: package a finished sweep
if wanted report && [ -f "$SWEEP/plan.json" ]; then
    step report "${REPORT_S:-240}" "$PY" -m stacking report "$SWEEP"
    cp "$SWEEP/results.csv" "$OUT/" 2>/dev/null
    cp "$SWEEP/report/report.md" "$OUT/" 2>/dev/null
    (cd "$SWEEP" && find . \( -name metrics.csv -o -name summary.json -o -name config.yaml -o -path './report/*' \) \
        -print0 | tar --null -czf "$OUT/replicate-$SCALE.tar.gz" -T -)
fi
"$PY" -c "import sentencepiece" 2>/dev/null || [ "$DRY" = "--dry" ] || REHEARSAL_ARGS+=(--tokenizer bpe)
wanted rehearsal && step rehearsal "$REHEARSAL_S" "$PY" benchmarks/paper_rehearsal.py "${REHEARSAL_ARGS[@]}" \
    --out "$OUT/rehearsal"
R="$OUT/rehearsal/sweep"  # GBs of weights and the dataset are deleted: only the numbers and logs come back
rm -rf "$R/grown" "$R/runs"/*/checkpoints "$R/runs"/*/*.ckpt "$R/runs"/*/*.tmp "$OUT/rehearsal"/data-* 2>/dev/null
echo "=== [$(date +%T)] done; $OUT:" | tee -a "$LOG"
ls -la "$OUT" | tee -a "$LOG"
