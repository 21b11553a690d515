"""Image + semantic-mask datasets: the PASCAL VOC layout, a compact .npz form, and a validator.

VOC layout (what DeepLab training code and the SyntaGen challenge expect)::

    DIR/JPEGImages/<name>.jpg            RGB (or grey) image
    DIR/SegmentationClass/<name>.png     palette PNG, pixel = class id, 255 = ignore
    DIR/ImageSets/Segmentation/train.txt optional list of names
    DIR/meta.json                        classes, generator, parameters, sha256 per file

`.npz` form: arrays ``images`` (N,H,W[,3]) uint8, ``masks`` (N,H,W) uint8, ``names`` and
``classes`` (strings).
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from datarena.data.checksums import atomic_directory, sha256_file, write_json
from datarena.errors import ConfigError, DatarenaError, SourceNotFoundError

IGNORE = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
DIGIT_CLASSES = ("background",) + tuple(str(d) for d in range(10))
AERIAL_CLASSES = ("background", "road", "car", "tree", "house")  # the aerial grammars' labels
CLASS_SETS = {"voc": VOC_CLASSES, "digits": DIGIT_CLASSES, "aerial": AERIAL_CLASSES}


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC colour map, flattened [r0, g0, b0, r1, ...]."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


PALETTE = voc_palette()


class DatasetError(DatarenaError):
    """A segmentation dataset breaks the challenge rules; the message lists every offending file."""


@dataclass
class SegmentationSet:
    """Images (N,H,W[,3]) uint8 with masks (N,H,W) uint8 (class ids, 255 = ignore) in memory."""

    images: np.ndarray
    masks: np.ndarray
    classes: tuple[str, ...]
    names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.masks):
            raise ConfigError(f"{len(self.images)} images but {len(self.masks)} masks; every image needs one mask.")
        if self.images.shape[1:3] != self.masks.shape[1:3]:
            raise ConfigError(f"images are {self.images.shape[1:3]} but masks {self.masks.shape[1:3]}; sizes must match.")
        if not self.names:
            self.names = [f"{i:06d}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.masks[i]

    def mask(self, i: int) -> np.ndarray:
        return self.masks[i]


# ------------------------------------------------------------------ writing


def save_mask_png(mask: np.ndarray, path_or_buffer) -> None:
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    img.putpalette(PALETTE)
    img.save(path_or_buffer, format="PNG")


def save_image_jpg(image: np.ndarray, path_or_buffer, quality: int = 95) -> None:
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path_or_buffer, format="JPEG", quality=quality)


def write_pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write one pair into an existing VOC directory (image first, mask last: a mask marks a complete pair)."""
    save_image_jpg(image, root / "JPEGImages" / f"{name}.jpg")
    tmp = root / "SegmentationClass" / f".{name}.png.tmp"
    save_mask_png(mask, tmp)
    os.replace(tmp, root / "SegmentationClass" / f"{name}.png")


def make_voc_dirs(root: Path) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def finish_voc(root: Path, names: list[str], classes: tuple[str, ...], meta: dict) -> None:
    """Write the list file and meta.json (classes, parameters, sha256 of every file)."""
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    files = {}
    for n in names:
        for rel in (f"JPEGImages/{n}.jpg", f"SegmentationClass/{n}.png"):
            files[rel] = sha256_file(root / rel)
    write_json(root / "meta.json", {**meta, "format": "voc", "classes": list(classes), "n_pairs": len(names), "files": files})


def write_voc(out: str | os.PathLike, data: SegmentationSet, force: bool = False) -> Path:
    """Write a dataset in the VOC layout, atomically (nothing is left behind on failure)."""
    with atomic_directory(out, force=force) as tmp:
        make_voc_dirs(tmp)
        for name, image, mask in zip(data.names, data.images, data.masks, strict=True):
            write_pair(tmp, name, image, mask)
        finish_voc(tmp, data.names, data.classes, data.meta)
    return Path(out)


def write_npz(path: str | os.PathLike, data: SegmentationSet) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, images=data.images, masks=data.masks, names=np.array(data.names),
            classes=np.array(data.classes), meta=np.array(json.dumps(data.meta)),
        )
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------ reading


IMAGE_EXTS = (".jpg", ".jpeg", ".png")  # any case: the validator and the loader agree


def _listed_names(root: Path) -> list[str] | None:
    listing = root / "ImageSets" / "Segmentation" / "train.txt"
    if listing.is_file():
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return None


def _duplicates(names: list[str]) -> list[str]:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    return dup


