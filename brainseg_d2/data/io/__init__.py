"""File codecs written here because the libraries' own fall short, one reason each.

* :mod:`.png`: slice PNGs, because encoding is the converter's largest cost
  after reading and ISA-L deflates them several times faster than OpenCV's
  libpng/zlib; channels are stored as vertical tiles so any number fits.
* :mod:`.nifti`: NIfTI header and gzip-length checks, because ITK's reader pads
  truncated files with zeros and turns NaN/Inf into 0 without an error.
* :mod:`.metaimage`: the data file a ``.mhd`` header names, because ITK reports a
  missing one as a stale errno after printing to stderr.

Everything else is read with SimpleITK and OpenCV
(:mod:`brainseg_d2.data.volume_io`).
"""
