"""Reading MRI volumes and putting them in a canonical orientation.

Everything that touches files goes through :func:`read_image`, so every reader
error becomes a :class:`VolumeError` whose one-line message names the file.

Canonical orientation is a pure permutation/flip of voxel axes (SimpleITK's
``DICOMOrient``), never a resampling, so it is exactly invertible: the voxel
values of the canonical volume are the original ones, only reordered. Index
axes are ITK's (x, y, z); numpy arrays from SimpleITK are (z, y, x).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: File name endings SimpleITK reads that the source finders look for.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


try:  # ISA-L inflates gzip about 2x faster than zlib; optional.
    from isal.igzip import decompress as _inflate
    from isal.igzip import open as _gzip_open
except ImportError:
    from gzip import decompress as _inflate
    from gzip import open as _gzip_open


class VolumeError(ValueError):
    """A volume cannot be used: unreadable, wrong shape, bad values, geometry mismatch."""


def _first_line(message: str, path: Path) -> str:
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    # ITK messages start with a file/line banner; the last line says what went wrong.
    line = lines[-1] if lines else "unknown error"
    return line.replace(f'"{path}"', "it").replace(str(path), "it")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VolumeError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        # ITK would say "Unable to determine ImageIO reader", which hides the cause.
        raise VolumeError(f"{path}: empty file (0 bytes)")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read one 3D scalar volume.

    Args:
        path: a file SimpleITK reads (.nii, .nii.gz, .mha, .mhd, .nrrd, ...) or a
            folder holding one DICOM series (read with ``ImageSeriesReader``).

    Returns:
        the image, 3D, one component per voxel.

    Raises:
        VolumeError: missing, corrupt or truncated file; not 3D (e.g. 4D);
            vector pixels; NaN or Inf voxels. The message names the file.
    """
    path = Path(path)
    _check_exists(path)
    checked = False  # _read_nifti checks float voxels for NaN/Inf itself
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        elif path.name.lower().endswith((".nii", ".nii.gz")):
            image, checked = _read_nifti(path), True
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read ({_first_line(str(exc), path)})") from None
    if image.GetDimension() != 3:
        raise VolumeError(
            f"{path}: expected a 3D volume, got {image.GetDimension()}D of size {image.GetSize()}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path}: expected one value per voxel, got "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    return image if checked else _check_finite(image, path)


def _check_finite(image: sitk.Image, path: Path) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise VolumeError(f"{path}: contains NaN or Inf voxels")
    return image


# NIfTI datatype code -> numpy dtype, for the scalar types ITK reads unchanged.
_NIFTI_DTYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8",
    256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8",
}  # fmt: skip


@dataclass(frozen=True)
class _NiftiHeader:
    offset: int
    dtype: np.dtype | None
    count: int
    scaled: bool

    @property
    def end(self) -> int:
        return self.offset + self.count * (self.dtype.itemsize if self.dtype is not None else 0)


def _parse_nifti_header(header: bytes) -> _NiftiHeader | None:
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
    return _NiftiHeader(offset, dtype, count, scaled)


