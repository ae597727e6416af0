"""Rectangles of pixels, named once for the whole package.

- :data:`Box` ``(x0, y0, x1, y1)``, half-open, in the pixels of the level at hand: what
  every reader, writer, grid and codec passes around.
- :data:`Region` ``(x, y, width, height)`` in level-0 pixels: how a user (``--region``) and
  OpenSlide's ``read_region`` name a rectangle.
"""

from __future__ import annotations

Box = tuple[int, int, int, int]
Region = tuple[int, int, int, int]
