"""Run benchmarks one after another, each printing its own table of side-by-side ratios (`make bench`).

By default the three that compare samscale with what a user would otherwise pick, each against its goal:
`bench_pyhessian` (top-3 eigenvalues, trace and density against PyHessian; goal ≥ 3× at equal or better accuracy),
`bench_ensemble` (runs per hour of the ensemble executor against the local pool; goal ≥ 3×) and `bench_optim` (SAM/SGD
step-time ratio and SAM's own overhead; goals ≤ 2.0 and ≤ 3 %). About 6 minutes on 2 idle cores.

    python benchmarks/run_all.py                    the three above
    python benchmarks/run_all.py --all              every bench_*.py in this folder (adds sweep, Hessian modes,
                                                    report scaling and, with torch-geometric, the GCN layout)
    python benchmarks/run_all.py bench_optim ...    the named ones
"""
from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
CORE = ("bench_pyhessian", "bench_ensemble", "bench_optim")


def main() -> int:
    args = sys.argv[1:]
    everything = sorted(p.stem for p in HERE.glob("bench_*.py"))
    names = everything if args == ["--all"] else (args or list(CORE))
    if unknown := sorted(set(names) - set(everything)):
        print(f"unknown benchmark(s) {unknown}; valid: {everything} or --all", file=sys.stderr)
        return 2
    began = time.perf_counter()
    for name in names:
        print(f"\n=== {name} (load average {os.getloadavg()[0]:.2f}) ===", flush=True)
        path = str(HERE / f"{name}.py")
        sys.argv = [path]  # each benchmark at its defaults, not parsing the names given here
        runpy.run_path(path, run_name="__main__")
    print(f"\nall benchmarks: {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
