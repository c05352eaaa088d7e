#!/usr/bin/env python
"""How to store N-channel slices: size and speed of the candidate formats, same slices.

Every brain slice of each case (all four BraTS sequences, preprocessed as the
converter does) is encoded and decoded in each format, in one process:

* ``rgb3``: the former layout, 3 channels (FLAIR, T1ce, T2) as an RGB PNG (reference);
* ``rgba4``: 4 channels as an RGBA PNG (only for N <= 4);
* ``tiles4``: 4 channels as a greyscale PNG of 4 tiles stacked vertically (any N);
* ``npy4``: raw ``.npy``; ``npz4``: zlib-compressed ``.npz``.

PNGs are written by the converter's own encoder (``brainseg_d2.data.io.png.encode_png``: Sub
filter, ISA-L level 1) and read with OpenCV, as the mapper reads them.

    .venv/bin/python bench/slice_storage.py                          # 3 phantom cases, 1.5 mm
    .venv/bin/python bench/slice_storage.py --data /path/to/brats    # BraTS case folders
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np

from brainseg_d2.data.io.png import encode_png, fast_deflate, png_chunk, tile_channels
from brainseg_d2.data.preprocess import PreprocessOptions, preprocess_volume
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.data.volume_io import read_image

CHANNELS = ("flair", "t1", "t1ce", "t2")


def _rgba_png(image: np.ndarray) -> bytes:
    """RGBA PNG with the converter's filter and deflate (the encoder writes grey/RGB only)."""
    import struct
    import zlib

    h, w, n = image.shape
    rows = image.reshape(h, w * n)
    filtered = np.empty((h, w * n + 1), np.uint8)
    filtered[:, 0] = 1
    filtered[:, 1 : 1 + n] = rows[:, :n]
    np.subtract(rows[:, n:], rows[:, :-n], out=filtered[:, 1 + n :])
    data = fast_deflate(filtered.data, 1) if fast_deflate else zlib.compress(filtered.data, 1)
    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))  # fmt: skip


def _npy(image: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, image)
    return f.getvalue()


def _npz(image: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.savez_compressed(f, a=image)
    return f.getvalue()


def _imdecode(blob: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


FORMATS: dict[str, tuple[Callable, Callable]] = {
    "rgb3": (lambda s: encode_png(s[..., [0, 2, 3]]), _imdecode),
    "rgba4": (_rgba_png, _imdecode),
    "tiles4": (lambda s: encode_png(tile_channels(s)), _imdecode),
    "npy4": (_npy, lambda b: np.load(io.BytesIO(b))),
    "npz4": (_npz, lambda b: np.load(io.BytesIO(b))["a"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder of BraTS cases (default: 3 phantom cases)")
    p.add_argument("--spacing", type=float, default=1.5, help="phantom voxel size (mm)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            from brainseg_d2.data.phantom import generate_dataset

            generate_dataset(tmp, 3, seed=0, spacing=args.spacing)
        cases = find_brats_cases(args.data or tmp)
        print("| case | slices | " + " | ".join(FORMATS) + " |")
        print("|---|---|" + "---|" * len(FORMATS))
        for case in cases:
            images = {c: read_image(case.channels[c]) for c in CHANNELS}
            pre = preprocess_volume(images, PreprocessOptions(channels=CHANNELS))
            slices = pre.slices[pre.brain.reshape(len(pre.brain), -1).any(axis=1)]
            cells = []
            for encode, decode in FORMATS.values():
                t = time.perf_counter()
                blobs = [encode(s) for s in slices]
                enc = (time.perf_counter() - t) / len(slices) * 1e3
                t = time.perf_counter()
                for b in blobs:
                    decode(b)
                dec = (time.perf_counter() - t) / len(slices) * 1e3
                size = sum(map(len, blobs)) / len(slices) / 1024
                cells.append(f"{size:.1f} KiB, {enc:.2f} / {dec:.2f} ms")
            print(f"| {case.case_id} | {len(slices)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
