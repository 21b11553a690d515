"""Property-based fuzzing (hypothesis) of `data.archives` and the dataset validators over
generated zip / tar / npz / PNG inputs, the malformed kinds of issue 28 included: the only
exception that escapes is the domain's own, nothing is written outside the destination, and
peak (traced) memory stays under a stated bound."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from datarena.data.archives import (
    ArchiveError,
    Limits,
    archive_kind,
    find_dataset_root,
    unpack_safely,
)
from datarena.data.segmentation import DatasetRules, validate_dataset, validate_npz
from datarena.testing import hostile

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # zipfile's "Duplicate name" on generated archives
EXAMPLES = int(os.environ.get("DATARENA_FUZZ_EXAMPLES_ARCHIVES", "300"))
FUZZ = settings(
    print_blob=False,max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
LIMITS = Limits(max_bytes=256 << 10, max_files=20)
RULES = DatasetRules(size=(16, 16), num_classes=11, max_pairs=8, max_bytes=256 << 10)
PEAK_BOUND = 16 << 20  # traced bytes while refusing or accepting any generated input

NASTY_NAMES = ["../x", "/etc/passwd", "a/../../b", "C:\\x", "a\0b", "JPEGImages/\x01.jpg", "a" * 300,
               "JPEGImages/" + "b" * 240 + ".png", "./JPEGImages/a.jpg", "SegmentationClass/a.png",
               "JPEGImages/a.jpg", "ImageSets/Segmentation/train.txt", "\\\\server\\share", "JPEGImages/"]
names = st.one_of(st.sampled_from(NASTY_NAMES), st.text(min_size=1, max_size=40),
                  st.from_regex(r"(JPEGImages|SegmentationClass)/[a-z]{1,3}\.(jpg|png)", fullmatch=True))
contents = st.one_of(st.binary(max_size=512), st.just(b"\0" * (300 << 10)))


def _png(draw_size, mode) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, draw_size).save(buf, format="PNG")
    return buf.getvalue()


images = st.one_of(
    st.builds(_png, st.tuples(st.integers(1, 40), st.integers(1, 40)), st.sampled_from(["L", "P", "RGB", "I;16", "1"])),
    st.builds(lambda w, h, c: hostile.png_declaring(w, h, corrupt=c), st.integers(1, 6_000), st.integers(1, 3_000),
              st.booleans()),
    st.binary(max_size=256),
)


@st.composite
def zips(draw) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
        for name in draw(st.lists(names, max_size=6)):
            info = zipfile.ZipInfo(name)
            if draw(st.booleans()):
                info.external_attr = draw(st.sampled_from([0o120777, 0o020644, 0o010644, 0o040755])) << 16
            zf.writestr(info, draw(st.one_of(contents, images)))
    data = buf.getvalue()
    if draw(st.booleans()) and data:  # damage a few bytes
        arr = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            arr[draw(st.integers(0, len(arr) - 1))] = draw(st.integers(0, 255))
        data = bytes(arr)
    return data


@st.composite
def tars(draw) -> bytes:
    buf = io.BytesIO()
    pax = draw(st.booleans())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT,
                      encoding=draw(st.sampled_from(["utf-8", "latin-1"])), errors="surrogateescape") as tf:
        for name in draw(st.lists(names, max_size=6)):
            kind = draw(st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                         tarfile.CHRTYPE, tarfile.FIFOTYPE]))
            info = tarfile.TarInfo("p" if pax else name.replace("\0", ""))
            if pax:
                info.pax_headers = {"path": name}
            info.type = kind
            data = draw(contents) if kind == tarfile.REGTYPE else b""
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = draw(st.sampled_from(["/etc/passwd", "../../x", "JPEGImages/a.jpg"]))
            info.size = len(data)
            try:
                tf.addfile(info, io.BytesIO(data) if data else None)
            except (ValueError, UnicodeError):  # a name tarfile itself cannot write
                continue
    data = buf.getvalue()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # cut short
    return data


archives = st.one_of(zips(), tars(), st.binary(max_size=2048),
                     st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=512)),
                     st.sampled_from([hostile.zip_with_raw_name(b"JPEGImages/a\xff.jpg"),
                                      hostile.tar_with_name("JPEGImages/a\0b.jpg", pax=True),
                                      hostile.tar_with_name("JPEGImages/\xff.jpg", encoding="latin-1")]))


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@FUZZ
@given(data=archives, filename=st.sampled_from(["d.zip", "d.tar", "d.tar.gz", "d.bin"]))
def test_unpack_raises_only_archive_errors_and_stays_inside(data, filename):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = tmp / "upload"
        archive.write_bytes(data)
        dest = tmp / "out"
        tracemalloc.start()
        try:
            try:
                kind = archive_kind(archive, filename)
                unpack_safely(archive, dest, LIMITS, kind)
                root = find_dataset_root(dest)
                validate_dataset(root, RULES)
            except ArchiveError:
                pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < PEAK_BOUND
        outside = [p for p in _listing(tmp) if p != "upload" and not p.startswith("out")]
        assert outside == []
        if dest.exists():  # what was unpacked: regular files and folders, within the caps
            files = [p for p in dest.rglob("*") if not p.is_dir()]
            assert all(p.is_file() and not p.is_symlink() for p in files)
            assert sum(p.stat().st_size for p in files) <= LIMITS.max_bytes
            assert len(files) <= LIMITS.max_files


dtypes = st.sampled_from(["|u1", "<i8", "<f4", "|b1", "<u2", "|O", "<U3", "|V4"])
shapes = st.one_of(st.lists(st.integers(0, 64), max_size=5).map(tuple),
                   st.lists(st.integers(0, 2**40), min_size=1, max_size=4).map(tuple))


@st.composite
def npzs(draw) -> bytes:
    members = {}
    for key in draw(st.lists(st.sampled_from(["images", "masks", "names", "classes", "meta", "x"]),
                             unique=True, max_size=5)):
        shape, dtype = draw(shapes), draw(dtypes)
        members[f"{key}.npy"] = hostile.npy_bytes(shape, dtype, draw(st.binary(max_size=4096)))
    if draw(st.booleans()):  # a real, well-formed pair of arrays with random values
        n = draw(st.integers(0, 4))
        buf = io.BytesIO()
        rng = np.random.default_rng(draw(st.integers(0, 9)))
        np.savez(buf, images=rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
                 masks=rng.integers(0, draw(st.sampled_from([11, 256])), (n, 16, 16), dtype=np.uint8))
        return buf.getvalue()
    return hostile.zip_of(members)


@FUZZ
@given(data=npzs())
def test_npz_validator_never_raises_and_stays_small(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            report = validate_npz(path, RULES)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < PEAK_BOUND
    assert isinstance(report.problems, list)
    for where, what in report.problems:
        assert isinstance(where, str) and isinstance(what, str) and tmp not in what


@FUZZ
@given(pairs=st.lists(st.tuples(st.from_regex(r"[a-z]{1,4}", fullmatch=True), images, images), max_size=5))
def test_voc_validator_never_raises(pairs):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        (root / "JPEGImages").mkdir(parents=True)
        (root / "SegmentationClass").mkdir()
        for name, image, mask in pairs:
            (root / "JPEGImages" / f"{name}.png").write_bytes(image)
            (root / "SegmentationClass" / f"{name}.png").write_bytes(mask)
        report = validate_dataset(root, RULES)
        for where, what in report.problems:
            assert tmp not in where and tmp not in what
