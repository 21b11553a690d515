"""Uploads a hostile participant would send: built small, each aimed at one defence.

Shared by the test suite (regression and fuzz tests) and `benchmarks/bench_hardening.py`, so the
figures in docs/benchmarks.md come from the same inputs the tests refuse.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_bytes(shape: tuple[int, ...], dtype: str = "|u1", data: bytes = b"") -> bytes:
    """A .npy stream whose header declares `shape` and `dtype`, followed by `data` (possibly short)."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def npz_declaring(images_shape: tuple[int, ...], masks_shape: tuple[int, ...], payload: int = 1 << 16) -> bytes:
    """An .npz (a few KB) whose headers declare arrays as large as asked; the data stop after
    `payload` bytes. numpy's loader allocates the declared size before noticing."""
    return zip_of({"images.npy": npy_bytes(images_shape, data=b"\0" * payload),
                   "masks.npy": npy_bytes(masks_shape, data=b"\0" * payload)})


def npz_arrays(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, corrupt: bool = False) -> bytes:
    """A grey PNG of width x height zeros, compressed (12000 x 12000 is ~140 KB). With `corrupt`, the
    pixel data is cut after its first KB: only a decoder that tries reaches the damage."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    if corrupt:
        idat = idat[:1024] + b"\xff" * 64
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def tar_with_name(name: str, data: bytes = b"x", pax: bool = False, encoding: str = "utf-8") -> bytes:
    """A tar holding one file named `name` (with `pax`, the name travels in a PAX header, so it
    may hold a NUL; with encoding latin-1, raw bytes such as 0xff reach the archive)."""
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding=encoding) as tf:
        info = tarfile.TarInfo("placeholder" if pax else name)
        if pax:
            info.pax_headers = {"path": name}
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_with_raw_name(raw: bytes, utf8_flag: bool = True) -> bytes:
    """A zip whose member name is the bytes `raw` (e.g. invalid UTF-8), with the UTF-8 flag (bit
    11 of the general-purpose flags) set in both the local and the central header."""
    placeholder = "N" * len(raw)
    data = bytearray(zip_of({placeholder: b"x"}).replace(placeholder.encode(), raw))
    if utf8_flag:
        for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(sig)
            flags = struct.unpack_from("<H", data, at + flag_at)[0] | 0x800
            struct.pack_into("<H", data, at + flag_at, flags)
    return bytes(data)


def fd_targets() -> list[str]:
    """What each open descriptor of this process points at (files, sockets, pipes)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sorted(out)


def deleted_open_files() -> int:
    """Descriptors of this process that hold a deleted file (disk space nobody can free)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(" (deleted)"):
                n += 1
        except OSError:
            continue
    return n


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0