def _read_nifti(path: Path) -> sitk.Image:
    """Read a NIfTI file, checking what ITK's reader hides.

    ITK's NIfTI reader pads a truncated file with zeros and silently turns NaN/Inf
    into 0. Integer data cannot hold NaN: completeness is checked from the file
    size (or the gzip trailer) and ITK reads the file. Float data are decompressed
    here once, checked, and handed to SimpleITK as an array with the geometry of
    ITK's own header reading. Anything unusual falls back to ``sitk.ReadImage``.
    """
    reader = read_header(path)
    if reader.GetDimension() != 3:
        raise VolumeError(
            f"{path}: expected a 3D volume, got {reader.GetDimension()}D of size {reader.GetSize()}"
        )
    gz = path.name.lower().endswith(".gz")
    try:
        with (_gzip_open if gz else open)(path, "rb") as f:
            header = _parse_nifti_header(f.read(544))
        if header is None:
            raise VolumeError(f"{path}: not a NIfTI file")
        if header.dtype is None or header.dtype.kind != "f":
            have = _stored_length(path, header.end) if gz else path.stat().st_size
            data = None
        else:
            data = _inflate(path.read_bytes()) if gz else path.read_bytes()
            have = len(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(f"{path}: corrupt or truncated file ({exc})") from None
    if have < header.end:
        raise VolumeError(f"{path}: truncated file ({have} of {header.end} bytes)")
    if data is None:
        return _check_finite(sitk.ReadImage(str(path)), path)
    voxels = np.frombuffer(data, dtype=header.dtype, count=header.count, offset=header.offset)
    if not np.isfinite(voxels).all():
        raise VolumeError(f"{path}: contains NaN or Inf voxels")
    size = reader.GetSize()
    itk_dtype = sitk.GetArrayViewFromImage(sitk.Image([1] * len(size), reader.GetPixelID())).dtype
    if (
        header.scaled
        or reader.GetNumberOfComponents() != 1
        or int(np.prod(size)) != header.count
        or itk_dtype != header.dtype.newbyteorder("=")
    ):
        return _check_finite(sitk.ReadImage(str(path)), path)
    image = sitk.GetImageFromArray(voxels.astype(itk_dtype, copy=False).reshape(size[::-1]))
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return image


def _stored_length(path: Path, expected: int) -> int:
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
    with _gzip_open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
    return total


def read_header(path: str | os.PathLike) -> sitk.ImageFileReader:
    """Read only the header of a volume file (size, spacing, ...) without the voxels.

    Args:
        path: an image file (not a DICOM folder).

    Returns:
        a reader on which ``GetSize()``, ``GetSpacing()``, ``GetOrigin()``,
        ``GetDirection()`` and ``GetDimension()`` are valid.

    Raises:
        VolumeError: missing or unreadable header, naming the file.
    """
    path = Path(path)
    _check_exists(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read header ({_first_line(str(exc), path)})") from None
    return reader


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise VolumeError(f"{folder}: folder holds {len(series)} DICOM series, expected one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def check_same_geometry(
    images: Mapping[str, sitk.Image | sitk.ImageFileReader],
    *,
    tol: float = 1e-4,
    case_id: str = "volume",
) -> None:
    """Check that all volumes of a case share one voxel grid.

    Args:
        images: name (channel or ``mask``) -> image, or a header-only reader from
            :func:`read_header`. The first entry is the reference.
        tol: absolute tolerance on spacing (mm), origin (mm) and direction cosines.
        case_id: named in the error message.

    Raises:
        VolumeError: size differs, or spacing/origin/direction differ by more than
            ``tol``; the message names the case, both volumes and both values.
    """
    if not images:
        return
    names = list(images)
    ref_name, ref = names[0], images[names[0]]
    for name in names[1:]:
        img = images[name]
        checks = (
            ("size", ref.GetSize(), img.GetSize(), 0.0),
            ("spacing", ref.GetSpacing(), img.GetSpacing(), tol),
            ("origin", ref.GetOrigin(), img.GetOrigin(), tol),
            ("direction", ref.GetDirection(), img.GetDirection(), tol),
        )
        for what, a, b, t in checks:
            if len(a) != len(b) or not np.allclose(a, b, rtol=0.0, atol=t):
                raise VolumeError(
                    f"case {case_id}: {what} of '{name}'{_file_of(img)} {_fmt(b)} differs from "
                    f"'{ref_name}'{_file_of(ref)} {_fmt(a)} (tolerance {t})"
                )


def _file_of(image: sitk.Image | sitk.ImageFileReader) -> str:
    """`` (<file>)`` for a header-only reader, so that messages name the file."""
    name = image.GetFileName() if isinstance(image, sitk.ImageFileReader) else ""
    return f" ({name})" if name else ""


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def orientation_code(image: sitk.Image | Sequence[float]) -> str:
    """Three-letter DICOM orientation code (``LPS`` = identity direction).

    Args:
        image: an image, or its direction as 9 row-major floats.
    """
    direction = image.GetDirection() if isinstance(image, sitk.Image) else tuple(image)
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(direction)


def to_canonical(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """Permute/flip voxel axes so that the image has the given orientation code.

    Args:
        image: 3D image.
        orientation: DICOM code, e.g. ``LPS``: index x runs towards patient Left,
            y towards Posterior, z towards Superior. For oblique images the closest
            axis order is used and the direction stays oblique.

    Returns:
        the reoriented image (same voxel values, no interpolation).
    """
    return sitk.DICOMOrient(image, orientation)


def from_canonical(image: sitk.Image, original_orientation: str) -> sitk.Image:
    """Inverse of :func:`to_canonical`: reorient back to ``original_orientation``.

    Voxel values and size are restored exactly; origin/direction agree up to
    floating-point rounding (use ``preprocess.slices_to_image`` for bit-exact
    geometry from a stored geometry dict).
    """
    return sitk.DICOMOrient(image, original_orientation)


def axis_transform(direction: Sequence[float], orientation: str) -> tuple[list[int], list[bool]]:
    """The permutation/flips that :func:`to_canonical` applies, as plain lists.

    Computed by reorienting a tiny image with the same direction, so it matches
    ``DICOMOrient`` exactly (including its choice for oblique directions).

    Args:
        direction: 9 row-major direction cosines of the original image.
        orientation: target DICOM code.

    Returns:
        ``(permutation, flips)`` over ITK index axes (x, y, z): canonical axis ``i``
        is original axis ``permutation[i]``, reversed when ``flips[i]``.
    """
    probe = sitk.Image([2, 3, 4], sitk.sitkUInt8)
    probe.SetDirection(tuple(float(d) for d in direction))
    out = sitk.DICOMOrient(probe, orientation)
    d_in = np.asarray(direction, dtype=float).reshape(3, 3)
    d_out = np.asarray(out.GetDirection(), dtype=float).reshape(3, 3)
    # d_out = d_in @ P with P a signed permutation; d_in is orthonormal.
    signed = np.rint(np.linalg.solve(d_in, d_out)).astype(int)
    permutation = [int(np.flatnonzero(signed[:, i])[0]) for i in range(3)]
    flips = [bool(signed[permutation[i], i] < 0) for i in range(3)]
    return permutation, flips


def reorient_array(
    array: np.ndarray, permutation: Sequence[int], flips: Sequence[bool]
) -> np.ndarray:
    """Apply :func:`axis_transform`'s result to a numpy volume (a view, no copy).

    Args:
        array: (z, y, x) array as from ``sitk.GetArrayFromImage`` of the original,
            or (z, y, x, ...) with trailing axes (e.g. RGB) that are kept.
        permutation, flips: from :func:`axis_transform`.

    Returns:
        (z', y', x'[, ...]) array equal to ``GetArrayFromImage(to_canonical(image))``.
    """
    # numpy axis a holds ITK axis 2 - a; trailing axes (e.g. RGB) stay last.
    axes = [2 - permutation[2 - a] for a in range(3)] + list(range(3, array.ndim))
    out = np.transpose(array, axes)
    flip_axes = tuple(a for a in range(3) if flips[2 - a])
    return np.flip(out, flip_axes) if flip_axes else out


def restore_array(
    array: np.ndarray, permutation: Sequence[int], flips: Sequence[bool]
) -> np.ndarray:
    """Exact inverse of :func:`reorient_array` (a view, no copy).

    Args:
        array: canonical (z', y', x') array.
        permutation, flips: the values used to produce it.

    Returns:
        the (z, y, x) array in the original voxel order.
    """
    flip_axes = tuple(a for a in range(3) if flips[2 - a])
    if flip_axes:
        array = np.flip(array, flip_axes)
    axes = [2 - permutation[2 - a] for a in range(3)]
    return np.transpose(array, np.argsort(axes))
