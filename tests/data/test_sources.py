"""Real data sources: embedded MNIST, IDX directories, CIFAR-10 batches, face directories."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from datarena.data import sources
from datarena.errors import SourceNotFoundError


def test_embedded_mnist_is_standardised():
    src = sources.load_mnist()
    assert src.images.shape == (5000, 28, 28) and src.images.dtype == np.float32
    assert np.bincount(src.labels).tolist() == [500] * 10
    assert abs(float(src.images.mean())) < 1e-4 and abs(float(src.images.std()) - 1) < 1e-4
    assert src.is_test.sum() == 1000


def _write_idx(path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_mnist_idx_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)), gz=True)
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10, gz=False)
    src = sources.load_mnist(tmp_path)
    assert src.images.shape == (40, 28, 28) and src.is_test.sum() == 10
    assert src.name == "mnist-full"
    monkeypatch.setenv(sources.MNIST_ENV, str(tmp_path))
    assert sources.load_mnist().images.shape == (40, 28, 28)


def test_missing_mnist_names_files_and_option(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"train-images-idx3-ubyte.*--mnist-dir.*DATARENA_MNIST_DIR"):
        sources.load_mnist(tmp_path / "nowhere")
    with pytest.raises(SourceNotFoundError, match=r"lacks train-images-idx3-ubyte\[\.gz\].*--mnist-dir"):
        sources.load_mnist(tmp_path)


def test_cifar_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name in sources.CIFAR_FILES:
        batch = {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), b"labels": list(np.arange(20) % 10)}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    src = sources.load_cifar10(tmp_path)
    assert src.images.shape == (120, 3, 32, 32) and src.is_test.sum() == 20
    assert np.allclose(src.images.mean(axis=(0, 2, 3)), 0, atol=1e-4)


def test_missing_cifar(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"data_batch_1.*--cifar-dir"):
        sources.load_cifar10()
    with pytest.raises(SourceNotFoundError, match=r"lacks data_batch_1"):
        sources.load_cifar10(tmp_path)


def test_embedded_faces():
    src = sources.load_faces()
    assert src.images.shape == (200, 32, 32)
    assert np.bincount(src.labels).tolist() == [100, 100]


def test_celeba_style_directory(tmp_path):
    rng = np.random.default_rng(2)
    lines = ["6", "Male Smiling Young"]
    for i in range(6):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / name)
        lines.append(f"{name} 1 {1 if i % 2 else -1} -1")
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    src = sources.load_faces(tmp_path, attribute="Smiling", size=16)
    assert src.images.shape == (6, 16, 16)
    assert src.labels.tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(SourceNotFoundError, match="no attribute 'Bald'"):
        sources.load_faces(tmp_path, attribute="Bald")


def test_missing_faces_directory(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"list_attr_celeba.txt.*--faces-dir"):
        sources.load_faces(tmp_path)


def test_vehicle_animal_from_cifar_batches(tmp_path):
    from datarena.data.bundle import CONFLICTING
    from datarena.underspec.exercises import SourceConfig, generate_exercise
    from datarena.underspec.suite import load_suite

    rng = np.random.default_rng(3)
    for name in sources.CIFAR_FILES:
        batch = {b"data": rng.integers(0, 255, (40, 3072), dtype=np.uint8), b"labels": list(np.arange(40) % 10)}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    b = generate_exercise(load_suite().get("888"), 1, SourceConfig(cifar_dir=str(tmp_path)))
    assert b.X_labeled.shape[1:] == (3, 32, 64) and set(np.unique(b.y_labeled)) == {2, 3}
    assert np.mean(b.groups_target == CONFLICTING) == pytest.approx(0.5, abs=0.05)
