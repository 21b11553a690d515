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
    """The challenge's rules for a submitted dataset (defaults: the SyntaGen seed document)."""

    max_pairs: int = Field(10_000, gt=0)
    size: tuple[int, int] | None = (512, 512)  # (height, width); None = any size
    num_classes: int = Field(21, gt=1)  # mask values must be < num_classes or 255


@dataclass
class ValidationReport:
    root: Path
    n_pairs: int
    problems: list[tuple[str, str]]  # (file, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            lines = "\n".join(f"  {f}: {msg}" for f, msg in self.problems[:200])
            more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
            raise DatasetError(f"{self.root} breaks the dataset rules ({len(self.problems)} problems):\n{lines}{more}")


def validate_dataset(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """Check a VOC-layout directory against the rules and report every offending file."""
    rules = rules or DatasetRules()
    root = Path(path)
    problems: list[tuple[str, str]] = []
    if not (root / "JPEGImages").is_dir() or not (root / "SegmentationClass").is_dir():
        return ValidationReport(root, 0, [(str(root), "not a VOC-layout dataset: JPEGImages/ and SegmentationClass/ are required")])
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
            problems.append(("ImageSets/Segmentation/train.txt", f"lists {name!r} more than once"))
        for name in sorted(set(listed) - set(paired)):
            problems.append(("ImageSets/Segmentation/train.txt", f"lists {name!r}, which has no image+mask pair"))
        paired = sorted(set(listed) & set(paired))
    if len(paired) > rules.max_pairs:
        problems.append((str(root), f"{len(paired)} pairs, the limit is {rules.max_pairs}"))
    allowed = np.zeros(256, dtype=bool)
    allowed[: rules.num_classes] = True
    allowed[IGNORE] = True
    for name in paired:
        ipath, mpath = images[name], masks[name]
        irel, mrel = f"JPEGImages/{ipath.name}", f"SegmentationClass/{mpath.name}"
        isize = msize = None
        try:
            with Image.open(ipath) as im:
                im.load()
                isize = (im.height, im.width)
        except Exception as exc:  # noqa: BLE001 - any decoder error means a corrupt file
            problems.append((irel, f"cannot be read as an image ({type(exc).__name__}: {exc})"))
        try:
            with Image.open(mpath) as m:
                m.load()
                if m.mode not in ("P", "L"):
                    problems.append((mrel, f"mode {m.mode}; a mask must be a palette (P) or grey (L) PNG of class ids"))
                msize = (m.height, m.width)
                values = np.unique(np.asarray(m))
            stray = values[~allowed[values]]
            if len(stray):
                problems.append((mrel, f"values {stray.tolist()[:10]} outside 0..{rules.num_classes - 1} and 255"))
        except Exception as exc:  # noqa: BLE001
            problems.append((mrel, f"cannot be read as a PNG mask ({type(exc).__name__}: {exc})"))
        if rules.size is not None:
            for rel, size in ((irel, isize), (mrel, msize)):
                if size is not None and size != tuple(rules.size):
                    problems.append((rel, f"is {size[1]}x{size[0]} (WxH), must be {rules.size[1]}x{rules.size[0]}"))
        if isize and msize and isize != msize:
            problems.append((mrel, f"size {msize[1]}x{msize[0]} differs from its image {isize[1]}x{isize[0]}"))
    return ValidationReport(root, len(paired), problems)


def validate_npz(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """The .npz form checked by the same rules as a VOC directory (pair count, size, mask values)."""
    rules = rules or DatasetRules()
    path = Path(path)
    problems: list[tuple[str, str]] = []
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "masks") if k not in z]
            if missing:
                return ValidationReport(path, 0, [(path.name, f"lacks the array(s) {', '.join(missing)}")])
            images, masks = z["images"], z["masks"]
    except Exception as exc:  # noqa: BLE001 - any reader error means a corrupt or pickled file
        return ValidationReport(path, 0, [(path.name, f"cannot be read as an .npz of arrays ({type(exc).__name__}: {exc})")])
    n = len(masks)
    if images.dtype != np.uint8 or masks.dtype != np.uint8:
        problems.append((path.name, f"images are {images.dtype} and masks {masks.dtype}; both must be uint8"))
    if images.ndim not in (3, 4) or masks.ndim != 3 or len(images) != n:
        problems.append((path.name, f"images {images.shape} and masks {masks.shape}: need (N,H,W[,3]) and (N,H,W)"))
        return ValidationReport(path, n, problems)
    if n > rules.max_pairs:
        problems.append((path.name, f"{n} pairs, the limit is {rules.max_pairs}"))
    if images.shape[1:3] != masks.shape[1:3]:
        problems.append((path.name, f"images are {images.shape[2]}x{images.shape[1]} but masks "
                                    f"{masks.shape[2]}x{masks.shape[1]}"))
    if rules.size is not None and tuple(images.shape[1:3]) != tuple(rules.size):
        problems.append((path.name, f"images are {images.shape[2]}x{images.shape[1]} (WxH), must be "
                                    f"{rules.size[1]}x{rules.size[0]}"))
    allowed = np.zeros(256, dtype=bool)
    allowed[: rules.num_classes] = True
    allowed[IGNORE] = True
    for i in range(n):
        values = np.unique(masks[i])
        stray = values[~allowed[values]]
        if len(stray):
            problems.append((f"{path.name}[masks][{i}]", f"values {stray.tolist()[:10]} outside 0..{rules.num_classes - 1} and 255"))
    return ValidationReport(path, n, problems)


def validate_segmentation(path: str | os.PathLike, rules: DatasetRules | None = None) -> ValidationReport:
    """Validate either form: a VOC-layout directory or an .npz file."""
    path = Path(path)
    return validate_npz(path, rules) if path.suffix.lower() == ".npz" else validate_dataset(path, rules)
