"""The container of model files and checkpoints: a zip archive of JSON and safetensors members.

Written atomically: into a temporary file in the target's folder, flushed and fsynced, then renamed
over the target (and the folder fsynced), so a crash leaves the old file or the new one, never half.

Read defensively, as files from strangers: the zip directory is measured before it is parsed; every
member's name, count, compression and declared size is checked before anything is decompressed; JSON
is parsed with limits on size and nesting, without NaN, Infinity or duplicate keys; a safetensors
header (names, dtypes, shapes, offsets that tile the data exactly, declared size) is checked before its
data is read. Nothing is ever unpickled. Every problem is a ModelFileError naming the file.
"""

import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

MAX_MEMBERS = 8
MAX_DIRECTORY_BYTES = 1 << 16  # the zip's central directory: ~46 bytes + the name per member
MAX_JSON_DEPTH = 32
MAX_TENSOR_HEADER_BYTES = 1 << 24
MAX_TENSOR_NDIM = 8
MAX_DEFLATE_RATIO = 1100  # deflate cannot expand data more than ~1032 times: a larger declared ratio is a lie
MAX_MESSAGE_CHARS = 300
END_OF_DIRECTORY = struct.Struct("<4s4H2LH")  # signature, disks, entries here, entries, size, offset, comment
ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
ZIP64_END = struct.Struct(
    "<4sQ2H2L4Q"
)  # signature, size, versions, disks, entries here, entries, size, offset
SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be loaded; the message names the file and what is wrong."""


class TensorInfo(NamedTuple):
    """One entry of a safetensors header: dtype code ('F32', ...), shape, byte offsets in the data."""

    dtype: str
    shape: tuple
    begin: int
    end: int


def short(text, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, so an error quoting a hostile value stays one readable line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# writing


def dump_json(value) -> bytes:
    """Indented UTF-8 JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(value, indent=2, allow_nan=False).encode("utf-8")


def save_tensors(tensors: dict) -> bytes:
    """{name: array} -> safetensors bytes (arrays made contiguous, dtypes kept)."""
    from safetensors.numpy import save

    return save({name: np.ascontiguousarray(value) for name, value in tensors.items()})


