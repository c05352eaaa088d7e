"""The report's pictures: worst and best cases (thumbnails) and the Dice plot.

Pictures are embedded as ``data:`` URIs, so the page loads nothing from anywhere else.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from brainseg_d2.report.tables import format_number, has_value, names_in, rows_by_name, variants_in

#: Ranking of worst/best cases: this region's Dice (last variant).
RANK_NAME = "WT"
#: Largest embedded thumbnail width in pixels (keeps the HTML small).
THUMB_WIDTH = 900
#: JPEG quality of embedded thumbnails (a tenth of the size of PNG for noisy MRI).
JPEG_QUALITY = 85


def find_thumbnails(folder: str | Path, volume_ids: Sequence[str]) -> dict[str, Path]:
    """Thumbnail per volume id in ``folder``: ``<id>.png``, ``<id>/montage.png`` or
    ``<id>_montage.png`` (the first that exists; the demo writes ``<id>/montage.png``)."""
    folder = Path(folder)
    found = {}
    for vid in volume_ids:
        for candidate in (f"{vid}.png", f"{vid}/montage.png", f"{vid}_montage.png"):
            if (folder / candidate).is_file():
                found[vid] = folder / candidate
                break
    return found


def _data_uri(path: Path, max_width: int = THUMB_WIDTH) -> str | None:
    """JPEG data URI of an image, shrunk to ``max_width``; None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    if image.shape[1] > max_width:
        height = round(image.shape[0] * max_width / image.shape[1])
        image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def extreme_cases(
    rows: Sequence[Mapping], thumbnails: Mapping[str, Path], num: int
) -> tuple[str, str, list[dict], list[dict]]:
    """Ranking name and variant, worst and best cases by that name's Dice."""
    variant = variants_in(rows)[-1] if rows else ""
    pool = [r for r in rows if r["variant"] == variant and r["group"] == "region"]
    pool = pool or [r for r in rows if r["variant"] == variant]
    names = [r["name"] for r in pool]
    if not names:
        return "", variant, [], []
    name = RANK_NAME if RANK_NAME in names else names[0]
    # Only cases holding the region: a both-empty 1 says nothing about the model.
    scores = {
        r["case_id"]: r["dice"] for r in pool if r["name"] == name and has_value(r, "ref_voxels")
    }
    ranked = sorted(((c, d) for c, d in scores.items() if not math.isnan(d)),
                    key=lambda kv: (kv[1], kv[0]))  # fmt: skip
    k = min(num, math.ceil(len(ranked) / 2))
    worst = ranked[:k]
    best = [kv for kv in reversed(ranked) if kv not in worst][:num]

    def figures(items):
        return [
            {"case": c, "score": format_number(d),
             "uri": _data_uri(Path(thumbnails[c])) if c in thumbnails else None}
            for c, d in items
        ]  # fmt: skip

    return name, variant or "scored", figures(worst), figures(best)


def dice_plot(rows: Sequence[Mapping]) -> str | None:
    """PNG data URI: per name, a box of Dice over the cases holding it and every case's point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, variants, groups = names_in(rows), variants_in(rows), rows_by_name(rows)
    if not names:
        return None
    colours = {"raw": "#9e9e9e", "post": "#1565c0", "": "#1565c0"}
    width = 0.8 / len(variants)
    fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for i, (group, name) in enumerate(names):
        for j, variant in enumerate(variants):
            items = groups.get((group, name, variant), [])
            x = i - 0.4 + width * (j + 0.5)
            colour = colours.get(variant, "#1565c0")
            scored = [r for r in items if not math.isnan(r["dice"])]
            present = [r["dice"] for r in scored if has_value(r, "ref_voxels")]
            if present:
                ax.boxplot([present], positions=[x], widths=width * 0.7, showfliers=False,
                           medianprops={"color": colour}, boxprops={"color": colour},
                           whiskerprops={"color": colour}, capprops={"color": colour})  # fmt: skip
            for r in scored:
                jitter = float(rng.uniform(-width * 0.25, width * 0.25))
                filled = has_value(r, "ref_voxels")
                ax.scatter([x + jitter], [r["dice"]], s=14, zorder=3,
                           facecolors=colour if filled else "none", edgecolors=colour)  # fmt: skip
    ax.set_xticks(range(len(names)), [n for _, n in names])
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("Dice per case")
    ax.grid(axis="y", alpha=0.3)
    if len(variants) > 1:
        for variant in variants:
            ax.scatter([], [], color=colours.get(variant, "#1565c0"), label=variant)
        ax.legend(loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
