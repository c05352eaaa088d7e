"""PNG codec for slice images: channel tiles, encoded on threads while the next case is read.

A slice of N channels is stored losslessly as one 8-bit greyscale PNG of N
tiles stacked vertically, ``(N * H, W)``: channel ``k`` is rows ``k*H .. k*H+H-1``
(:func:`tile_channels`, read back with :func:`read_channel_png`). Any N works,
and every viewer shows the sequences one above the other. Label slices are
plain greyscale PNGs of tissue codes.

Why an encoder of its own: encoding is the converter's largest cost after
reading, and writing the three PNG chunks here deflates the "Sub"-filtered
rows with zlib directly (level 1 is the default ``png_compression``), faster
than OpenCV's libpng for files about as small, and byte-for-byte reproducible
(BENCHMARKS.md, converter). Level 0 stores the rows uncompressed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


#: PNG colour type per number of samples of a pixel: grey, RGB.
_COLOUR_TYPES = {1: 0, 3: 2}


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """Encode an 8-bit greyscale or RGB image as a PNG file (lossless, deterministic).

    Args:
        image: (H, W) greyscale or (H, W, 3) RGB, uint8.
        compression: zlib level, 0 (stored) to 9. Not ISA-L: its deflate gave
            different (valid) streams for the same rows in some runs.

    Returns:
        the bytes of the PNG file.

    Raises:
        ValueError: not an (H, W) or (H, W, 3) uint8 array, or compression outside 0-9.
    """
    image = np.asarray(image)
    samples = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else 0)
    if samples not in _COLOUR_TYPES or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    if not 0 <= compression <= 9:
        raise ValueError(f"PNG compression must be 0-9, got {compression}")
    height, width = image.shape[:2]
    rows = image.reshape(height, width * samples)
    # Filter type 1 (Sub): each byte minus the byte one pixel to its left, mod 256.
    filtered = np.empty((height, width * samples + 1), dtype=np.uint8)
    filtered[:, 0] = 1
    filtered[:, 1 : 1 + samples] = rows[:, :samples]
    np.subtract(rows[:, samples:], rows[:, :-samples], out=filtered[:, 1 + samples :])
    idat = zlib.compress(filtered.data, compression)
    # IHDR: width, height, bit depth 8, colour type, deflate, filter method 0
    # (per-row filter types), no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[samples], 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def tile_channels(image: np.ndarray) -> np.ndarray:
    """``(H, W, N)`` channels -> ``(N * H, W)`` greyscale tiles, channel 0 on top."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, N) image, got shape {image.shape}")
    return np.ascontiguousarray(np.moveaxis(image, 2, 0)).reshape(-1, image.shape[1])


def untile_channels(tiles: np.ndarray, num_channels: int) -> np.ndarray:
    """Inverse of :func:`tile_channels`: ``(N * H, W)`` -> ``(H, W, N)``.

    Raises:
        ValueError: the height is not a multiple of ``num_channels``.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 2 or num_channels < 1 or tiles.shape[0] % num_channels:
        raise ValueError(
            f"cannot split an image of shape {tiles.shape} into {num_channels} channel tiles"
        )
    height = tiles.shape[0] // num_channels
    return np.ascontiguousarray(np.moveaxis(tiles.reshape(num_channels, height, -1), 0, 2))


def read_channel_png(path: str | Path, num_channels: int) -> np.ndarray:
    """Read a slice written by the converter: ``(H, W, N)`` uint8, channels in dataset order.

    Raises:
        ValueError: unreadable file, or a height that does not split into
            ``num_channels`` tiles; the message names the file.
    """
    tiles = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if tiles is None:
        raise ValueError(f"cannot read image {path}")
    if tiles.ndim != 2:
        raise ValueError(
            f"{path}: expected a greyscale PNG of {num_channels} channel tiles, "
            f"got shape {tiles.shape} (converted by an older brainseg_d2? re-run brainseg-convert)"
        )
    try:
        return untile_channels(tiles, num_channels)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class PngWriteError(ValueError):
    """PNGs could not be written (disk full, permissions): fatal, not a bad case."""


class PngWriter:
    """Writes slice PNGs on a small thread pool, then runs a callback per case.

    OpenCV releases the GIL while encoding, so with ``lookahead=1`` one case's
    PNGs are encoded while the caller reads and preprocesses the next case; at
    most that one earlier case is pending. Callbacks (writing the case record,
    which marks the case finished for resuming) run in the caller's thread,
    in submission order, after all PNGs of their case are written.

    Args:
        threads: encoding threads.
        lookahead: cases whose PNGs may still be pending when :meth:`submit`
            returns (0: submit waits for its own case).
    """

    def __init__(self, threads: int = 2, lookahead: int = 0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._lookahead = lookahead
        self._pending: list[tuple[list[Future], Path, Callable[[], None]]] = []

    def submit(
        self,
        slices: np.ndarray,
        indices: Sequence[int],
        out_dir: Path,
        compression: int,
        on_done: Callable[[], None] = lambda: None,
        *,
        labels: np.ndarray | None = None,
        label_dir: Path | None = None,
        label_indices: Sequence[int] | None = None,
    ) -> None:
        """Queue ``slices[i]`` as ``out_dir/<i:04d>.png`` (channel tiles) for each index.

        Args:
            slices: (S, H, W, N) uint8.
            indices: slice indices to write.
            out_dir: created if missing.
            compression: PNG compression level 0-9.
            on_done: called once the case's PNGs are all written.
            labels: (S, H, W) uint8 tissue codes, written as greyscale
                ``label_dir/<i:04d>.png``; None: no labels.
            label_dir: folder for the label PNGs (needed with ``labels``).
            label_indices: slices whose labels are written (default ``indices``;
                must be among them).

        Raises:
            PngWriteError: PNGs of an earlier case could not be written.
        """
        self.wait(keep=max(self._lookahead - 1, 0))
        out_dir.mkdir(parents=True, exist_ok=True)
        if labels is not None:
            label_dir.mkdir(parents=True, exist_ok=True)

        def write_png(index: int) -> str | None:
            try:
                tiles = tile_channels(slices[index])
                (out_dir / f"{index:04d}.png").write_bytes(encode_png(tiles, compression))
                if labels is not None and index in with_labels:
                    encoded = encode_png(labels[index], compression)
                    (label_dir / f"{index:04d}.png").write_bytes(encoded)
            except OSError as exc:
                return exc.strerror or str(exc)
            return None

        with_labels = set(indices if label_indices is None else label_indices)
        futures = [self._pool.submit(write_png, i) for i in indices]
        self._pending.append((futures, out_dir, on_done))
        self.wait(keep=self._lookahead)

    def wait(self, keep: int = 0) -> None:
        """Finish pending cases, oldest first, until at most ``keep`` remain."""
        while len(self._pending) > keep:
            futures, out_dir, on_done = self._pending.pop(0)
            errors = [e for e in (f.result() for f in futures) if e is not None]
            if errors:
                raise PngWriteError(f"cannot write PNGs into {out_dir} ({errors[0]})")
            on_done()

    def close(self) -> None:
        """Finish every pending case and stop the threads."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