def _fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_archive(path, members: dict, compresslevel=None) -> None:
    """Write {name: bytes} as a zip archive at `path`, atomically: a temporary file in the same folder,
    flushed and fsynced, renamed over `path`. An existing file is replaced only by a complete one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = os.stat(path).st_mode & 0o777 if os.path.isfile(path) else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


# reading


def _no_duplicate_keys(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {short(repr(key), 80)}")
        seen.add(key)
    return dict(pairs)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {short(text, 40)} is out of range")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _json_depth(value) -> int:
    """How deeply lists and dicts nest in `value` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(raw: bytes, what: str):
    """Strict JSON from untrusted bytes: UTF-8, no NaN/Infinity/duplicate keys, nesting <= MAX_JSON_DEPTH.
    A ValueError says what is wrong with `what`."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_finite_float,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{what} is not valid JSON ({short(error, 120)})") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests lists and objects more than {MAX_JSON_DEPTH} levels deep")
    return value


def _directory_numbers(handle, size: int):
    """(entries, directory bytes) from the zip's end-of-directory record (zip64 aware), or None."""
    tail_size = min(size, END_OF_DIRECTORY.size + 0xFFFF)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < END_OF_DIRECTORY.size:
        return None
    _, _, _, _, entries, directory_bytes, _, _ = END_OF_DIRECTORY.unpack_from(tail, at)
    locator_at = size - tail_size + at - ZIP64_LOCATOR.size
    if locator_at >= 0:
        handle.seek(locator_at)
        locator = handle.read(ZIP64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            end_at = ZIP64_LOCATOR.unpack(locator)[2]
            if end_at + ZIP64_END.size > size:
                return None
            handle.seek(end_at)
            record = handle.read(ZIP64_END.size)
            if record[:4] != b"PK\x06\x06":
                return None
            entries, directory_bytes = ZIP64_END.unpack(record)[7:9]
    return entries, directory_bytes


class ArchiveReader:
    """A checked zip archive, used as a context manager.

    `limits` maps every member name the archive may hold to the most bytes it may declare; `required`
    names those it must hold. Problems raise `error` (a ModelFileError subclass) naming the file; `kind`
    says what the file should have been ("convscope model file").
    """

    def __init__(self, path, limits: dict, required=(), error=ModelFileError, kind="convscope model file"):
        self.path = os.fspath(path)
        self.kind = kind
        self.limits = dict(limits)
        self.required = tuple(required)
        self.error = error
        self._handle = None
        self._zip = None
        self._infos = {}
        self._header_bytes = {}

    def fail(self, problem: str):
        """The error to raise: `problem`, prefixed with the file's path."""
        return self.error(f"{self.path}: {problem}")

    def __enter__(self):
        if not os.path.isfile(self.path):
            if os.path.isdir(self.path):
                raise IsADirectoryError(f"{self.path}: a folder, not a file")
            raise FileNotFoundError(f"{self.path}: no such file")
        self._handle = open(self.path, "rb")
        try:
            self._open_zip()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._zip is not None:
            self._zip.close()
        if self._handle is not None:
            self._handle.close()
        self._zip = self._handle = None

    def _zip_call(self, function, *args):
        """function(*args), with every way zipfile and zlib report damage turned into our error."""
        try:
            return function(*args)
        except ModelFileError:
            raise
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
            RuntimeError,
            ValueError,
            struct.error,
            OverflowError,
            OSError,
        ) as error:
            raise self.fail(f"not a {self.kind} or damaged ({short(error, 160)})") from None

    def _open_zip(self):
        size = os.fstat(self._handle.fileno()).st_size
        numbers = self._zip_call(_directory_numbers, self._handle, size)
        if numbers is None:
            raise self.fail(f"not a {self.kind} or damaged (no zip directory at its end)")
        entries, directory_bytes = numbers
        if entries > MAX_MEMBERS or directory_bytes > MAX_DIRECTORY_BYTES:
            raise self.fail(
                f"its zip directory declares {entries:,} members in {directory_bytes:,} bytes; "
                f"a {self.kind} has at most {MAX_MEMBERS}"
            )
        self._handle.seek(0)
        self._zip = self._zip_call(zipfile.ZipFile, self._handle)
        self._check_members(self._zip.infolist())

    def _check_members(self, infos):
        if len(infos) > MAX_MEMBERS:
            raise self.fail(f"{len(infos)} members, a {self.kind} has at most {MAX_MEMBERS}")
        names = [info.filename for info in infos]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise self.fail(f"member {short(duplicates[0], 80)!r} appears more than once")
        for name in self.required:
            if name not in names:
                raise self.fail(f"not a {self.kind} (no {name} inside)")
        for info in infos:
            self._check_member(info)
        self._infos = {info.filename: info for info in infos}

    def _check_member(self, info):
        name = info.filename
        if name not in self.limits:
            known = ", ".join(sorted(self.limits))
            raise self.fail(f"unexpected member {short(repr(name), 80)} (a {self.kind} holds {known})")
        if info.flag_bits & 0x1:
            raise self.fail(f"{name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.fail(f"{name} uses zip compression method {info.compress_type}, not stored or deflate")
        if info.file_size > self.limits[name]:
            raise self.fail(f"{name} declares {info.file_size:,} bytes, over the {self.limits[name]:,} limit")
        stored = info.compress_type == zipfile.ZIP_STORED
        if (stored and info.file_size != info.compress_size) or (
            info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1)
        ):
            raise self.fail(
                f"{name} declares {info.file_size:,} bytes from {info.compress_size:,} compressed bytes, "
                "more than its compression can produce (a zip bomb or a damaged file)"
            )

    def has(self, name: str) -> bool:
        return name in self._infos

    def declared_size(self, name: str) -> int:
        return self._infos[name].file_size

    def read(self, name: str) -> bytes:
        """A member's bytes (its declared size was checked when the archive was opened)."""
        if name not in self._infos:
            raise self.fail(f"not a {self.kind} (no {name} inside)")
        return self._zip_call(self._zip.read, name)

    def read_json(self, name: str):
        try:
            return parse_json(self.read(name), name)
        except ModelFileError:
            raise
        except ValueError as error:
            raise self.fail(str(error)) from None

    def tensor_header(self, name: str) -> dict:
        """The checked header of safetensors member `name`: {tensor name: TensorInfo}, in data order.

        Reads only the header; the member's declared size must equal the header plus every tensor.
        """
        if name not in self._infos:
            raise self.fail(f"not a {self.kind} (no {name} inside)")
        prefix, raw = self._zip_call(self._read_header, name)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        if length is None or length > MAX_TENSOR_HEADER_BYTES or len(raw) != length:
            raise self.fail(f"{name} is damaged (its header is truncated or declares {length} bytes)")
        try:
            header = parse_json(raw, f"the header of {name}")
            tensors = _tensor_entries(header, name)
        except ValueError as error:
            raise self.fail(str(error)) from None
        data_bytes = tensors[list(tensors)[-1]].end if tensors else 0
        if self.declared_size(name) != 8 + length + data_bytes:
            raise self.fail(
                f"{name} declares {self.declared_size(name):,} bytes, but its header describes "
                f"{8 + length + data_bytes:,}"
            )
        self._header_bytes[name] = 8 + length
        return tensors

    def _read_header(self, name: str):
        with self._zip.open(name) as stream:
            prefix = stream.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if length > min(MAX_TENSOR_HEADER_BYTES, self.declared_size(name)):
                return prefix, b""
            return prefix, stream.read(length)

    def read_tensors(self, name: str) -> dict:
        """{tensor name: array} of safetensors member `name`, native byte order, writable copies."""
        tensors = self.tensor_header(name)
        raw = self.read(name)
        start = self._header_bytes[name]
        arrays = {}
        for key, info in tensors.items():
            dtype = SAFETENSORS_DTYPES[info.dtype]
            view = np.frombuffer(raw, dtype=dtype, count=math.prod(info.shape), offset=start + info.begin)
            arrays[key] = view.astype(dtype.newbyteorder("="), copy=True).reshape(info.shape)
        return arrays


