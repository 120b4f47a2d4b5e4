"""Run every benchmark in this folder, one after another, each printing its own table of side-by-side ratios."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        path = str(HERE / f"{name}.py")
        sys.argv = [path]  # each benchmark at its defaults, not parsing the names given here
        runpy.run_path(path, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
