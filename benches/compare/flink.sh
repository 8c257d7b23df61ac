#!/usr/bin/env bash
# Nexmark in Sluice and in Apache Flink on this machine, same events, same parallelism, both
# engines in the same run (alternating), so the ratio holds on a noisy machine:
#
#   benches/compare/flink.sh              # 5M events, q0-q8, parallelism 1 and 2, best of 2
#   EVENTS=2000000 QUERIES=q0,q5 PARALLELISM=2 REPEAT=3 benches/compare/flink.sh
#   BACKENDS=1s QUERIES=q4,q5,q8 PARALLELISM=1 benches/compare/flink.sh   # state backends
#
# Installs Apache Flink from PyPI (apache-flink, which bundles the Flink runtime) into
# benches/compare/.venv; needs Java 17. Writes the events once into benches/compare/work/ (one
# part file per source subtask; both engines read and parse the same files); prints a Markdown
# table: query, parallelism, events, Sluice events/s, Flink events/s, ratio. First, on a small
# input (CHECK_EVENTS, default 50000), both engines' result row counts are compared: the
# script stops if they differ (the comparison would not be of the same work).
set -euo pipefail
cd "$(dirname "$0")/../.."
events="${EVENTS:-5000000}"
queries="${QUERIES:-q0,q1,q2,q3,q4,q5,q7,q8}"
pars="${PARALLELISM:-1,2}"
repeat="${REPEAT:-2}"
flink_version="${FLINK_VERSION:-2.2.1}"
venv=benches/compare/.venv
work="$PWD/benches/compare/work"

if ! java -version 2>&1 | grep -q 'version "17'; then
  echo "Flink needs Java 17 (java -version says: $(java -version 2>&1 | head -1))" >&2
  exit 1
fi
if ! "$venv/bin/python" -c "import pyflink" 2>/dev/null; then
  echo "== installing apache-flink $flink_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "apache-flink==$flink_version"
fi
echo "== building the Sluice runner (release)"
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build --release --quiet -p sluice-benches --bin nexmark
bin="${CARGO_TARGET_DIR:-target}/release/nexmark"
check_events="${CHECK_EVENTS:-50000}"
dirs=""
checks=""
for p in ${pars//,/ }; do
  for n in "$events" "$check_events"; do
    dir="$work/events-$n-p$p"
    if [ ! -f "$dir/part-0000" ]; then
      "$bin" --write-events "$dir" --events "$n" --parts "$p"
    fi
  done
  dirs="${dirs:+$dirs,}$p=$work/events-$events-p$p"
  checks="${checks:+$checks,}$p=$work/events-$check_events-p$p"
done
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(java -version 2>&1 | head -1); Flink $flink_version"
"$venv/bin/python" benches/compare/flink_nexmark.py --sluice "$bin" --events-dirs "$dirs" --events "$events" \
  --check-dirs "$checks" \
  --queries "$queries" --parallelism "$pars" --repeat "$repeat" ${BACKENDS:+--backends "$BACKENDS"}
