"""Build a large pyramidal JPEG TIFF from the real tiles in ../shared/data (streamed),
for memory tests and ingest benchmarks.

    python -m benchmarks.make_slide OUT.tif [--cells 20] [--glass-every 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.data import tile_names
from tests.slides import write_mosaic_slide


def mosaic_layout(cells: int, glass_every: int = 5) -> list[list[str | None]]:
    """``cells x cells`` layout cycling through the real 1000 x 1000 MoNuSeg tiles, with a
    glass border two cells wide and 2 x 2-cell glass holes, so background chunks exist
    beyond the tissue mask's dilation."""
    names = [n for n in tile_names() if "monuseg" in n]
    layout: list[list[str | None]] = []
    k = 0
    for i in range(cells):
        row: list[str | None] = []
        for j in range(cells):
            border = min(i, j) < 2 or max(i, j) >= cells - 2
            hole = glass_every and (i // 2 + j // 2) % glass_every == 0
            if border or hole:
                row.append(None)
            else:
                row.append(names[k % len(names)])
                k += 1
        layout.append(row)
    return layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cells", type=int, default=20, help="cells per side (1024 px each)")
    parser.add_argument("--glass-every", type=int, default=5)
    args = parser.parse_args()
    write_mosaic_slide(args.out, mosaic_layout(args.cells, args.glass_every))
    print(args.out)


if __name__ == "__main__":
    main()
