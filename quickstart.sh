#!/usr/bin/env bash
# The README's first command: from a fresh machine (Python 3.10+ and pip) to a tiny TinyGPT-V
# trained from scratch through all four stages, and its scores on the held-out synthetic split.
#
#   bash quickstart.sh            # skips what is already done (data, a stage whose checkpoint exists)
#   bash quickstart.sh --force    # regenerates the data and retrains every stage
#   bash quickstart.sh --recipe tiny_llava   # the second tiny recipe (SigLIP-like + MLP + Qwen2-like)
#
#   .venv + install (scripts/setup.sh) -> synthetic corpus + tokenizer (data/synthetic)
#   -> train_configs/tiny/stage{1,2,3,4}.yaml (output/tiny/stageN) -> eval_configs/tiny.yaml
#   (output/tiny/eval) -> a table: VQA accuracy, grounding Acc@0.5, caption CIDEr.
# 7-10 minutes on a 2-core CPU (417-564 s measured, by how busy the host was; + pip installs on a fresh
# machine); README and docs/performance.md have the numbers.
set -euo pipefail
cd "$(dirname "$0")"

FORCE=0
RECIPE=tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --recipe) RECIPE="${2:-}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "quickstart.sh: unknown argument '$1' (use --force, --recipe NAME or --help)" >&2; exit 2 ;;
  esac
  shift
done
# A recipe = train_configs/<recipe>/stage1.yaml, stage2.yaml, ... (output/<recipe>/stageN) + eval_configs/<recipe>.yaml.
STAGES=(train_configs/"$RECIPE"/stage[0-9].yaml)
if [ ! -f "${STAGES[0]}" ] || [ ! -f "eval_configs/$RECIPE.yaml" ]; then
  echo "quickstart.sh: --recipe '$RECIPE' needs train_configs/$RECIPE/stage1.yaml ... and eval_configs/$RECIPE.yaml" >&2
  exit 2
fi

# The corpus the tiny recipe is tuned for (train_configs/tiny/*.yaml read 48 px images).
DATA=data/synthetic
DATA_ARGS=(--out "$DATA" --train-images 4000 --eval-images 200 --image-size 48 --seed 0)
PY=.venv/bin/python
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other work, spinning
# threads made training ~15x slower here; on an idle machine it costs nothing measurable.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export TOKENIZERS_PARALLELISM=false

