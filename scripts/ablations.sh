#!/usr/bin/env bash
# The paper's ablations at small scale, with 3 seeds per point, and MemoryFormer against dense at
# equal cost, on real text (the Python 3.11 docs, 4000 SentencePiece pieces; see
# scripts/python_docs_dataset.sh). docs/experiments.md reports what it writes: every run's CSV
# curve and final JSON, the summary table (OUT/summary.md) and plots (OUT/*.png).
#
#   scripts/ablations.sh [--steps N] [--out DIR] [--only NAME[,NAME...]] [--seeds "1 2 3"] [--list]
#
# Defaults: 200 steps, build/release/ablations. A run whose JSON is already in OUT is kept, so an
# interrupted script continues where it stopped, and --only runs a subset (--list names them).
set -euo pipefail
cd "$(dirname "$0")/.."

steps=200 out=build/release/ablations only="" seeds="1 2 3" list=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="${2:?--steps needs a count}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --only) only="${2:?--only needs point names}"; shift 2 ;;
    --seeds) seeds="${2:?--seeds needs a list}"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "ablations.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "ablations.sh: --steps '$steps': expected a positive integer" >&2; exit 2; }

# The fixed shape: d 160 is the smallest width that tau 4, 8 and 10 all divide with 4 heads of
# an even rotary share. The MemoryFormer baseline: tau 8, e 2, score paper, temperature 1, lr 3e-2
# (the best of the subword sweep); each point changes what its flags say.
shape=(--layers 2 --d-model 160 --heads 4 --seq 128 --batch 16)
baseline=(--arch memoryformer --tau 8 --expand-bits 2 --lr 3e-2)
points=(
  "baseline|"
  "tau4|--tau 4"
  "tau10|--tau 10"
  "e0|--expand-bits 0"
  "e1|--expand-bits 1"
  "e3|--expand-bits 3"
  "gelu|--memory-block-activation gelu"
  "lr1e-3|--lr 1e-3"
  "lr3e-3|--lr 3e-3"
  "lr1e-2|--lr 1e-2"
  "lr1e-1|--lr 1e-1"
  # MemoryFormer against dense: the dense model of the same shape for as many steps, and for as
  # many seconds as the baseline took (its steps set below); d 104 about equals the baseline's
  # multiply-adds per token (blocks, attention at seq 128 and the 4000-wide LM head: 729K against
  # 756K), d 640 its parameters (15.0M against 14.8M). Dense learning rate: the subword sweep's best.
  "dense_equal_steps|--arch dense --lr 3e-3"
  "dense_equal_time|--arch dense --lr 3e-3"
  "dense_equal_flops|--arch dense --lr 3e-3 --d-model 104 --heads 4"
  "temperature0.5|--temperature 0.5"
  "temperature2|--temperature 2"
  "score_l1|--score l1"
  "output_projection|--output-projection memory"
  "rms_eps_after_root|--rms-form eps_after_root"
  "released_numerics|--score l1 --rms-form eps_after_root --embedding-init small_init"
  "dense_equal_params|--arch dense --lr 3e-3 --d-model 640 --heads 8"
)
if [[ $list -eq 1 ]]; then
  for p in "${points[@]}"; do echo "${p%%|*}: ${p#*|}"; done
  exit 0
fi

bash scripts/python_docs_dataset.sh "$out"
tool=build/release/tools/memoryformer
json_field() { tail -n 1 "$1" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
wanted() { [[ -z "$only" || ",$only," == *",$1,"* ]]; }

for point in "${points[@]}"; do
  name="${point%%|*}" flags="${point#*|}"
  wanted "$name" || continue
  for seed in $seeds; do
    run="$out/${name}_seed$seed"
    if [[ -s "$run.json" ]] && json_field "$run.json" val_bpb > /dev/null 2>&1; then continue; fi
    n=$steps
    if [[ $name == dense_equal_time ]]; then
      # As many steps as the dense model makes while the baseline makes its steps, from the ratio
      # of their training throughputs, measured once back to back (OUT/throughput.txt) so that
      # both see the same machine.
      if [[ ! -s "$out/throughput.txt" ]]; then
        rates=""
        for arch_flags in "" "--arch dense --lr 3e-3"; do
          # shellcheck disable=SC2086
          "$tool" train --data "$out/data" "${shape[@]}" "${baseline[@]}" $arch_flags --steps 40 --eval-every 40 \
            --eval-tokens 2048 --seed 1 --out "$out/model.safetensors" --log "$out/calibration.csv" \
            > "$out/calibration.json" 2> /dev/null
          rates="$rates $(json_field "$out/calibration.json" tokens_per_s)"
        done
        rm -f "$out/model.safetensors" "$out/model.safetensors.optim" "$out/calibration.csv" "$out/calibration.json"
        echo "$rates" > "$out/throughput.txt"
      fi
      read -r mf_rate dense_rate < "$out/throughput.txt"
      n=$(/usr/bin/python3 -c "print(max(10, round($steps * $dense_rate / $mf_rate)))")
      echo "equal time: MemoryFormer $mf_rate tokens/s, dense $dense_rate tokens/s (OUT/throughput.txt)"
    fi
    echo "run: $name seed $seed, $n steps: ${flags:-baseline}"
    # shellcheck disable=SC2086  # flags are words
    "$tool" train --data "$out/data" "${shape[@]}" "${baseline[@]}" $flags --steps "$n" \
      --eval-every $(( n / 4 > 0 ? n / 4 : 1 )) --seed "$seed" --out "$out/model.safetensors" \
      --log "$run.csv" > "$run.json.part" 2> "$run.log"
    mv "$run.json.part" "$run.json"
    rm -f "$out/model.safetensors" "$out/model.safetensors.optim"
    tail -n 1 "$run.json"
  done
done
/usr/bin/python3 scripts/plot_ablations.py "$out"
