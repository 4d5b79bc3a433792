"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``) and the idx format it ships in.

The four ``*-ubyte.gz`` files are copied as they are, beside a ``labels.txt`` naming the ten classes in
id order, so ``data.train_file`` can point at the prepared images file (its labels file sits next to it).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

from tunelab.errors import DataError

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    split: (f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz") for split in ("train", "t10k")
}
LABEL_NAMES_FILE = "labels.txt"  # class names in id order, one a line, beside the idx files
_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array an idx file (LeCun's MNIST format, optionally gzipped) holds, exactly as stored.

    Hand-written because the format is ten lines of numpy: two zero bytes, a dtype code, the number of
    dimensions, one big-endian uint32 per dimension, then the values in C order.
    """
    if not path.is_file():
        hint = f"; install the Debian package {DEBIAN_PACKAGE}" if path.parent == DEBIAN_DIR else ""
        raise DataError(f"{path}: file not found{hint}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read an idx file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES:
        raise DataError(f"{path}: not an idx file (expected two zero bytes and a dtype code first)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path}: idx header says shape {shape} but the file holds another size")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape)


def prepare_fashion_mnist(src: Path, out: Path) -> dict[str, int]:
    """Copy the four idx files and write ``labels.txt``; returns the images per images file."""
    counts = {}
    for images, labels in FILES.values():
        for name in (images, labels):
            shutil.copyfile(src / name, out / name)
        counts[images] = len(read_idx(out / labels))
    (out / LABEL_NAMES_FILE).write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
    return counts
