"""Training-time image augmentation: random crop of a zero-padded image and a horizontal flip.

The two label-preserving edits small-image classifiers are trained with (CIFAR's standard recipe,
He et al. 2016: pad 4, crop 32, flip). Hand-written because it is a few lines of numpy on decoded
uint8 images, where torchvision (not a dependency) would add a package for two array slices. Pure:
``(images, options, rng) -> images`` with a numpy Generator, so a given seed always gives the same
edits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def random_crop_flip(
    images: Sequence[np.ndarray], padding: int, flip: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each image randomly shifted (zero-padded, cropped back) and, when ``flip``, mirrored left-right.

    An (H, W[, C]) image is padded by ``padding`` zero pixels a side and cropped back to (H, W) at a
    random offset; the mirror is drawn with probability 0.5. ``padding`` 0 keeps every pixel in place
    (only the flip acts). Shapes and dtypes are kept.
    """
    out = []
    for image in images:
        height, width = image.shape[:2]
        pad = [(padding, padding), (padding, padding)] + [(0, 0)] * (image.ndim - 2)
        top, left = rng.integers(0, 2 * padding + 1, size=2)
        crop = np.pad(image, pad)[top : top + height, left : left + width]
        out.append(crop[:, ::-1] if flip and rng.random() < 0.5 else crop)
    return out
