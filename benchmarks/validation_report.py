"""The committed storage-vs-quality report: the validation tiles listed in
``pipelines/validation_tiles.txt`` plus the embedded sample slide, every codec sweep,
nearest (i-HR), bicubic and the given SR models.

    python -m benchmarks.validation_report [--models edsr-l1 ...] [--out benchmarks/reports/validation]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.data import ROOT, TILES
from wsistore.reports.run import BenchOptions, run_bench
from wsistore.sample import sample_slide_path

VALIDATION_LIST = ROOT / "pipelines" / "validation_tiles.txt"


def listed(path: Path) -> list[str]:
    """The names in a tile list of ``pipelines/`` (one per line, ``#`` comments)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def validation_tiles() -> list[Path]:
    """The held-out tiles, as files in ../shared/data/tiles."""
    return [TILES / f"{name}.png" for name in listed(VALIDATION_LIST)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports" / "validation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lpips-weights", type=Path, default=None)
    args = parser.parse_args()
    run_bench(
        BenchOptions(
            inputs=[*validation_tiles(), sample_slide_path()],
            out=args.out,
            models=args.models,
            device=args.device,
            lpips_weights=args.lpips_weights,
            overwrite=True,
        )
    )
    (args.out / "report.html").unlink(missing_ok=True)  # regenerated on demand; the markdown and PNGs are committed
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
