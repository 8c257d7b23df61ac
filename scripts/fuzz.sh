#!/usr/bin/env bash
# Coverage-guided fuzzing of what Sluice reads from outside (frames off the network,
# checkpoint metadata, state files and savepoint directories off disk), FUZZ_SECONDS per
# target (default 60). Any input that makes a target panic, leak, exceed the memory limit or
# run slow fails the script; libFuzzer writes it under core/fuzz/artifacts/<target>/. Commit
# such inputs under core/fuzz/regressions/<target>/: every run replays them first.
#
# Seeds: a short embedded run's checkpoint (real metadata and state files), so the fuzzer
# starts from valid files and mutates inward instead of discovering the magic bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# cargo-fuzz needs nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP lets the stable toolchain
# accept them, so no second toolchain is installed.
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-60}"
targets=(frame_decode checkpoint_metadata checkpoint_metadata_sealed state_file state_file_sealed savepoint_reader)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 >/dev/null
fi

seed_corpus() {
  local work corpus=core/fuzz/corpus
  work="$(mktemp -d)"
  # The debug binary: the test command has just built it (a release build would cost CI
  # minutes for a seconds-long run).
  cargo build -q -p sluice
  target/debug/sluice run nexmark-q5 --events 100000 --events-per-second 200000 \
    --checkpoint-dir "$work/ck" --checkpoint-interval 100ms --output "$work/out" >/dev/null 2>&1
  mkdir -p $corpus/{checkpoint_metadata,checkpoint_metadata_sealed,state_file,state_file_sealed}
  local n=0 f
  while IFS= read -r f; do
    n=$((n + 1))
    # A sealed target gets the body only: bytes between the 18-byte header and the crc.
    if [ "$(basename "$f")" = _metadata ]; then
      cp "$f" "$corpus/checkpoint_metadata/seed-$n"
      tail -c +19 "$f" | head -c -4 >"$corpus/checkpoint_metadata_sealed/seed-$n"
    else
      cp "$f" "$corpus/state_file/seed-$n"
      { printf '\001'; tail -c +19 "$f" | head -c -4; } >"$corpus/state_file_sealed/seed-$n"
    fi
  done < <(find "$work/ck" -type f | sort | tail -n 8)
  rm -rf "$work"
}

echo "== fuzzing: seeding the corpora from an embedded run's checkpoint"
seed_corpus
cargo fuzz build --fuzz-dir core/fuzz -O
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  dirs=("core/fuzz/corpus/$t")
  mkdir -p "${dirs[0]}"
  rm -rf "core/fuzz/artifacts/$t"
  if [ -d "core/fuzz/regressions/$t" ]; then dirs+=("core/fuzz/regressions/$t"); fi
  set +e
  cargo fuzz run "$t" --fuzz-dir core/fuzz -O "${dirs[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|panicked|SUMMARY|Test unit written"
  status="${PIPESTATUS[0]}"
  set -e
  if [ "$status" != 0 ] || compgen -G "core/fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t failed (exit $status); inputs: $(ls core/fuzz/artifacts/$t 2>/dev/null)" >&2
    exit 1
  fi
done