STEP="starting"
trap 'echo; echo "quickstart.sh: FAILED during: $STEP (see the messages above)" >&2' ERR
START=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "")
declare -A SECONDS_OF CPU_OF
step() { STEP="$1"; echo; echo "=== $1"; }
elapsed() { echo $(( $(date +%s) - $1 )); }
# CPU seconds (user + sys) of the finished children: with the wall time it tells a busy machine
# (wall >> CPU) from a slow step (python -m benchmarks.quickstart reports both).  `times` must run
# in this shell (a $(...) subshell has no children yet), hence the file.
TIMES_FILE=$(mktemp)
trap 'rm -f "$TIMES_FILE"' EXIT
cpu_now() {
  times > "$TIMES_FILE"
  CPU_NOW=$(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%.1f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$TIMES_FILE")
}
begin() { BEGAN=$(date +%s); cpu_now; BEGAN_CPU=$CPU_NOW; }
finish() {  # finish NAME: the wall and CPU seconds since `begin`
  SECONDS_OF[$1]=$(elapsed "$BEGAN"); cpu_now
  CPU_OF[$1]=$(awk -v a="$BEGAN_CPU" -v b="$CPU_NOW" 'BEGIN { printf "%.1f", b - a }')
}

step "environment: scripts/setup.sh (.venv)"
begin
bash scripts/setup.sh
finish setup

step "synthetic data: $DATA"
begin
# Complete = the manifest (written last) exists, comes from this generator version and records
# exactly these arguments.
if [ "$FORCE" = 0 ] && "$PY" - "$DATA" "${DATA_ARGS[@]}" <<'EOF'
import ast, json, sys
# The generator's version, read from its source: importing tinygpt (torch, transformers) took ~8 s.
source = ast.parse(open("tinygpt/datasets/synthetic/generate.py").read())
GENERATOR = next(ast.literal_eval(node.value) for node in source.body if isinstance(node, ast.Assign)
                 and [getattr(t, "id", None) for t in node.targets] == ["GENERATOR"])
out, args = sys.argv[1], sys.argv[2:]
want = {k.lstrip("-").replace("-", "_"): v for k, v in zip(args[::2], args[1::2]) if k != "--out"}
try:
    manifest = json.load(open(f"{out}/manifest.json"))
    have = manifest["arguments"] if manifest.get("generator") == GENERATOR else {}
except (OSError, ValueError, KeyError):
    sys.exit(1)
sys.exit(0 if have and all(str(have.get(k)) == v for k, v in want.items()) else 1)
EOF
then
  echo "$DATA is complete (manifest.json matches); skipping generation"
else
  rm -rf "$DATA"
  report=$("$PY" dataset/make_synthetic.py "${DATA_ARGS[@]}")
  echo "${report%%$'\n'*}"  # its first line (counts); the layout is in dataset/README.md
fi
finish data

# Frozen-tower stages cache the towers' outputs there (model.feature_cache: auto); entries of an
# earlier run's towers would never be read again.
[ "$FORCE" = 1 ] && rm -rf "output/$RECIPE/feature_cache"
# The stages not yet done train one after another in ONE process (`train.py --cfg-path a b ...`:
# the imports, ~9 s here, are paid once; the weights are those of one process per stage).  Each
# stage writes its wall and CPU seconds to <output_dir>/train_summary.json.
TODO=()
for n in $(seq 1 ${#STAGES[@]}); do
  out=output/$RECIPE/stage$n
  if [ "$FORCE" = 0 ] && [ -f "$out/checkpoint_final.safetensors" ]; then
    echo "$out/checkpoint_final.safetensors exists; skipping stage $n (--force retrains)"
  else
    rm -rf "$out"  # a half-finished run would append to its metrics
    TODO+=("train_configs/$RECIPE/stage$n.yaml")
  fi
done
step "training: train.py --cfg-path ${TODO[*]:-(nothing to do)}"
begin
if [ ${#TODO[@]} -gt 0 ]; then
  "$PY" train.py --cfg-path "${TODO[@]}"
fi
finish train

step "evaluation: eval_configs/$RECIPE.yaml -> output/$RECIPE/eval"
begin
# --restart: the answers are always those of the checkpoint just trained.
"$PY" eval_scripts/evaluate.py --cfg-path "eval_configs/$RECIPE.yaml" --restart --no-progress
finish eval

STEP="summary"
TOTAL=$(elapsed "$START")
# The run's record (python -m benchmarks.quickstart reads it): per step wall and CPU seconds, the
# scores, the commit (+dirty) and the machine.
TIMES=""
for k in setup data eval; do
  TIMES="$TIMES\"$k\": {\"wall_s\": ${SECONDS_OF[$k]}, \"cpu_s\": ${CPU_OF[$k]}}, "
done
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT-dirty"; fi
echo
echo "=== $RECIPE recipe, trained from scratch on $DATA (held-out split: 200 images)"
"$PY" - "output/$RECIPE/eval/results.json" "output/$RECIPE/quickstart.json" "{${TIMES%, }}" "$TOTAL" "$COMMIT" "$FORCE" "$LOAD_AT_START" "${#STAGES[@]}" "${TODO[@]}" <<'EOF'
import json, os, platform, sys, time
from tinygpt.common.atomic import write_text
results = json.load(open(sys.argv[1]))["results"]
steps, output = json.loads(sys.argv[3]), os.path.dirname(sys.argv[2])
trained = sys.argv[9:]  # the stage configs this run trained; the others were skipped (0 s)
for n in range(1, int(sys.argv[8]) + 1):
    summary = os.path.join(output, f"stage{n}", "train_summary.json")
    ran = any(path.endswith(f"/stage{n}.yaml") for path in trained)
    steps[f"stage{n}"] = ({k: json.load(open(summary))[k] for k in ("wall_s", "cpu_s")} if ran
                          else {"wall_s": 0, "cpu_s": 0, "skipped": True})
steps = {k: steps.pop(k) for k in ("setup", "data", *sorted(k for k in steps if k.startswith("stage")), "eval")}
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
           platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
record = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": sys.argv[5], "forced": sys.argv[6] == "1",
          "cpu": cpu, "cpu_count": os.cpu_count(), "loadavg_at_start": sys.argv[7],
          "loadavg_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
          "steps": steps, "total_s": int(sys.argv[4]),
          "scores": {name: results[name]["overall"] for name in ("vqav2", "refcoco", "coco_caption") if name in results}}
write_text(sys.argv[2], json.dumps(record, indent=1) + "\n")
rows = [("vqav2", "VQA accuracy (synthetic VQAv2 split)"),
        ("refcoco", "grounding Acc@0.5 (synthetic RefCOCO val)"),
        ("coco_caption", "caption CIDEr (synthetic COCO captions)")]
print(f"| {'metric':<42} | {'score':>6} |  n  |")
print(f"|{'-' * 44}|{'-' * 8}|-----|")
for label, name in rows:
    r = results.get(label)
    score, n = (f"{r['overall']:6.2f}", r["n"]) if r else ("  --  ", "-")
    print(f"| {name:<42} | {score} | {n:>3} |")
print()
for n in range(1, int(sys.argv[8]) + 1):
    s = steps[f"stage{n}"]
    took = "skipped: done before" if s.get("skipped") else f"{s['wall_s']:.0f} s"
    print(f"stage {n}: {output}/stage{n}/checkpoint_final.safetensors   loss curve: {output}/stage{n}/loss_curve.png   ({took})")
EOF
echo "results: output/$RECIPE/eval/results.md, output/$RECIPE/eval/results.json   (evaluation ${SECONDS_OF[eval]} s)"
echo "time: setup ${SECONDS_OF[setup]} s, data ${SECONDS_OF[data]} s, total $TOTAL s ($(( TOTAL / 60 )) min $(( TOTAL % 60 )) s); record: output/$RECIPE/quickstart.json"
echo "chat with it: .venv/bin/python demo.py --cfg-path eval_configs/$RECIPE.yaml   (or add: --cli --image $DATA/eval/images/COCO_val2014_000001000001.jpg)"
