"""Unpacking uploaded archives (.zip, .tar, .tar.gz) without trusting them.

Refused: absolute paths, `..` components, names that are not clean UTF-8 text (NUL and other
control characters, undecodable bytes, over-long names), links and device files, more than
`max_files` entries, and more than `max_bytes` unpacked (counted while writing, so an archive
that lies about its sizes, a zip bomb, is stopped at the cap). Every refusal is an
`ArchiveError` whose message names the archive member, never a path on the server.
"""

from __future__ import annotations

import shutil
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from datarena.errors import DatarenaError

CHUNK = 1 << 20
MAX_NAME_BYTES = 1024  # a whole member name
MAX_PART_BYTES = 200  # one path component (file systems allow 255)


class ArchiveError(DatarenaError):
    """The upload is not an archive datarena will unpack; the message says what to fix."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int


def archive_kind(path: Path, filename: str = "") -> str:
    """'npz', 'zip' or 'tar' from the upload's name and magic bytes."""
    name = (filename or path.name).lower()
    if name.endswith(".npz"):
        if not zipfile.is_zipfile(path):
            raise ArchiveError(f"{filename or path.name} is not a valid .npz file (numpy savez archive).")
        return "npz"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise ArchiveError(f"{filename or path.name} is not an archive: upload a .zip or .tar(.gz) of a VOC-layout "
                       f"directory (JPEGImages/, SegmentationClass/), or an .npz file.")


def shown(name: str, limit: int = 80) -> str:
    """A member name as it may appear in a message: printable ASCII, undecodable bytes escaped."""
    text = ascii(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _safe_name(name: str) -> PurePosixPath:
    if not name:
        raise ArchiveError("the archive holds an entry with an empty name; pack it again.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ArchiveError(f"the archive holds a name with a control character ({shown(name)}); "
                           f"use plain file names.")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise ArchiveError(f"the archive holds a name that is not UTF-8 text ({shown(name)}); "
                           f"rename the file with plain characters.")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES or any(len(part.encode()) > MAX_PART_BYTES for part in name.split("/")):
        raise ArchiveError(f"the archive holds an over-long name ({shown(name)}); names are at most "
                           f"{MAX_PART_BYTES} bytes per folder or file and {MAX_NAME_BYTES} in all.")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"the archive holds an absolute path {shown(name)}; archive the dataset with relative paths.")
    if ".." in p.parts:
        raise ArchiveError(f"the archive holds a path that climbs out of it ({shown(name)}); remove '..' entries.")
    return p


def _copy_capped(src, dest: Path, budget: list[int], limits: Limits) -> None:
    with open(dest, "wb") as out:
        while block := src.read(CHUNK):
            budget[0] += len(block)
            if budget[0] > limits.max_bytes:
                raise ArchiveError(f"the archive unpacks to more than {limits.max_bytes} bytes (the limit); "
                                   f"submit a smaller dataset.")
            out.write(block)


def unpack_safely(archive: Path, dest: Path, limits: Limits, kind: str | None = None) -> None:
    """Unpack into dest (created); on any refusal dest is removed and ArchiveError raised."""
    kind = kind or archive_kind(archive)
    dest.mkdir(parents=True, exist_ok=False)
    budget = [0]
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > limits.max_files:
                    raise ArchiveError(f"the archive holds {len(infos)} entries, the limit is {limits.max_files}.")
                for info in infos:
                    rel = _safe_name(info.filename)
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise ArchiveError(f"the archive holds a link ({shown(info.filename)}); store real files only.")
                    target = dest.joinpath(*rel.parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src:
                        _copy_capped(src, target, budget, limits)
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                count = 0
                for member in tf:
                    count += 1
                    if count > limits.max_files:
                        raise ArchiveError(f"the archive holds more than {limits.max_files} entries (the limit).")
                    rel = _safe_name(member.name)
                    if member.issym() or member.islnk():
                        raise ArchiveError(f"the archive holds a link ({shown(member.name)}); store real files only.")
                    if not (member.isfile() or member.isdir()):
                        raise ArchiveError(f"the archive holds a special file ({shown(member.name)}); "
                                           f"store regular files only.")
                    target = dest.joinpath(*rel.parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    _copy_capped(src, target, budget, limits)
        else:
            raise ArchiveError(f"cannot unpack a {kind!r} upload.")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, NotImplementedError,
            RuntimeError, ValueError, UnicodeError, OSError, IndexError, KeyError, struct.error) as exc:
        # zipfile raises UnicodeDecodeError for a name flagged UTF-8 that is not, NotImplementedError
        # for an unknown compression, RuntimeError for an encrypted member; an OSError's text names
        # a server path, so only its reason is shown.
        shutil.rmtree(dest, ignore_errors=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ArchiveError(f"the archive is damaged or unsupported ({type(exc).__name__}: {shown(reason, 160)[1:-1]}); "
                           f"pack it again as a plain .zip or .tar(.gz).") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def find_dataset_root(unpacked: Path) -> Path:
    """The VOC-layout directory inside an unpacked archive: its root or its single top folder."""
    def is_voc(p: Path) -> bool:
        return (p / "JPEGImages").is_dir() or (p / "SegmentationClass").is_dir()

    if is_voc(unpacked):
        return unpacked
    entries = [p for p in unpacked.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and is_voc(entries[0]):
        return entries[0]
    raise ArchiveError("no VOC layout in the archive: put JPEGImages/ and SegmentationClass/ at its top "
                       "(or inside one top folder).")
