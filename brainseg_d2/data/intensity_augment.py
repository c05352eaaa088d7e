"""Per-channel intensity augmentation for MRI slices, as Detectron2 augmentations.

Each channel of a slice is one MRI sequence, normalised on its own by the
converter, so scanners and protocols change each channel's contrast
independently. These augmentations draw their parameters for every channel
independently (SynthSeg-style domain randomisation, for any training data):

* :class:`RandomChannelContrast`: contrast about the channel's brain mean, and
  a brightness shift;
* :class:`RandomChannelGamma`: ``255 * (x / 255) ** gamma``;
* :class:`RandomBiasField`: a smooth multiplicative field (coil sensitivity);
* :class:`RandomNoise`: Gaussian noise;
* :class:`RandomLesionContrast`: each labelled tissue's signal scaled on its
  own, per sequence (needs the slice's label map, so training only).

Images are ``(H, W, N)`` (or ``(H, W)``) uint8 or float in 0-255, any N.
Pixels that are 0 in every channel lie outside the (skull-stripped) brain and
stay 0, so the background the model sees is the one real scans have; the
result has the input's dtype (uint8 rounded), clipped to 0-255. Randomness
comes from ``np.random``, as in Detectron2's own augmentations.
:func:`build_intensity_augmentations` builds the usual chain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from detectron2.data import transforms as T
from scipy import ndimage

from brainseg_d2.data.phantom_fields import upsample

__all__ = [
    "RandomBiasField",
    "RandomChannelContrast",
    "RandomChannelGamma",
    "RandomLesionContrast",
    "RandomNoise",
    "build_intensity_augmentations",
]


def _channels(image: np.ndarray) -> int:
    if image.ndim == 2:
        return 1
    if image.ndim == 3:
        return image.shape[2]
    raise ValueError(f"expected an (H, W) or (H, W, N) image, got shape {image.shape}")


def _log_uniform(lo: float, hi: float, size: int) -> np.ndarray:
    return np.exp(np.random.uniform(np.log(lo), np.log(hi), size))


def _check_range(name: str, lo: float, hi: float, positive: bool = True) -> None:
    if not (0 < lo if positive else 0 <= lo) or not lo <= hi:
        raise ValueError(
            f"{name} must satisfy {'0 <' if positive else '0 <='} low <= high, got ({lo}, {hi})"
        )


def _per_channel(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> T.ColorTransform:
    """A transform that replaces each channel ``c`` of the brain by ``fn(values, brain, c)``.

    ``values`` is the float32 (H, W) channel, ``brain`` the (H, W) mask of
    pixels non-zero in some channel.
    """

    def apply(img: np.ndarray) -> np.ndarray:
        squeeze = img.ndim == 2
        x = img[..., None] if squeeze else img
        brain = (x != 0).any(axis=2)
        out = x.astype(np.float32)
        for c in range(x.shape[2]):
            out[..., c] = np.where(brain, np.clip(fn(out[..., c], brain, c), 0.0, 255.0), 0.0)
        if img.dtype == np.uint8:
            out = np.rint(out).astype(np.uint8)
        return out[..., 0] if squeeze else out

    return T.ColorTransform(apply)


class RandomChannelContrast(T.Augmentation):
    """Per channel ``m + a (x - m) + 255 b``: ``m`` the channel's brain mean,
    ``a`` log-uniform in ``[contrast_min, contrast_max]``, ``b`` uniform in ``[-shift, shift]``."""

    def __init__(self, contrast_min: float, contrast_max: float, shift: float = 0.0):
        super().__init__()
        _check_range("contrast", contrast_min, contrast_max)
        _check_range("shift", 0.0, shift, positive=False)
        self._init(locals())

    def get_transform(self, image):
        n = _channels(image)
        a = _log_uniform(self.contrast_min, self.contrast_max, n)
        b = np.random.uniform(-self.shift, self.shift, n) * 255.0

        def fn(x, brain, c):
            m = float(x[brain].mean()) if brain.any() else 0.0
            return m + a[c] * (x - m) + b[c]

        return _per_channel(fn)


class RandomChannelGamma(T.Augmentation):
    """Per channel ``255 * (x / 255) ** gamma``, gamma log-uniform in ``[gamma_min, gamma_max]``."""

    def __init__(self, gamma_min: float, gamma_max: float):
        super().__init__()
        _check_range("gamma", gamma_min, gamma_max)
        self._init(locals())

    def get_transform(self, image):
        gamma = _log_uniform(self.gamma_min, self.gamma_max, _channels(image))
        return _per_channel(lambda x, brain, c: 255.0 * (np.maximum(x, 0.0) / 255.0) ** gamma[c])


class RandomBiasField(T.Augmentation):
    """Per channel ``x * exp(s * f)``: ``f`` a smooth unit-variance random field
    (cubic B-spline through ``nodes`` x ``nodes`` random values), ``s`` uniform in
    ``[0, max_sd]``."""

    def __init__(self, max_sd: float, nodes: int = 4):
        super().__init__()
        _check_range("max_sd", 0.0, max_sd, positive=False)
        if nodes < 2:
            raise ValueError(f"nodes must be at least 2, got {nodes}")
        self._init(locals())

    def get_transform(self, image):
        n = _channels(image)
        h, w = image.shape[:2]
        sd = np.random.uniform(0.0, self.max_sd, n)
        coarse = np.random.standard_normal((n, self.nodes, self.nodes))
        fields = []
        for c in range(n):
            f = upsample(coarse[c], (h, w))
            fields.append(f / max(float(f.std()), 1e-6))

        def fn(x, brain, c):
            f = fields[c]
            return x * np.exp(sd[c] * (f - (f[brain].mean() if brain.any() else 0.0)))

        return _per_channel(fn)


class RandomNoise(T.Augmentation):
    """Per channel Gaussian noise of sd uniform in ``[0, max_sd]`` (0-255 units)."""

    def __init__(self, max_sd: float):
        super().__init__()
        _check_range("max_sd", 0.0, max_sd, positive=False)
        self._init(locals())

    def get_transform(self, image):
        n = _channels(image)
        sd = np.random.uniform(0.0, self.max_sd, n)
        noise = [np.random.standard_normal(image.shape[:2]).astype(np.float32) for _ in range(n)]
        return _per_channel(lambda x, brain, c: x + sd[c] * noise[c])


class RandomLesionContrast(T.Augmentation):
    """Scale every labelled tissue's signal by its own factor, per sequence.

    Across cases and scanners, the tumour tissues' signal against normal brain and
    against each other changes from one case to the next, while the per-channel
    augmentations above change every tissue of a channel alike. Here each tissue
    code ``k > 0`` of the slice's label map and each sequence ``s`` get a factor
    ``f`` log-uniform in ``[factor_min, factor_max]``: the image becomes
    ``x * exp(sum_k log f[k, s] * w_k)``, where ``w_k`` is the tissue's mask
    smoothed by a Gaussian of ``sigma`` pixels, so no sharp edge that the labels
    would give away appears at a tissue border. Channel ``c`` is sequence
    ``c % sequences``: with neighbouring slices stacked as channels (2.5D), every
    slice's copy of a sequence gets the same factor (the centre slice's labels).
    A slice without labels (no label map, or no tissue) is left as it is.
    """

    input_args = ("image", "sem_seg")

    def __init__(
        self, factor_min: float, factor_max: float, sequences: int | None = None, sigma: float = 1.0
    ):
        super().__init__()
        _check_range("factor", factor_min, factor_max)
        _check_range("sigma", 0.0, sigma, positive=False)
        if sequences is not None and sequences < 1:
            raise ValueError(f"sequences must be at least 1, got {sequences}")
        self._init(locals())

    def get_transform(self, image, sem_seg):
        n = _channels(image)
        seqs = self.sequences or n
        if n % seqs:
            raise ValueError(f"{n} channels do not split into {seqs} sequences")
        codes = [] if sem_seg is None else [int(k) for k in np.unique(sem_seg) if k > 0]
        if not codes:
            return T.NoOpTransform()
        log_f = np.log(_log_uniform(self.factor_min, self.factor_max, len(codes) * seqs))
        log_f = log_f.reshape(len(codes), seqs)
        weights = []
        for k in codes:
            w = (sem_seg == k).astype(np.float32)
            weights.append(ndimage.gaussian_filter(w, self.sigma) if self.sigma > 0 else w)
        gain = np.stack([sum(lf[s] * w for lf, w in zip(log_f, weights)) for s in range(seqs)])
        gain = np.exp(gain)
        return _per_channel(lambda x, brain, c: x * gain[c % seqs])


def build_intensity_augmentations(
    *,
    contrast: tuple[float, float] = (1.0, 1.0),
    shift: float = 0.0,
    gamma: tuple[float, float] = (1.0, 1.0),
    bias_sd: float = 0.0,
    noise_sd: float = 0.0,
    lesion_contrast: tuple[float, float] = (1.0, 1.0),
    sequences: int | None = None,
    prob: float = 1.0,
) -> list[T.Augmentation]:
    """The per-channel intensity augmentations that are switched on, in a fixed order.

    Lesion contrast and bias field first (they act on the tissue signal), then
    contrast, gamma and noise. Each is applied with probability ``prob``
    (``T.RandomApply``).

    Args:
        contrast: contrast factor range; (1, 1) disables it (and the shift).
        shift: brightness shift, a fraction of 255.
        gamma: gamma range; (1, 1) disables it.
        bias_sd: largest sd of the log bias field; 0 disables it.
        noise_sd: largest noise sd in 0-255 units; 0 disables it.
        lesion_contrast: per-tissue factor range of :class:`RandomLesionContrast`;
            (1, 1) disables it.
        sequences: channels of one slice (the sequences), for
            :class:`RandomLesionContrast`; None: every channel is one.
        prob: probability of applying each one.

    Returns:
        a list of augmentations, empty when all are disabled.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be between 0 and 1, got {prob}")
    augs: list[T.Augmentation] = []
    if tuple(lesion_contrast) != (1.0, 1.0):
        augs.append(RandomLesionContrast(*lesion_contrast, sequences=sequences))
    if bias_sd > 0:
        augs.append(RandomBiasField(bias_sd))
    if tuple(contrast) != (1.0, 1.0) or shift > 0:
        augs.append(RandomChannelContrast(*contrast, shift=shift))
    if tuple(gamma) != (1.0, 1.0):
        augs.append(RandomChannelGamma(*gamma))
    if noise_sd > 0:
        augs.append(RandomNoise(noise_sd))
    if prob < 1.0:
        augs = [T.RandomApply(a, prob) for a in augs]
    return augs
