"""``python -m benchmarks.reliability``: every reliability campaign at full size, one after
another (bad inputs, pixel truth, damage, faults, concurrency, bad output paths), each printing its JSON totals; exits
non-zero when any campaign finds a wrong result. About 35-45 minutes on 2 cores; the figures
are in RELIABILITY.md."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks.reliability import bad_inputs, concurrency, damage, faults, paths, pixel_truth

#: Campaign -> (its main, the arguments of the full run RELIABILITY.md reports).
CAMPAIGNS: dict[str, tuple[Callable[[list[str] | None], int], list[str]]] = {
    "bad inputs": (bad_inputs.main, []),
    "pixel truth": (pixel_truth.main, []),
    "damage": (damage.main, ["--count", "120"]),
    "faults": (faults.main, ["--kills", "24"]),
    "concurrency": (concurrency.main, ["--runs", "10"]),
    "paths": (paths.main, ["--kills", "10"]),
}


def main() -> int:
    failed = []
    for name, (run, argv) in CAMPAIGNS.items():
        print(f"== {name}: {' '.join(argv) or '(defaults)'}", flush=True)
        if run(argv):
            failed.append(name)
    print("all campaigns clean" if not failed else f"wrong results in: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
