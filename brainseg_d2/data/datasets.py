"""Register converted datasets in Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

A converted dataset is a folder written by ``brainseg-convert`` (layout in
``datasets/README.md``). Each split becomes ``<dataset>_<split>``. Registration
is explicit and idempotent (call it from ``setup()``); loading is lazy: the
COCO JSON is read only when Detectron2 asks for the dataset dicts.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from brainseg_d2.labels import CATEGORY_COLORS
from brainseg_d2.structures import IMAGE_LAYOUT, DatasetInfo

logger = logging.getLogger(__name__)

#: Image-level keys kept in every dataset dict (Detectron2's COCO loader drops them).
VOLUME_KEYS = (
    "volume_id",
    "patient_id",
    "slice_index",
    "num_slices",
    "pixel_spacing",
    "slice_thickness",
)


def dataset_root(cfg_root: str = "") -> Path:
    """Datasets root: ``cfg_root`` if set, else ``$DETECTRON2_DATASETS``, else ``./datasets``."""
    return Path(cfg_root or os.environ.get("DETECTRON2_DATASETS", "datasets"))


def is_converted_dataset(folder: Path) -> bool:
    """True if `folder` looks like a converted dataset (has dataset.json and annotations/)."""
    return (folder / "dataset.json").is_file() and (folder / "annotations").is_dir()


def load_brainseg_json(
    json_file: str | Path, image_root: str | Path, label_root: str | Path | None = None
) -> list[dict]:
    """Load one split's COCO JSON into Detectron2 dataset dicts.

    Args:
        json_file: ``annotations/instances_<split>.json`` of a converted dataset.
        image_root: the folder ``file_name`` in the JSON is relative to
            (``<dataset>/images/<split>``).
        label_root: the folder ``sem_seg_file_name`` is relative to
            (``<dataset>/labels/<split>``); None drops it.

    Returns:
        One dict per slice image with ``file_name``, ``height``, ``width``,
        ``image_id``, the :data:`VOLUME_KEYS`, ``sem_seg_file_name`` (labelled
        volumes: a PNG of tissue codes, every labelled pixel) and ``annotations``
        (``bbox`` in ``XYWH_ABS``, ``segmentation`` as compressed RLE,
        ``category_id`` 0-based contiguous, ``iscrowd``). Images without
        annotations get ``[]``.
    """
    json_file = Path(json_file)
    try:
        coco = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read COCO annotations {json_file}: {e}") from None
    cat_ids = sorted(c["id"] for c in coco["categories"])
    contiguous = {cid: i for i, cid in enumerate(cat_ids)}
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco.get("annotations", []):
        by_image[ann["image_id"]].append(
            {
                "bbox": ann["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": ann["segmentation"],
                "category_id": contiguous[ann["category_id"]],
                "iscrowd": ann.get("iscrowd", 0),
            }
        )
    images_dir = Path(image_root)
    dicts = []
    for img in coco["images"]:
        record = {
            "file_name": str(images_dir / img["file_name"]),
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
            "annotations": by_image[img["id"]],
        }
        record.update({k: img[k] for k in VOLUME_KEYS if k in img})
        if label_root is not None and "sem_seg_file_name" in img:
            record["sem_seg_file_name"] = str(Path(label_root) / img["sem_seg_file_name"])
        dicts.append(record)
    if not dicts:
        raise ValueError(f"{json_file} holds no images: the split is empty")
    return dicts


def register_brainseg_dataset(folder: str | Path, name: str | None = None) -> list[str]:
    """Register every split of one converted dataset folder.

    Args:
        folder: a converted dataset (``dataset.json``, ``annotations/``, ``images/``).
        name: registration prefix; defaults to the folder name. Splits register as
            ``<name>_<split>``.

    Returns:
        The registered dataset names. Calling this twice on the same folder is a
        no-op (idempotent); a name registered from another folder is replaced, with
        a warning, so the catalogue never serves a different folder's data.
    """
    folder = Path(folder).resolve()
    if not is_converted_dataset(folder):
        raise ValueError(
            f"{folder} is not a converted dataset (expected dataset.json and annotations/); "
            "create one with brainseg-convert"
        )
    info = DatasetInfo.load(folder / "dataset.json")
    if info.image_layout != IMAGE_LAYOUT:
        raise ValueError(
            f"{folder} was converted by an older brainseg_d2 (3-channel RGB slices, no label "
            "PNGs); convert it again with brainseg-convert"
        )
    name = name or folder.name
    categories = sorted(info.categories, key=lambda c: c["id"])
    thing_classes = [c["name"] for c in categories]
    registered = []
    for json_file in sorted((folder / "annotations").glob("instances_*.json")):
        split = json_file.stem[len("instances_") :]
        ds_name = f"{name}_{split}"
        registered.append(ds_name)
        if ds_name in DatasetCatalog.list():
            previous = MetadataCatalog.get(ds_name).get("json_file", None)
            if previous == str(json_file):
                continue  # these very files: nothing to do
            # Another folder of the same name (another root, or a name Detectron2 or the
            # user registered): the catalogue would otherwise keep serving the old data.
            logger.warning(
                "dataset %s was registered from %s; it now reads %s",
                ds_name, previous or "elsewhere", json_file,
            )
            DatasetCatalog.remove(ds_name)
            MetadataCatalog.remove(ds_name)
        image_root = folder / "images" / split
        label_root = folder / "labels" / split
        DatasetCatalog.register(
            ds_name, partial(load_brainseg_json, json_file, image_root, label_root)
        )
        MetadataCatalog.get(ds_name).set(
            thing_classes=thing_classes,
            thing_colors=[list(CATEGORY_COLORS.get(c, (255, 255, 255))) for c in thing_classes],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
            json_file=str(json_file),
            image_root=str(image_root),
            dataset_root=str(folder),
            volumes_file=str(folder / "volumes.json"),
            target=info.target,
            label_convention=info.label_convention,
            channels=list(info.channels),
            slice_axis=info.slice_axis,
            split=split,
            evaluator_type="brainseg",
        )
    if not registered:
        raise ValueError(f"{folder}/annotations holds no instances_<split>.json files")
    return registered


def register_all(root: str | Path | None = None) -> list[str]:
    """Register every converted dataset found directly under the datasets root.

    Args:
        root: folder to scan; defaults to :func:`dataset_root` (``$DETECTRON2_DATASETS``).

    Returns:
        All registered names (idempotent; safe to call from every ``setup()``).
    """
    root = Path(root) if root is not None else dataset_root()
    names: list[str] = []
    if not root.is_dir():
        return names
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_converted_dataset(folder):
            names += register_brainseg_dataset(folder)
    return names


def check_datasets_exist(
    names: tuple[str, ...] | list[str], root: str | Path | None = None
) -> None:
    """Raise ``ValueError`` naming the first dataset that is not registered.

    Args:
        names: dataset names.
        root: the datasets root that was searched (named in the message);
            default :func:`dataset_root`.
    """
    known = set(DatasetCatalog.list())
    for n in names:
        if n not in known:
            root = Path(root) if root is not None else dataset_root()
            missing = "" if root.is_dir() else ", which is not a folder"
            raise ValueError(
                f"dataset {n!r} is not registered: no converted dataset provides it under "
                f"{root.resolve()}{missing} (set DETECTRON2_DATASETS or BRAINSEG.DATASET_ROOT, "
                "or run brainseg-convert first)"
            )
    logger.debug("datasets present: %s", names)
