#!/usr/bin/env python
"""Browse the ground truth of a converted dataset: one overlay PNG per slice.

    tools/visualize_data.py --input datasets/phantom --split val --output out/gt
    tools/visualize_data.py --input datasets/phantom --volume Phantom_00003 --num 40 \\
        --output out/gt

Registers the dataset folder like training does, loads ``<name>_<split>`` from
Detectron2's ``DatasetCatalog`` and draws every annotation (RLE decoded with
pycocotools) with ``Visualizer.draw_dataset_dict`` in the registered
``thing_colors``. Slices with annotations are preferred, spread evenly over the
split (or the volume). Files: ``<output>/<volume_id>_<slice:04d>.png``; the
output folder must lie outside the dataset, and a PNG of the same name that this
tool did not write (its ``.brainseg-visualize`` list) is never replaced.
Needs the package importable (``pip install -e .``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from brainseg_d2.utils.cli import (
    ArgumentParser,
    deprecated_alias,
    print_error,
    quiet_third_party_warnings,
)

quiet_third_party_warnings()  # before torch and Detectron2 are imported: they warn on import

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from brainseg_d2.data.datasets import register_brainseg_dataset  # noqa: E402
from brainseg_d2.data.io.png import read_channel_png  # noqa: E402
from brainseg_d2.utils.paths import (  # noqa: E402
    check_not_input,
    check_own_files,
    input_overlap,
    record_own_files,
)
from brainseg_d2.visualization import auto_scale, display_image, draw_dataset_dict  # noqa: E402


def build_parser() -> ArgumentParser:
    """Command-line interface of ``tools/visualize_data.py``."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--input",
        "--dataset-dir",
        required=True,
        type=Path,
        action=deprecated_alias("--dataset-dir"),
        help="converted dataset folder",
    )
    p.add_argument("--split", default="val", help="split to browse")
    p.add_argument(
        "--output", required=True, type=Path, help="folder for the PNGs (outside the dataset)"
    )
    p.add_argument("--num", type=int, default=20, help="number of slices to draw")
    p.add_argument("--volume", help="only slices of this volume id")
    p.add_argument("--scale", type=float, help="upscaling factor (default: automatic)")
    p.add_argument(
        "--channel",
        type=int,
        default=0,
        help="channel shown in grey (default 0: the first converted channel, FLAIR for BraTS)",
    )
    p.add_argument(
        "--composite", action="store_true", help="show the first three channels as R, G, B"
    )
    return p


#: Lists the PNGs this tool wrote into --output: only those are ever replaced.
MARKER = ".brainseg-visualize"
TOOL = "tools/visualize_data.py"


def select_records(records: Sequence[dict], num: int) -> list[dict]:
    """Up to ``num`` records, evenly spread, preferring slices with annotations."""
    annotated = [r for r in records if r.get("annotations")]
    pool = annotated or list(records)
    pool.sort(key=lambda r: (str(r.get("volume_id", "")), r.get("slice_index", 0)))
    if len(pool) <= num:
        return pool
    picks = np.round(np.linspace(0, len(pool) - 1, num)).astype(int)
    return [pool[i] for i in sorted(set(picks.tolist()))]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num < 1:
        print(f"error: --num must be >= 1, got {args.num}", file=sys.stderr)
        return 2
    if args.scale is not None and not args.scale > 0:
        print(f"error: --scale must be > 0, got {args.scale}", file=sys.stderr)
        return 2
    try:
        found = input_overlap(args.output, [args.input])
        if found is not None and found[0] != "contains":  # writing beside it is harmless
            check_not_input(args.output, [args.input], "--output")
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"--output {args.output} exists and is not a folder")
        names = register_brainseg_dataset(args.input)
    except ValueError as e:
        print_error(e)
        return 2
    prefix = names[0].rsplit("_", 1)[0] if names else ""
    wanted = f"{prefix}_{args.split}"
    splits = [n[len(prefix) + 1 :] for n in names]
    if wanted not in names:
        print(
            f"error: no split {args.split!r} in {args.input} (has {splits})", file=sys.stderr
        )
        return 2
    records = DatasetCatalog.get(wanted)
    if args.volume:
        volumes = sorted({str(r.get("volume_id")) for r in records})
        records = [r for r in records if r.get("volume_id") == args.volume]
        if not records:
            shown = ", ".join(volumes[:10]) + (" ..." if len(volumes) > 10 else "")
            print(
                f"error: volume {args.volume!r} is not in split {args.split!r} (has {shown})",
                file=sys.stderr,
            )
            return 2
    metadata = MetadataCatalog.get(wanted)
    channels = list(metadata.get("channels", None) or ["image"] * 3)
    if not 0 <= args.channel < len(channels):
        print(f"error: --channel {args.channel}: the dataset has channels 0-{len(channels) - 1} "
              f"{channels}", file=sys.stderr)  # fmt: skip
        return 2
    chosen = select_records(records, args.num)
    keys = [(str(r.get("volume_id", Path(r["file_name"]).parent.name)),
             int(r.get("slice_index", r["image_id"]))) for r in chosen]  # fmt: skip
    files = [f"{vid}_{index:04d}.png" for vid, index in keys]
    try:  # a file of the same name that this tool did not write is never replaced
        check_own_files(args.output, files, MARKER, TOOL, "--output")
    except ValueError as e:
        print_error(e)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    record_own_files(args.output, files, MARKER, TOOL)
    for record, (vid, index), name in zip(chosen, keys, files):
        image = read_channel_png(record["file_name"], len(channels))
        image = display_image(image, None if args.composite else args.channel)
        scale = args.scale or auto_scale(image.shape)
        title = f"{vid} #{index}"
        # Instances only: Detectron2 would also draw the label PNG (sem_seg) over them.
        shown = {k: v for k, v in record.items() if k != "sem_seg_file_name"}
        drawn = draw_dataset_dict(image, shown, metadata, scale=scale, title=title)
        out = args.output / name
        if not cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
            print(f"error: cannot write {out}", file=sys.stderr)
            return 1
    print(f"wrote {len(chosen)} overlays of {wanted} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
