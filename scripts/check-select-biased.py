#!/usr/bin/env python3
"""Fails if a `tokio::select!` in code the simulation runs is not `biased;`.

tokio picks the branch of an unbiased select at random from a thread-local generator that
madsim does not seed: the same seed then runs differently (the determinism check found one).
"""
import pathlib
import sys

bad = []
for crate in ("core/src", "transport/src", "state/src", "sim/src"):
    for path in sorted(pathlib.Path(crate).rglob("*.rs")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "tokio::select!" in line and "{" in line:
                window = lines[i + 1 : i + 4]
                if not any(l.strip() == "biased;" for l in window):
                    bad.append(f"{path}:{i + 1}")
if bad:
    print("tokio::select! without `biased;` (unseeded random branch order under madsim):")
    print("\n".join(bad))
    sys.exit(1)
print("every tokio::select! in simulated code is biased")
