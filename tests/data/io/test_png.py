"""PNG encoding (ISA-L deflate in hand-written chunks) and the threaded writer."""

from __future__ import annotations

import re
import zlib

import cv2
import numpy as np
import pytest

from brainseg_d2.data.io.png import (
    PngWriteError,
    PngWriter,
    encode_png,
    read_channel_png,
    tile_channels,
    untile_channels,
)


def _decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return bgr[..., ::-1]


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 5, 3), (64, 47, 3)])
@pytest.mark.parametrize("compression", [0, 1, 6, 9])
def test_encode_png_is_lossless(shape, compression):
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, size=shape, dtype=np.uint8)
    rgb[: shape[0] // 2] = rgb[: shape[0] // 2] // 64  # a smooth part too
    data = encode_png(rgb, compression)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_decode(data), rgb)
    assert encode_png(rgb, compression) == data  # deterministic


def test_encode_png_is_zlib_and_level_order():
    ramp = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (50, 1, 3))
    rgb = (ramp + np.random.default_rng(0).integers(0, 3, ramp.shape)).astype(np.uint8)
    fast = encode_png(rgb, 1)
    np.testing.assert_array_equal(_decode(fast), rgb)
    # The IDAT payload is zlib's own level-1 stream (reproducible on any machine).
    start = fast.index(b"IDAT") + 4
    length = int.from_bytes(fast[start - 8 : start - 4], "big")
    filtered = np.zeros((50, 601), np.uint8)
    filtered[:, 0] = 1
    rows = rgb.reshape(50, 600)
    filtered[:, 1:4] = rows[:, :3]
    filtered[:, 4:] = rows[:, 3:] - rows[:, :-3]
    assert fast[start : start + length] == zlib.compress(filtered.tobytes(), 1)
    # Stored rows are the largest file; zlib's best level the smallest.
    assert len(encode_png(rgb, 0)) > len(fast) >= len(encode_png(rgb, 9))


@pytest.mark.parametrize(
    "array, compression, message",
    [
        (np.zeros((4, 4, 2), np.uint8), 1, "(H, W) or (H, W, 3) uint8"),
        (np.zeros((4, 4, 3), np.uint16), 1, "(H, W) or (H, W, 3) uint8"),
        (np.zeros((0, 4, 3), np.uint8), 1, "(H, W) or (H, W, 3) uint8"),
        (np.zeros((4, 4, 3), np.uint8), 10, "compression must be 0-9"),
    ],
)
def test_encode_png_rejects_bad_input(array, compression, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        encode_png(array, compression)


def test_writer_writes_then_calls_back_in_order(tmp_path):
    slices = np.random.default_rng(1).integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
    done = []
    with PngWriter(lookahead=1) as writer:
        writer.submit(slices, [0, 2], tmp_path / "a", 1, lambda: done.append("a"))
        writer.submit(slices, [3], tmp_path / "b", 1, lambda: done.append("b"))
        assert done == ["a"]  # one case may still be pending
    assert done == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0000.png", "0002.png"]
    np.testing.assert_array_equal(read_channel_png(tmp_path / "b" / "0003.png", 3), slices[3])


def test_writer_failure_names_the_folder_and_skips_the_callback(tmp_path):
    out = tmp_path / "case"
    (out / "0001.png").mkdir(parents=True)  # a folder where a PNG must go
    done = []
    writer = PngWriter()
    with pytest.raises(PngWriteError, match=f"cannot write PNGs into {out}"):
        writer.submit(np.zeros((2, 3, 3, 3), np.uint8), [0, 1], out, 1, lambda: done.append(1))
    writer.close()
    assert done == []


@pytest.mark.parametrize("num_channels", [1, 2, 4, 7])
def test_channel_tiles_round_trip_through_a_greyscale_png(tmp_path, num_channels):
    image = np.random.default_rng(num_channels).integers(0, 256, (9, 11, num_channels), np.uint8)
    tiles = tile_channels(image)
    assert tiles.shape == (9 * num_channels, 11)
    np.testing.assert_array_equal(tiles[9:18], image[..., 1]) if num_channels > 1 else None
    path = tmp_path / "s.png"
    path.write_bytes(encode_png(tiles))
    np.testing.assert_array_equal(read_channel_png(path, num_channels), image)
    np.testing.assert_array_equal(untile_channels(tiles, num_channels), image)


def test_reading_with_the_wrong_channel_count_names_the_file(tmp_path):
    path = tmp_path / "s.png"
    path.write_bytes(encode_png(tile_channels(np.zeros((5, 4, 3), np.uint8))))
    message = r"s\.png: cannot split an image of shape \(15, 4\) into 4"
    with pytest.raises(ValueError, match=message):
        read_channel_png(path, 4)


def test_writer_writes_label_pngs_beside_the_images(tmp_path):
    slices = np.random.default_rng(0).integers(0, 256, (3, 6, 5, 4), np.uint8)
    labels = np.random.default_rng(1).integers(0, 4, (3, 6, 5), np.uint8)
    with PngWriter() as writer:
        writer.submit(slices, [0, 2], tmp_path / "img", 1, labels=labels,
                      label_dir=tmp_path / "lab")
    assert sorted(p.name for p in (tmp_path / "lab").iterdir()) == ["0000.png", "0002.png"]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "lab/0002.png"), -1), labels[2])
    np.testing.assert_array_equal(read_channel_png(tmp_path / "img/0002.png", 4), slices[2])
