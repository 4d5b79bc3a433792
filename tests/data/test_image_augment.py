"""Random crop of a zero-padded image and horizontal flip: pure, seeded, shape-keeping."""

from __future__ import annotations

import numpy as np

from tunelab.data.image_augment import random_crop_flip


def _images(n: int, channels: int | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (n, 6, 5) if channels is None else (n, 6, 5, channels)
    return list(rng.integers(1, 256, size=shape, dtype=np.uint8))  # no zero pixel: padding is visible


def _windows(image: np.ndarray, padding: int) -> list[np.ndarray]:
    """Every (crop, flip) result the augmentation may give for ``image``."""
    pad = [(padding, padding), (padding, padding)] + [(0, 0)] * (image.ndim - 2)
    padded, (h, w) = np.pad(image, pad), image.shape[:2]
    crops = [padded[t : t + h, s : s + w] for t in range(2 * padding + 1) for s in range(2 * padding + 1)]
    return crops + [c[:, ::-1] for c in crops]


def test_no_padding_no_flip_is_the_identity():
    images = _images(4)
    out = random_crop_flip(images, 0, False, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(images, out, strict=True))


def test_each_output_is_a_shifted_or_mirrored_window_and_draws_vary():
    for channels in (None, 3):
        images = _images(64, channels)
        out = random_crop_flip(images, 2, True, np.random.default_rng(1))
        drawn = []  # index of the (crop, flip) window each output is: crops first, then their mirrors
        for image, edited in zip(images, out, strict=True):
            assert edited.shape == image.shape
            assert edited.dtype == np.uint8
            drawn.append(next(i for i, w in enumerate(_windows(image, 2)) if np.array_equal(edited, w)))
        assert len(set(drawn)) > 20  # of the 50 windows: offsets are drawn, not fixed
        assert 16 < sum(i >= 25 for i in drawn) < 48  # the flip is a coin toss


def test_same_seed_same_edits():
    images = _images(8)
    a = random_crop_flip(images, 3, True, np.random.default_rng(5))
    b = random_crop_flip(images, 3, True, np.random.default_rng(5))
    c = random_crop_flip(images, 3, True, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
