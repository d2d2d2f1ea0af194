#!/usr/bin/env bash
# Run bench suites as N local jobs (`sclft bench --shard I/N`) on one machine — e.g. 8 processes sharing one GPU,
# whose small 64 px batches leave it mostly idle — then merge each suite's shards with `sclft bench --report`.
#
#   bash scripts/bench_jobs.sh [--jobs N] [--deadline SECONDS] --out DIR SUITE [SUITE ...]
#
# Job I runs shard I/N of every SUITE in turn, into DIR/<suite>/shard_I; the merged tables, plots and
# summary.json are written to DIR/<suite>/merged. --deadline stops unfinished jobs after SECONDS (their
# finished runs still count; rerunning the same command resumes: finished runs are skipped by run id).
# The jobs share one frozen-prefix cache, DIR/cache. Each job gets cores/N CPU threads. SCLFT overrides the
# command (default: sclft).
set -uo pipefail
jobs=4 deadline=0 out="" suites=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --deadline) deadline="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    -*) echo "bench_jobs.sh: unknown option $1 (valid: --jobs N, --deadline SECONDS, --out DIR)" >&2; exit 2 ;;
    *) suites+=("$1"); shift ;;
  esac
done
if [ -z "$out" ] || [ ${#suites[@]} -eq 0 ] || ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || ! [[ "$deadline" =~ ^[0-9]+$ ]]; then
  echo "usage: bench_jobs.sh [--jobs N>=1] [--deadline SECONDS] --out DIR SUITE [SUITE ...]" >&2; exit 2
fi
sclft="${SCLFT:-sclft}"
name() { basename "${1%.yaml}"; }
threads=$(( $(nproc) / jobs )); [ "$threads" -ge 1 ] || threads=1
mkdir -p "$out"
pids=()
set -m  # each job in its own process group, so the deadline stops it with everything it started
for i in $(seq 1 "$jobs"); do
  (
    export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
    for s in "${suites[@]}"; do
      d="$out/$(name "$s")"; mkdir -p "$d"
      "$sclft" bench --suite "$s" --out "$d/shard_$i" --shard "$i/$jobs" --cache-dir "$out/cache" >"$d/shard_$i.log" 2>&1 \
        || echo "job $i: $(name "$s") exited $?" >&2
    done
  ) &
  pids+=($!)
done
if [ "$deadline" -gt 0 ]; then
  ( sleep "$deadline"; echo "bench_jobs.sh: deadline ${deadline}s reached, stopping unfinished jobs" >&2
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done ) &
  watcher=$!
fi
wait "${pids[@]}"
set +m
[ -n "${watcher:-}" ] && kill -- "-$watcher" 2>/dev/null
status=0
for s in "${suites[@]}"; do
  d="$out/$(name "$s")"
  if ! ls -d "$d"/shard_* >/dev/null 2>&1; then echo "== $(name "$s"): not reached"; status=1; continue; fi
  "$sclft" bench --suite "$s" --out "$d/merged" --report "$d"/shard_*/ >"$d/merged.log" 2>&1 || status=1
  echo "== $(name "$s"): $(ls "$d"/shard_*/experiments/*/metrics.json 2>/dev/null | wc -l) finished runs; report: $d/merged"
done
exit $status