def _tensor_entries(header, name: str) -> dict:
    """Checked {tensor name: TensorInfo} of a parsed safetensors header, sorted by data offset."""
    if not isinstance(header, dict):
        raise ValueError(f"the header of {name} is not a JSON object")
    entries = {}
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ValueError(f"the __metadata__ of {name} must map names to strings")
            continue
        entries[key] = _tensor_entry(key, entry, name)
    ordered = dict(sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)))
    position = 0
    for key, info in ordered.items():
        if info.begin != position:
            raise ValueError(
                f"the tensors of {name} do not tile its data: {short(repr(key), 80)} starts at byte "
                f"{info.begin:,}, expected {position:,}"
            )
        position = info.end
    return ordered


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_entry(key: str, entry, name: str) -> TensorInfo:
    what = f"tensor {short(repr(key), 80)} of {name}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{what} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise ValueError(
            f"{what} has dtype {short(repr(dtype), 40)}, not one of {', '.join(SAFETENSORS_DTYPES)}"
        )
    if not (isinstance(shape, list) and len(shape) <= MAX_TENSOR_NDIM and all(map(_is_count, shape))):
        raise ValueError(f"{what} has shape {short(repr(shape), 80)}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise ValueError(f"{what} has data_offsets {short(repr(offsets), 80)}, not [begin, end]")
    begin, end = offsets
    if end - begin != math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize:
        raise ValueError(f"{what} has {end - begin:,} bytes of data for shape {tuple(shape)} {dtype}")
    return TensorInfo(dtype, tuple(shape), begin, end)
