#!/usr/bin/env bash
# Fuzzes the REST API (of a coordinator, then of an embedded run) against its OpenAPI document (docs/openapi.json, served at
# /openapi.json) with schemathesis: no 5xx, responses conform to the schema, malformed and
# wrong-method requests are refused. (Requests that are schema-valid but name, say, a job
# without its required options are refused with 400 on purpose, so that check is excluded.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v schemathesis >/dev/null; then
  python3 -m pip install --quiet schemathesis
fi
bin="${CARGO_TARGET_DIR:-target}/debug/sluice"
cargo build -p sluice
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" coordinator --bind 127.0.0.1:0 --rest-bind 127.0.0.1:0 --checkpoint-dir "$tmp/ck" > "$tmp/coord.out" 2> "$tmp/coord.err" &
for _ in $(seq 1 100); do [ "$(wc -l < "$tmp/coord.out")" -ge 2 ] && break; sleep 0.1; done
addr="$(sed -n 1p "$tmp/coord.out" | awk '{print $4}')"
rest="$(sed -n 2p "$tmp/coord.out" | awk '{print $5}')"
"$bin" worker --coordinator "$addr" --slots 2 > /dev/null 2> "$tmp/worker.err" &
schemathesis run "http://$rest/openapi.json" --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" --seed 1
# The same API served by an embedded run (`sluice run --rest-port`), with a job that keeps
# running for the whole fuzzing (an unbounded generated source).
"$bin" run nexmark-q0 --events-per-second 1000 --rest-port 0 --rest-linger 0s > "$tmp/run.out" 2> "$tmp/run.err" &
for _ in $(seq 1 100); do [ "$(wc -l < "$tmp/run.out")" -ge 1 ] && break; sleep 0.1; done
embedded="$(sed -n 1p "$tmp/run.out" | awk '{print $5}')"
schemathesis run "http://$embedded/openapi.json" --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" --seed 1
