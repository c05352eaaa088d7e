"""Validation score maps: the model run once per volume, kept on disk for the sweeps."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["cache_volumes", "iter_volume_scores", "read_cached"]


def iter_volume_scores(
    model, cfg, dataset_name: str, *, source: str | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """Run ``model`` over a registered dataset, one volume at a time.

    Args:
        model: a Detectron2 model in eval mode.
        cfg: the config (test mapper, mask source).
        dataset_name: a dataset written by ``brainseg-convert`` (label PNGs).
        source: mask source (default ``cfg.BRAINSEG.MASK_SOURCE``).

    Yields:
        ``(volume_id, scores, gt, voxel_ml)``: float32 ``(C, S, H, W)`` scores
        (slices the dataset lacks score 0), bool ground truth from the label
        PNGs, and one voxel's volume in millilitres.
    """
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper, read_label_png
    from brainseg_d2.engine.test_inference import inference_batching
    from brainseg_d2.evaluation.slice_records import DatasetVolume
    from brainseg_d2.inference.batching import run_in_order
    from brainseg_d2.labels import get_target
    from brainseg_d2.modeling.meta_arch import dense_head_only
    from brainseg_d2.postprocessing import score_maps_from_output

    source = source or cfg.BRAINSEG.MASK_SOURCE
    target = get_target(MetadataCatalog.get(dataset_name).target)
    num_categories = len(target.categories)
    mapper = BrainSegDatasetMapper(cfg, is_train=False)
    by_volume: dict[str, list[dict]] = defaultdict(list)
    for d in DatasetCatalog.get(dataset_name):
        by_volume[d["volume_id"]].append(d)
    # Batches of the volume's slices, several at once on CPU, as in evaluation.
    batch, workers = inference_batching(cfg)

    def run(chunk: list[dict]) -> tuple[list[dict], list[dict]]:
        with torch.inference_mode():  # thread-local: entered in each worker
            return chunk, model([mapper(d) for d in chunk])

    for volume_id in sorted(by_volume):
        dicts = sorted(by_volume[volume_id], key=lambda d: d["slice_index"])
        first = dicts[0]
        shape = (num_categories, int(first["num_slices"]), first["height"], first["width"])
        scores = np.zeros(shape, dtype=np.float16)
        gt = np.zeros(shape, dtype=bool)
        chunks = [dicts[start : start + batch] for start in range(0, len(dicts), batch)]
        # A dense head's maps do not need the instance branch: skip it.
        with dense_head_only(model) if source == "semantic" else contextlib.nullcontext():
            for chunk, outputs in run_in_order(run, chunks, workers=workers):
                for d, out in zip(chunk, outputs):
                    s = int(d["slice_index"])
                    scores[:, s] = score_maps_from_output(out, num_categories, source)
                    if "sem_seg_file_name" in d:
                        gt[:, s] = target.masks_from_tissue(
                            read_label_png(d["sem_seg_file_name"])
                        )
        yield volume_id, scores.astype(np.float32), gt, DatasetVolume(first).voxel_ml


def cache_volumes(
    volumes: Iterable[tuple[str, np.ndarray, np.ndarray, float]], folder: str | Path
) -> list[Path]:
    """Write each ``(volume_id, scores, gt, voxel_ml)`` to ``folder`` (compressed,
    float16 scores).

    The sweeps read the validation volumes several times; computing the model
    once and reading the maps back keeps memory at one volume. Scores are stored
    as float16: a threshold can then move a voxel whose score lies within 1e-3 of
    it, which changes the choice only where two settings are that close.
    """
    paths = []
    for i, (volume_id, scores, gt, voxel_ml) in enumerate(volumes):
        path = Path(folder) / f"{i:05d}.npz"
        np.savez_compressed(
            path, volume_id=volume_id, scores=scores.astype(np.float16), gt=gt, voxel_ml=voxel_ml
        )
        paths.append(path)
    return paths


def read_cached(
    paths: Sequence[Path],
) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """The volumes :func:`cache_volumes` wrote, one at a time."""
    for path in paths:
        with np.load(path) as data:
            yield (str(data["volume_id"]), data["scores"].astype(np.float32), data["gt"],
                   float(data["voxel_ml"]))  # fmt: skip
