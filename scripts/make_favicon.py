"""Draw ``assets/favicon.png``, the app's page icon: a 4x4 weight mask, kept cells filled, pruned ones faint.

A bundled image, because Streamlit fetches a ``:material/...:`` page icon from a font host, which
fails offline. Run: ``python scripts/make_favicon.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "assets" / "favicon.png"
SIZE = 64
SCALE = 4  # drawn this much larger, then shrunk: smooth edges
KEPT = "#2980b9"  # the palette's blue (pruning.plots.palette.BLUE)
PRUNED = "#d5dbdf"
MASK = ("1010",
        "0110",
        "1001",
        "0101")


def favicon() -> Image.Image:
    big = SIZE * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin, gap = 2 * SCALE, 4 * SCALE
    cell = (big - 2 * margin - 3 * gap) / 4
    for row, line in enumerate(MASK):
        for col, kept in enumerate(line):
            left, top = margin + col * (cell + gap), margin + row * (cell + gap)
            draw.rounded_rectangle((left, top, left + cell, top + cell), radius=2 * SCALE,
                                   fill=KEPT if kept == "1" else PRUNED)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    favicon().save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