def _files_by_stem(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """name -> file, the extension matched case-insensitively (A.JPG counts as an image)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def _read_names(root: Path) -> list[str]:
    listed = _listed_names(root)
    if listed is not None:
        dup = _duplicates(listed)
        if dup:
            raise ConfigError(f"{root}/ImageSets/Segmentation/train.txt lists {', '.join(dup[:5])} more than once; "
                              f"each pair may appear once.")
        return listed
    return sorted(_files_by_stem(root / "SegmentationClass", (".png",)))


class VOCDataset:
    """Lazy reader of a VOC-layout directory: item i is (image HxWx3 uint8, mask HxW uint8)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not (self.root / "SegmentationClass").is_dir() or not (self.root / "JPEGImages").is_dir():
            raise SourceNotFoundError(
                f"{self.root} is not a VOC-layout dataset: expected JPEGImages/ and SegmentationClass/ inside "
                "(or pass a .npz file)."
            )
        self.names = _read_names(self.root)
        self._images = _files_by_stem(self.root / "JPEGImages", IMAGE_EXTS)
        self._masks = _files_by_stem(self.root / "SegmentationClass", (".png",))
        meta_path = self.root / "meta.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.classes = tuple(self.meta.get("classes", VOC_CLASSES))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.names[i]
        path = self._images.get(name)
        if path is None:
            raise SourceNotFoundError(f"{self.root}/JPEGImages has no image for {name!r}.")
        return np.asarray(Image.open(path).convert("RGB")), self.mask(i)

    def mask(self, i: int) -> np.ndarray:
        """Mask i alone (class statistics need no image decoding)."""
        path = self._masks.get(self.names[i])
        if path is None:
            raise SourceNotFoundError(f"{self.root}/SegmentationClass has no mask for {self.names[i]!r}.")
        return np.asarray(Image.open(path))


def load_segmentation(path: str | os.PathLike) -> SegmentationSet | VOCDataset:
    """Open a dataset: a .npz file (loaded) or a VOC-layout directory (read lazily)."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise SourceNotFoundError(f"{path} does not exist.")
        with np.load(path, allow_pickle=False) as z:
            return SegmentationSet(
                images=z["images"], masks=z["masks"], classes=tuple(str(c) for c in z["classes"]),
                names=[str(n) for n in z["names"]], meta=json.loads(str(z["meta"])) if "meta" in z else {},
            )
    if not path.exists():
        raise SourceNotFoundError(f"{path} does not exist; pass a VOC-layout directory or a .npz file.")
    return VOCDataset(path)


# ------------------------------------------------------------------ validation


class DatasetRules(BaseModel):
    """The challenge's rules for a submitted dataset (defaults: the SyntaGen seed document).

    The last three bound what checking an upload may cost, before anything is decoded: image
    sizes come from file headers, .npz array shapes from their .npy headers.
    """

    max_pairs: int = Field(10_000, gt=0)
    size: tuple[int, int] | None = (512, 512)  # (height, width); None = any size
    num_classes: int = Field(21, gt=1)  # mask values must be < num_classes or 255
    max_image_pixels: int = Field(4096 * 4096, gt=0)  # one image or mask (when size is None)
    max_total_pixels: int | None = Field(None, gt=0)  # decoded per dataset; None = 2 x max_pairs x one image
    max_bytes: int | None = Field(None, gt=0)  # .npz: the arrays' declared sizes, summed

    def pixel_budget(self, n_pairs: int = 0) -> int:
        """Pixels that checking a dataset may decode: `max_total_pixels`, or an image and a mask of
        the allowed size for each pair (pairs over `max_pairs` are still listed file by file;
        their number is bounded by the archive's file limit)."""
        if self.max_total_pixels is not None:
            return self.max_total_pixels
        one = self.size[0] * self.size[1] if self.size else self.max_image_pixels
        return 2 * max(self.max_pairs, n_pairs) * one


@dataclass
class ValidationReport:
    root: Path
    n_pairs: int
    problems: list[tuple[str, str]]  # (file relative to the dataset, or ".", what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            lines = "\n".join(f"  {f}: {msg}" for f, msg in self.problems[:200])
            more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
            raise DatasetError(f"{self.root} breaks the dataset rules ({len(self.problems)} problems):\n{lines}{more}")


_PATHS = re.compile(r"(?:[A-Za-z]:)?[/\\][^\s'\"]+")


def _reason(exc: Exception) -> str:
    """A decoder's complaint without the server paths it may quote."""
    return f"{type(exc).__name__}: {_PATHS.sub('<file>', str(exc))[:200]}"


def _mask_values_problem(values: np.ndarray, allowed: np.ndarray, num_classes: int) -> str | None:
    stray = values[~allowed[values]]
    if len(stray):
        return f"values {stray.tolist()[:10]} outside 0..{num_classes - 1} and 255"
    return None


def validate_dataset(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """Check a VOC-layout directory against the rules and report every offending file.

    Each file's format and size are read from its header first; only JPEG and PNG images of the
    allowed size are decoded, and no more pixels than `rules.pixel_budget()` in all.
    """
    rules = rules or DatasetRules()
    root = Path(path)
    problems: list[tuple[str, str]] = []
    if not (root / "JPEGImages").is_dir() or not (root / "SegmentationClass").is_dir():
        return ValidationReport(root, 0, [(".", "not a VOC-layout dataset: JPEGImages/ and SegmentationClass/ are required")])
    images = _files_by_stem(root / "JPEGImages", IMAGE_EXTS)
    masks = _files_by_stem(root / "SegmentationClass", (".png",))
    for name in sorted(set(images) - set(masks)):
        problems.append((f"JPEGImages/{images[name].name}", "has no mask in SegmentationClass/"))
    for name in sorted(set(masks) - set(images)):
        problems.append((f"SegmentationClass/{masks[name].name}", "has no image in JPEGImages/"))
    paired = sorted(set(images) & set(masks))
    listed = _listed_names(root)
    if listed is not None:  # the loader trains on train.txt's names: check exactly those
        for name in _duplicates(listed):
            problems.append(("ImageSets/Segmentation/train.txt", f"lists {name[:80]!r} more than once"))
        for name in sorted(set(listed) - set(paired)):
            problems.append(("ImageSets/Segmentation/train.txt", f"lists {name[:80]!r}, which has no image+mask pair"))
        paired = sorted(set(listed) & set(paired))
    if len(paired) > rules.max_pairs:  # still checked file by file, within the pixel budget
        problems.append((".", f"{len(paired)} pairs, the limit is {rules.max_pairs}"))
    allowed = np.zeros(256, dtype=bool)
    allowed[: rules.num_classes] = True
    allowed[IGNORE] = True
    budget = rules.pixel_budget(len(paired))
    want = tuple(rules.size) if rules.size is not None else None

    def header(p: Path, rel: str, formats: list[str]) -> tuple[Image.Image | None, tuple[int, int] | None]:
        """Open (headers only): (the image if it may be decoded, its (height, width) if readable)."""
        try:
            with warnings.catch_warnings():  # the size rules below decide; PIL's bomb warning is noise
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(p, formats=formats)
        except Exception as exc:  # noqa: BLE001 - any reader error means a corrupt file
            kinds = " or ".join(formats)
            problems.append((rel, f"cannot be read as a {kinds} file ({_reason(exc)})"))
            return None, None
        size = (im.height, im.width)
        if want is not None and size != want:
            problems.append((rel, f"is {size[1]}x{size[0]} (WxH), must be {want[1]}x{want[0]}"))
        elif size[0] * size[1] > rules.max_image_pixels:
            problems.append((rel, f"is {size[1]}x{size[0]}, more than {rules.max_image_pixels} pixels"))
        else:
            return im, size
        im.close()
        return None, size

    for name in paired:
        ipath, mpath = images[name], masks[name]
        irel, mrel = f"JPEGImages/{ipath.name}", f"SegmentationClass/{mpath.name}"
        (im, isize), (m, msize) = header(ipath, irel, ["JPEG", "PNG"]), header(mpath, mrel, ["PNG"])
        try:
            if isize and msize and isize != msize:
                problems.append((mrel, f"size {msize[1]}x{msize[0]} differs from its image {isize[1]}x{isize[0]}"))
                continue
            budget -= sum(x.width * x.height for x in (im, m) if x is not None)
            if budget < 0:
                problems.append((".", f"more than {rules.pixel_budget(len(paired))} pixels to decode in all; "
                                      f"submit fewer or smaller images"))
                break
            if im is not None:
                try:
                    im.load()
                except Exception as exc:  # noqa: BLE001
                    problems.append((irel, f"cannot be decoded ({_reason(exc)})"))
            if m is not None:
                if m.mode not in ("P", "L"):
                    problems.append((mrel, f"mode {m.mode}; a mask must be a palette (P) or grey (L) PNG of class ids"))
                    continue
                try:
                    values = np.unique(np.asarray(m))
                except Exception as exc:  # noqa: BLE001
                    problems.append((mrel, f"cannot be read as a PNG mask ({_reason(exc)})"))
                    continue
                bad = _mask_values_problem(values, allowed, rules.num_classes)
                if bad:
                    problems.append((mrel, bad))
        finally:
            for x in (im, m):
                if x is not None:
                    x.close()
    return ValidationReport(root, len(paired), problems)


NPZ_CHUNK = 16 << 20  # bytes of an array read at a time while checking an .npz


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of a .npy stream, read from its header alone."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10_000)
        return shape, dtype, fortran
    if version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10_000)
        return shape, dtype, fortran
    raise ValueError(f".npy format version {version[0]}.{version[1]} (save with numpy's np.savez)")


def validate_npz(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """The .npz form checked by the same rules as a VOC directory (pair count, size, mask values).

    Every array's shape and dtype come from its .npy header before anything is loaded: their
    sizes, summed, must stay within `rules.max_bytes`; masks are then read a chunk at a time and
    images only streamed through (their checksums verified), so memory stays near NPZ_CHUNK.
    """
    rules = rules or DatasetRules()
    path = Path(path)
    label = path.name

    def refused(msg: str, n: int = 0) -> ValidationReport:
        return ValidationReport(path, n, [(label, msg)])

    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - any reader error means a corrupt file
        return refused(f"cannot be read as an .npz of arrays ({_reason(exc)})")
    with zf:
        headers: dict[str, tuple[tuple[int, ...], np.dtype, bool]] = {}
        total = 0
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            try:
                with zf.open(info) as fh:
                    shape, dtype, fortran = _npy_header(fh)
            except Exception as exc:  # noqa: BLE001
                return refused(f"member {key[:60]!r} is not a numpy array ({_reason(exc)})")
            if dtype.hasobject:
                return refused(f"array {key[:60]!r} holds Python objects ({dtype}); store plain numbers and strings")
            total += int(np.prod(shape, dtype=object)) * dtype.itemsize
            if rules.max_bytes is not None and total > rules.max_bytes:
                return refused(f"its arrays declare more than {rules.max_bytes} bytes (the unpacked limit); "
                               f"submit a smaller dataset")
            headers[key] = (shape, dtype, fortran)
        missing = [k for k in ("images", "masks") if k not in headers]
        if missing:
            return refused(f"lacks the array(s) {', '.join(missing)}")
        (ishape, idtype, ifort), (mshape, mdtype, mfort) = headers["images"], headers["masks"]
        problems: list[tuple[str, str]] = []
        if idtype != np.uint8 or mdtype != np.uint8:
            problems.append((label, f"images are {idtype} and masks {mdtype}; both must be uint8"))
        if len(ishape) not in (3, 4) or len(mshape) != 3 or ishape[0] != mshape[0] or \
                (len(ishape) == 4 and ishape[3] not in (1, 3)):
            problems.append((label, f"images {ishape} and masks {mshape}: need (N,H,W[,3]) and (N,H,W)"))
        if ifort or mfort:
            problems.append((label, "arrays are stored in Fortran order; save np.ascontiguousarray(...) instead"))
        if problems:
            return ValidationReport(path, mshape[0] if mshape else 0, problems)
        n, h, w = mshape
        if n > rules.max_pairs:
            problems.append((label, f"{n} pairs, the limit is {rules.max_pairs}"))
        if tuple(ishape[1:3]) != (h, w):
            problems.append((label, f"images are {ishape[2]}x{ishape[1]} but masks {w}x{h}"))
        if rules.size is not None and tuple(ishape[1:3]) != tuple(rules.size):
            problems.append((label, f"images are {ishape[2]}x{ishape[1]} (WxH), must be "
                                    f"{rules.size[1]}x{rules.size[0]}"))
        if h * w > rules.max_image_pixels:  # one mask would not fit the reading chunk: stop here
            problems.append((label, f"masks are {w}x{h}, more than {rules.max_image_pixels} pixels"))
            return ValidationReport(path, n, problems)
        allowed = np.zeros(256, dtype=bool)
        allowed[: rules.num_classes] = True
        allowed[IGNORE] = True
        per = max(1, h * w)
        try:
            with zf.open("masks.npy") as fh:
                _npy_header(fh)
                i = 0
                step = max(1, NPZ_CHUNK // per)
                while i < n:
                    k = min(step, n - i)
                    raw = fh.read(k * per)
                    if len(raw) != k * per:
                        return refused(f"masks end after {i + len(raw) // per} of {n} masks; the file is cut short", n)
                    chunk = np.frombuffer(raw, dtype=np.uint8).reshape(k, h, w)
                    for j in range(k):
                        bad = _mask_values_problem(np.unique(chunk[j]), allowed, rules.num_classes)
                        if bad:
                            problems.append((f"{label}[masks][{i + j}]", bad))
                    i += k
            with zf.open("images.npy") as fh:  # streamed through: the zip checks its CRC at the end
                _npy_header(fh)
                need, got = int(np.prod(ishape)), 0
                while block := fh.read(NPZ_CHUNK):
                    got += len(block)
                if got != need:
                    return refused(f"images hold {got} bytes, their header declares {need}; the file is cut short", n)
        except Exception as exc:  # noqa: BLE001 - a damaged member (bad CRC, truncated stream)
            return refused(f"cannot be read as an .npz of arrays ({_reason(exc)})", n)
    return ValidationReport(path, n, problems)


def validate_segmentation(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """Validate either form: a VOC-layout directory or an .npz file."""
    path = Path(path)
    return validate_npz(path, rules) if path.suffix.lower() == ".npz" else validate_dataset(path, rules)
