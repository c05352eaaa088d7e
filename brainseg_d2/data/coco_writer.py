"""Assembling the dataset files from per-case records: COCO JSON, volumes.json, dataset.json.

A *case record* is what :func:`brainseg_d2.data.convert_case.process_case`
returns and caches: ids, split, source files, ``geometry``, ``intensity`` and
the kept ``slices`` with their annotations (no ``id``/``image_id`` yet). This
module numbers images and annotations per split (in volume id, then slice
order, so the output does not depend on the order cases finished in) and
writes everything deterministically (sorted keys). Layout: ``datasets/README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from brainseg_d2.data.convert_plan import ConvertOptions, tool_version
from brainseg_d2.labels import get_target
from brainseg_d2.structures import IMAGE_LAYOUT, DatasetInfo, SliceGeometry

#: Keys of a case record copied into ``volumes.json``.
VOLUME_KEYS = (
    "case_id",
    "patient_id",
    "split",
    "labelled",
    "label_convention",
    "source",
    "geometry",
    "intensity",
)


def write_json(path: Path, obj, indent: int | None = None) -> None:
    """Deterministic JSON (sorted keys), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = (",", ": ") if indent else (",", ":")
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=indent, separators=sep) + "\n")
    os.replace(tmp, path)


def remove_stale_images(work: Path, records: Sequence[Mapping]) -> None:
    """Delete ``{images,labels}/<split>/<volume_id>`` folders no record owns (earlier runs)."""
    wanted = {(r["split"], r["volume_id"]) for r in records}
    for kind in ("images", "labels"):
        if not (work / kind).is_dir():
            continue
        for split_dir in sorted((work / kind).iterdir()):
            for vol_dir in sorted(split_dir.iterdir()):
                if (split_dir.name, vol_dir.name) not in wanted:
                    shutil.rmtree(vol_dir)
            if not any(split_dir.iterdir()):
                split_dir.rmdir()


def coco_splits(records: Sequence[Mapping]) -> dict[str, dict[str, list[dict]]]:
    """Split name -> {``images``, ``annotations``} with ids from 1, in record order.

    Args:
        records: case records sorted by volume id.
    """
    coco: dict[str, dict[str, list[dict]]] = {}
    for rec in records:
        split = coco.setdefault(rec["split"], {"images": [], "annotations": []})
        g = SliceGeometry.from_json(rec["geometry"])
        for entry in rec["slices"]:
            image_id = len(split["images"]) + 1
            file_name = f"{rec['volume_id']}/{entry['slice_index']:04d}.png"
            split["images"].append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    **({"sem_seg_file_name": file_name} if rec["labelled"] else {}),
                    "height": g.slice_shape[0],
                    "width": g.slice_shape[1],
                    "volume_id": rec["volume_id"],
                    "patient_id": rec["patient_id"],
                    "slice_index": entry["slice_index"],
                    "num_slices": g.num_slices,
                    "pixel_spacing": list(g.pixel_spacing),
                    "slice_thickness": g.slice_thickness,
                }
            )
            for ann in entry["annotations"]:
                split["annotations"].append(
                    dict(ann, id=len(split["annotations"]) + 1, image_id=image_id)
                )
    return coco


def write_volumes(path: Path, records: Sequence[Mapping]) -> None:
    """``volumes.json``: volume id -> :data:`VOLUME_KEYS` of its record."""
    volumes = {r["volume_id"]: {k: r[k] for k in VOLUME_KEYS} for r in records}
    # One volume per line: readable and diff-friendly without a 100k-line file.
    lines = [f"{json.dumps(v)}: {json.dumps(volumes[v], sort_keys=True)}" for v in volumes]
    path.write_text('{"volumes": {\n' + ",\n".join(lines) + "\n}}\n")


def patient_splits(records: Sequence[Mapping]) -> dict[str, list[str]]:
    """Split name -> patient ids (sorted); asserts that no patient is in two splits."""
    splits: dict[str, list[str]] = {}
    for r in records:
        splits.setdefault(r["split"], [])
        if r["patient_id"] not in splits[r["split"]]:
            splits[r["split"]].append(r["patient_id"])
    owners: dict[str, str] = {}
    for split_name, patients in splits.items():
        for p in patients:
            assert owners.setdefault(p, split_name) == split_name, f"patient {p} in two splits"
    return {k: sorted(v) for k, v in splits.items()}


def _side_range(records: Sequence[Mapping]) -> list[float]:
    """[least, most] millimetres the slices' shorter side spans over the records."""
    sides = [SliceGeometry.from_json(r["geometry"]).shorter_side_mm for r in records]
    return [round(min(sides), 3), round(max(sides), 3)] if sides else []


def assemble_dataset(
    work: Path,
    name: str,
    options: ConvertOptions,
    records: Mapping[str, Mapping],
    skipped: Sequence[Mapping],
    source_options: Mapping | None = None,
) -> dict:
    """Write the COCO files, ``volumes.json`` and ``dataset.json`` into ``work``.

    Args:
        work: the work folder holding ``images/<split>/<volume_id>/`` PNGs.
        name: dataset name.
        options: resolved conversion options.
        records: volume id -> case record.
        skipped: ``{case_id, error}`` of cases left out by ``skip_bad``.
        source_options: how the cases were found, recorded under ``options``.

    Returns:
        the content of ``dataset.json``.
    """
    target = get_target(options.target)
    ordered = [records[v] for v in sorted(records)]
    remove_stale_images(work, ordered)
    coco = coco_splits(ordered)
    version = tool_version()
    for split_name, content in coco.items():
        write_json(
            work / "annotations" / f"instances_{split_name}.json",
            {
                "info": {"description": name, "version": version},
                "licenses": [],
                "categories": target.coco_categories(),
                **content,
            },
        )
    write_volumes(work / "volumes.json", ordered)
    conventions = sorted({r["label_convention"] for r in ordered})
    info = DatasetInfo(
        name=name,
        tool_version=version,
        label_convention=conventions[0] if len(conventions) == 1 else "mixed",
        target=target.name,
        categories=tuple(target.coco_categories()),
        classes=tuple(target.category_names),
        channels=options.preprocess().channels,
        image_layout=IMAGE_LAYOUT,
        slice_axis=options.slice_axis,
        splits=patient_splits(ordered),
        counts={
            k: {
                "volumes": sum(r["split"] == k for r in ordered),
                "images": len(v["images"]),
                "annotations": len(v["annotations"]),
                "shorter_side_mm": _side_range([r for r in ordered if r["split"] == k]),
            }
            for k, v in coco.items()
        },
        options={**asdict(options), **dict(source_options or {})},
        skipped=tuple(sorted(skipped, key=lambda s: s["case_id"])),
    ).to_json()
    write_json(work / "dataset.json", info, indent=2)
    return info
