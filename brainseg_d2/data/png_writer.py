"""Writing slice PNGs on a few threads, overlapped with reading the next case.

The PNGs are 8-bit RGB, every row "Sub"-filtered, and deflated with ISA-L at
level 1 (the default ``png_compression``). OpenCV's libpng/zlib encoder at its
fastest settings took 3.3-4.7x as long per case for files under 1% smaller
(BENCHMARKS.md, converter), and encoding was the largest cost after reading,
so the three PNG chunks are written here and the deflating is left to ISA-L.
Level 0 stores the rows uncompressed, levels 2-9 use zlib at that level.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from brainseg_d2.data.convert_plan import ConversionError

try:  # ISA-L deflates several times faster than zlib at level 1; optional.
    from isal.isal_zlib import compress as _fast_deflate
except ImportError:
    _fast_deflate = None

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb: np.ndarray, compression: int = 1) -> bytes:
    """Encode an 8-bit RGB image as a PNG file (lossless, deterministic).

    Args:
        rgb: (H, W, 3) uint8.
        compression: 0 stored, 1 ISA-L level 1 (zlib level 1 without ISA-L),
            2-9 zlib level.

    Returns:
        the bytes of the PNG file.

    Raises:
        ValueError: not an (H, W, 3) uint8 array, or compression outside 0-9.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if not 0 <= compression <= 9:
        raise ValueError(f"PNG compression must be 0-9, got {compression}")
    height, width = rgb.shape[:2]
    rows = rgb.reshape(height, width * 3)
    # Filter type 1 (Sub): each byte minus the byte one pixel to its left, mod 256.
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 1
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])
    if compression == 1 and _fast_deflate is not None:
        idat = _fast_deflate(filtered.data, 1)
    else:
        idat = zlib.compress(filtered.data, compression)
    # IHDR: width, height, bit depth 8, colour type 2 (RGB), deflate, filter method 0
    # (per-row filter types), no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


class PngWriteError(ConversionError):
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
    ) -> None:
        """Queue ``slices[i]`` (RGB) as ``out_dir/<i:04d>.png`` for each index.

        Args:
            slices: (S, H, W, 3) uint8.
            indices: slice indices to write.
            out_dir: created if missing.
            compression: PNG compression level 0-9.
            on_done: called once the case's PNGs are all written.

        Raises:
            PngWriteError: PNGs of an earlier case could not be written.
        """
        self.wait(keep=max(self._lookahead - 1, 0))
        out_dir.mkdir(parents=True, exist_ok=True)

        def write_png(index: int) -> str | None:
            try:
                (out_dir / f"{index:04d}.png").write_bytes(encode_png(slices[index], compression))
            except OSError as exc:
                return exc.strerror or str(exc)
            return None

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
