"""Maps drawn to files: a self-contained interactive HTML scatter, or a PNG (matplotlib)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from latentdb.analysis._projection import SpaceMap
from latentdb.errors import InvalidArgumentError

__all__ = ["Coloring", "check_map_path", "coloring", "write_html", "write_map", "write_png"]

# Categories beyond this many share one "other" colour: past a dozen, colours blur.
MAX_CATEGORIES = 12
# Documents are cut here in the hover box (and in the file: 5,000 points stay < 3 MB).
DOCUMENT_START = 240
# Tableau's 10 plus two, then grey for "other" and for records without the field.
PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b",
]  # fmt: skip
OTHER = "#c9c9c9"
MISSING = "#e6e6e6"


@dataclass(frozen=True)
class Coloring:
    """How points are coloured by one metadata field.

    Attributes:
        field: The field, or None (one colour).
        kind: "category", "number" or "none".
        categories: For "category": the labels, most frequent first ("other" last when
            some were folded into it).
        codes: Per point: the index into ``categories`` (-1: field missing) for
            "category"; for "number", the value scaled to [0, 1] (nan: missing).
        low, high: The range of a "number" field.
    """

    field: str | None
    kind: str
    categories: list[str]
    codes: list[float]
    low: float = 0.0
    high: float = 0.0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def coloring(space_map: SpaceMap, field: str | None) -> Coloring:
    """Colour codes for ``field`` of each record's metadata.

    A field of numbers with more than a dozen distinct values is a gradient; anything
    else is categories (the 12 most frequent, the rest as "other").

    Raises:
        InvalidArgumentError: no projected record has ``field``.
    """
    count = len(space_map.ids)
    if field is None:
        return Coloring(None, "none", [], [0.0] * count)
    values = [None if m is None else m.get(field) for m in space_map.metadatas]
    present = [v for v in values if v is not None]
    if not present:
        keys = sorted({key for m in space_map.metadatas if m for key in m})
        raise InvalidArgumentError(
            f"no mapped record has metadata field {field!r}; fields present: "
            f"{', '.join(keys) or 'none'}"
        )
    if all(_is_number(v) for v in present) and len(set(present)) > MAX_CATEGORIES:
        numbers = np.array([float(v) for v in present])
        low, high = float(numbers.min()), float(numbers.max())
        span = high - low or 1.0
        codes = [math.nan if v is None else (float(v) - low) / span for v in values]
        return Coloring(field, "number", [], codes, low, high)
    labels = [None if v is None else str(v) for v in values]
    frequent = [label for label, _ in Counter(x for x in labels if x is not None).most_common()]
    kept = frequent[:MAX_CATEGORIES]
    position = {label: i for i, label in enumerate(kept)}
    folded = len(frequent) > len(kept)
    categories = [*kept, "other"] if folded else kept
    codes = [-1.0 if label is None else float(position.get(label, len(kept))) for label in labels]
    return Coloring(field, "category", categories, codes)


def _payload(space_map: SpaceMap, colors: Coloring, title: str) -> str:
    coordinates = space_map.coordinates.astype(np.float64)
    data = {
        "title": title,
        "x": [round(v, 5) for v in coordinates[:, 0].tolist()],
        "y": [round(v, 5) for v in coordinates[:, 1].tolist()],
        "ids": space_map.ids,
        "docs": [None if d is None else d[:DOCUMENT_START] for d in space_map.documents],
        "meta": space_map.metadatas,
        "color": {
            "field": colors.field,
            "kind": colors.kind,
            "categories": colors.categories,
            "codes": [None if math.isnan(c) else round(c, 4) for c in colors.codes],
            "low": colors.low,
            "high": colors.high,
        },
        "palette": PALETTE,
        "other": OTHER,
        "missing": MISSING,
    }
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    # Inside <script>, "</" could end the element early; "<\/" is the same JSON string.
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _title(space_map: SpaceMap, field: str | None) -> str:
    shown = len(space_map.ids)
    sample = f"{shown:,} of {space_map.total:,}" if shown < space_map.total else f"{shown:,}"
    colour = f", coloured by {field}" if field else ""
    return f"{space_map.collection}: {sample} records, {space_map.method.upper()}{colour}"


def write_html(space_map: SpaceMap, path: str | Path, *, color_by: str | None = None) -> Path:
    """Write an interactive scatter of ``space_map`` to one HTML file that needs nothing
    else (no CDN, no network): hover a point for its id, the start of its document and
    its metadata; wheel to zoom, drag to pan, double-click to reset.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: ``color_by`` names a field no record has.
    """
    colors = coloring(space_map, color_by)
    title = _title(space_map, color_by)
    template = resources.files("latentdb.analysis").joinpath("map.html").read_text("utf-8")
    page = (
        template.replace("__CUT__", str(DOCUMENT_START))
        .replace("__TITLE__", _escape(title))
        .replace("__DATA__", _payload(space_map, colors, title))
    )
    target = Path(path)
    target.write_text(page, encoding="utf-8")
    return target


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_png(space_map: SpaceMap, path: str | Path, *, color_by: str | None = None) -> Path:
    """Write the map as a PNG (matplotlib, the ``maps`` extra).

    Raises:
        InvalidArgumentError: ``color_by`` names a field no record has.
        ImportError: matplotlib is not installed.
    """
    colors = coloring(space_map, color_by)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError as error:
        raise ImportError("PNG maps need matplotlib: pip install 'latentdb[maps]'") from error
    xy = space_map.coordinates
    figure, axes = plt.subplots(figsize=(8, 6), dpi=100)
    try:
        codes = np.array(colors.codes, dtype=np.float64)
        if colors.kind == "number":
            missing = np.isnan(codes)
            axes.scatter(xy[missing, 0], xy[missing, 1], s=3, c=MISSING, linewidths=0)
            points = axes.scatter(
                xy[~missing, 0],
                xy[~missing, 1],
                s=4,
                c=codes[~missing],
                cmap="viridis",
                linewidths=0,
            )
            bar = figure.colorbar(points, ax=axes, shrink=0.8)
            ticks = np.linspace(0, 1, 5)
            bar.set_ticks(list(ticks))
            bar.set_ticklabels(
                [f"{colors.low + t * (colors.high - colors.low):.3g}" for t in ticks]
            )
            bar.set_label(str(colors.field))
        else:
            shades = [
                PALETTE[i] if i < len(PALETTE) else OTHER for i in range(len(colors.categories))
            ]
            fill = [MISSING if c < 0 else shades[int(c)] for c in codes] if shades else []
            axes.scatter(
                xy[:, 0],
                xy[:, 1],
                s=4,
                c=fill if fill else PALETTE[0],
                linewidths=0,
                alpha=0.8,
            )
            if colors.kind == "category":
                handles = [
                    Line2D([], [], marker="o", linestyle="", color=shade, label=label[:30])
                    for label, shade in zip(colors.categories, shades, strict=True)
                ]
                axes.legend(
                    handles=handles,
                    title=colors.field,
                    fontsize=7,
                    title_fontsize=8,
                    loc="center left",
                    bbox_to_anchor=(1.0, 0.5),
                    frameon=False,
                )
        axes.set_title(_title(space_map, colors.field), fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        figure.tight_layout()
        target = Path(path)
        figure.savefig(target)
    finally:
        plt.close(figure)
    return target


# What write_map writes, by the file's suffix (`latentdb map -o x.svg` used to write HTML
# into x.svg, issue 16).
MAP_SUFFIXES = (".html", ".htm", ".png")


def check_map_path(path: str | Path) -> Path:
    """``path`` as a Path, if its suffix is one :func:`write_map` writes.

    Raises:
        InvalidArgumentError: any other suffix (say which ones work).
    """
    target = Path(path)
    if target.suffix.lower() not in MAP_SUFFIXES:
        raise InvalidArgumentError(
            f"a map is written as an HTML page (.html, .htm) or a PNG image (.png); "
            f"{target.name!r} is neither"
        )
    return target


def write_map(space_map: SpaceMap, path: str | Path, *, color_by: str | None = None) -> Path:
    """A PNG when ``path`` ends in ``.png``, the interactive HTML page for ``.html`` or
    ``.htm``.

    Raises:
        InvalidArgumentError: another suffix.
    """
    if check_map_path(path).suffix.lower() == ".png":
        return write_png(space_map, path, color_by=color_by)
    return write_html(space_map, path, color_by=color_by)
