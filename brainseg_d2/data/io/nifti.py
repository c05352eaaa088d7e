"""NIfTI reading checks: what ITK's NIfTI reader does not report.

ITK pads a truncated NIfTI file with zeros and turns NaN/Inf voxels into 0
without a word; a corrupt scan must fail with its name instead, so the header
is parsed here (:func:`parse_nifti_header`), the file's length checked against
it (the gzip trailer, :func:`stored_length`) and float voxels checked before
SimpleITK sees them (:func:`read_nifti`).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

try:  # ISA-L inflates gzip about 2x faster than zlib; optional.
    from isal.igzip import decompress as inflate
    from isal.igzip import open as gzip_open
except ImportError:
    from gzip import decompress as inflate
    from gzip import open as gzip_open


class NiftiError(ValueError):
    """A NIfTI file is not NIfTI, corrupt, truncated or holds NaN/Inf (the message names it)."""


# NIfTI datatype code -> numpy dtype, for the scalar types ITK reads unchanged.
_NIFTI_DTYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8",
    256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8",
}  # fmt: skip


@dataclass(frozen=True)
class NiftiHeader:
    """What the voxel data of a NIfTI file are: where they start, their type and count."""

    offset: int
    dtype: np.dtype | None
    count: int
    scaled: bool

    @property
    def end(self) -> int:
        return self.offset + self.count * (self.dtype.itemsize if self.dtype is not None else 0)


def parse_nifti_header(header: bytes) -> NiftiHeader | None:
    """Data offset, voxel type and count of a NIfTI-1/2 header; None if not NIfTI."""
    for endian in "<>":
        if len(header) < 4:
            return None
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            code = struct.unpack(endian + "h", header[70:72])[0]
            offset = max(int(struct.unpack(endian + "f", header[108:112])[0]), 352)
            slope, inter = struct.unpack(endian + "2f", header[112:120])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            code = struct.unpack(endian + "h", header[12:14])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = max(struct.unpack(endian + "q", header[168:176])[0], 544)
            slope, inter = struct.unpack(endian + "2d", header[176:192])
            break
    else:
        return None
    ndim = max(0, min(int(dims[0]), 7))
    count = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + ndim]]))
    dtype = np.dtype(endian + _NIFTI_DTYPES[code]) if code in _NIFTI_DTYPES else None
    # ITK rescales (and may change the pixel type) unless slope is 0/1 and intercept 0.
    scaled = not (slope in (0.0, 1.0) or np.isnan(slope)) or not (inter == 0.0 or np.isnan(inter))
    return NiftiHeader(offset, dtype, count, scaled)


def read_nifti(path: Path, reader: sitk.ImageFileReader) -> tuple[sitk.Image, bool]:
    """Read a NIfTI file, checking what ITK's reader hides.

    ITK's NIfTI reader pads a truncated file with zeros and silently turns NaN/Inf
    into 0. Integer data cannot hold NaN: completeness is checked from the file
    size (or the gzip trailer) and ITK reads the file. Float data are decompressed
    here once, checked, and handed to SimpleITK as an array with the geometry of
    ITK's own header reading. Anything unusual falls back to ``sitk.ReadImage``.

    Args:
        path: the ``.nii`` or ``.nii.gz`` file.
        reader: its header, read by ITK.

    Returns:
        ``(image, checked)``: ``checked`` is False when the voxels still need a
        NaN/Inf check (``sitk.ReadImage`` read them).

    Raises:
        NiftiError: not NIfTI, corrupt or truncated, NaN or Inf voxels (naming the file).
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip_open if gz else open)(path, "rb") as f:
            header = parse_nifti_header(f.read(544))
        if header is None:
            raise NiftiError(f"{path}: not a NIfTI file")
        if header.dtype is None or header.dtype.kind != "f":
            have = stored_length(path, header.end) if gz else path.stat().st_size
            data = None
        else:
            data = inflate(path.read_bytes()) if gz else path.read_bytes()
            have = len(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise NiftiError(f"{path}: corrupt or truncated file ({exc})") from None
    if have < header.end:
        raise NiftiError(f"{path}: truncated file ({have} of {header.end} bytes)")
    if data is None:
        return sitk.ReadImage(str(path)), False
    voxels = np.frombuffer(data, dtype=header.dtype, count=header.count, offset=header.offset)
    if not np.isfinite(voxels).all():
        raise NiftiError(f"{path}: contains NaN or Inf voxels")
    size = reader.GetSize()
    itk_dtype = sitk.GetArrayViewFromImage(sitk.Image([1] * len(size), reader.GetPixelID())).dtype
    if (
        header.scaled
        or len(size) not in (3, 4)
        or reader.GetNumberOfComponents() != 1
        or int(np.prod(size)) != header.count
        or itk_dtype != header.dtype.newbyteorder("=")
    ):
        return sitk.ReadImage(str(path)), False
    array = voxels.astype(itk_dtype, copy=False).reshape(size[::-1])
    if len(size) == 4:  # SimpleITK builds 4D images from 3D ones, not from arrays
        image = sitk.JoinSeries([sitk.GetImageFromArray(volume) for volume in array])
    else:
        image = sitk.GetImageFromArray(array)
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return image, True


def stored_length(path: Path, expected: int) -> int:
    """Uncompressed length of a gzip file, from its trailer when it agrees.

    The last 4 bytes hold the length modulo 2**32; a cut file ends with arbitrary
    bytes, so a match with the header's expectation means complete. Otherwise the
    whole stream is decompressed to count (EOFError if cut short).
    """
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
            return expected
    total = 0
    with gzip_open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
    return total


def sform_gap(image: sitk.Image, reader: sitk.ImageFileReader) -> float:
    """How far (mm) the NIfTI sform of ``reader``'s file places ``image``'s corners from
    where ``image``'s geometry (ITK's choice, the qform) puts them; 0 without an sform."""
    keys = set(reader.GetMetaDataKeys())
    rows = ("srow_x", "srow_y", "srow_z")
    if not {"sform_code", *rows} <= keys or reader.GetMetaData("sform_code").strip() in ("", "0"):
        return 0.0
    try:
        sform = np.array([[float(v) for v in reader.GetMetaData(r).split()] for r in rows])
    except ValueError:
        return 0.0
    if sform.shape != (3, 4):
        return 0.0
    size = np.asarray(image.GetSize(), dtype=float) - 1
    corners = np.array(
        [[i, j, k] for i in (0, size[0]) for j in (0, size[1]) for k in (0, size[2])]
    )
    read = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    read[:, :2] *= -1  # ITK's LPS -> NIfTI's RAS
    in_sform = corners @ sform[:, :3].T + sform[:, 3]
    return float(np.linalg.norm(read - in_sform, axis=1).max())
