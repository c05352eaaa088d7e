"""The tuned config: the model's config with the chosen post-processing."""

from __future__ import annotations

import os
from pathlib import Path

from brainseg_d2.postprocessing import PostprocessParams

__all__ = ["TUNED_HEADER", "write_tuned_config"]


#: First line of every config :func:`write_tuned_config` writes; only such files are replaced.
TUNED_HEADER = "# brainseg_d2: config with the post-processing chosen on validation data"


def check_tuned_output(path: str | Path) -> None:
    """Raise unless ``path`` is missing or a tuned config written here (call it before tuning).

    Raises:
        ValueError: naming ``path``.
    """
    path = Path(path)
    if path.exists():
        try:
            ours = path.is_file() and path.read_text(encoding="utf-8").startswith(TUNED_HEADER)
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise ValueError(f"{path} exists and is not a tuned config written here; choose "
                             "another output")


def write_tuned_config(cfg, params: PostprocessParams, path: str | Path) -> Path:
    """Write ``cfg`` with ``BRAINSEG.POSTPROCESS`` replaced by ``params`` as a full YAML config.

    The file can be passed as ``--config-file`` to every tool (it needs no
    ``_BASE_``), from any folder: ``MODEL.WEIGHTS``, an ensemble's weights and
    ``BRAINSEG.DATASET_ROOT`` are written as absolute paths. An existing file is
    replaced only if this function wrote it.

    Raises:
        ValueError: ``path`` exists and was not written here.
    """
    path = Path(path)
    check_tuned_output(path)
    tuned = cfg.clone()
    tuned.defrost()
    for key, value in params.to_cfg_dict().items():
        tuned.BRAINSEG.POSTPROCESS[key] = list(value) if isinstance(value, tuple) else value
    # Local paths made absolute, so that the file works from any folder.
    if tuned.MODEL.WEIGHTS and "://" not in tuned.MODEL.WEIGHTS:
        tuned.MODEL.WEIGHTS = os.path.abspath(tuned.MODEL.WEIGHTS)
    tuned.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS = [
        w if "://" in w else os.path.abspath(w) for w in tuned.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS
    ]
    if tuned.BRAINSEG.DATASET_ROOT:
        tuned.BRAINSEG.DATASET_ROOT = os.path.abspath(tuned.BRAINSEG.DATASET_ROOT)
    tuned.freeze()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TUNED_HEADER}\n{tuned.dump()}", encoding="utf-8")
    return path
