"""Download MNIST, Fashion-MNIST and CIFAR-10 from their official sources into a cache folder.

The cache folder of a data set NAME is `$CONVSCOPE_DATA/NAME` when CONVSCOPE_DATA is set, else
`$XDG_CACHE_HOME/convscope/NAME` (`~/.cache/convscope/NAME`); `convscope.data.load(NAME)` looks there
when no data_dir is given.

Each file goes to `FILE.part` beside its final place: an interrupted download resumes from there with an
HTTP Range request, a failed request is retried with backoff (1 s, 2 s, 4 s), and only a file whose MD5
matches the published one is renamed into place, so a bad download never replaces a good file.
CIFAR-10's tarball is checked, then its data_batch_*.bin, test_batch.bin and batches.meta.txt are copied
out, each under its own name (no tar member chooses a path), and the tarball is removed.
"""

import hashlib
import os
import time
from pathlib import Path

from convscope.data.idx import DataFormatError

CACHE_ENV = "CONVSCOPE_DATA"
# Every file fetched, with the MD5 its publisher lists (MNIST: LeCun's page; Fashion-MNIST: Zalando's
# README; CIFAR-10: Krizhevsky's page, the binary version).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
}
# Where the files are, tried in order (the MNIST copy on S3 is the one torchvision uses; LeCun's page
# often refuses scripts). The MD5s above decide whether a copy is right.
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
# Archives to unpack: archive name -> (folder inside it, the members kept, written under these names).
ARCHIVES = {
    "cifar-10-binary.tar.gz": (
        "cifar-10-batches-bin/",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin", "batches.meta.txt"),
    )
}
RETRIES = 3
BACKOFF_S = 1.0
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16
MAX_MEMBER_BYTES = 1 << 31


class DownloadError(ValueError):
    """A data set could not be downloaded; the message says what failed and how to fetch it by hand."""


class ChecksumError(DownloadError):
    """A downloaded file's MD5 differs from the published one; the file was not kept."""


class _Unreachable(Exception):
    """This mirror cannot serve the file (refused, unknown host, 404, ...): try the next one."""


class _Transient(Exception):
    """A failure that may pass (timeout, reset, 5xx, short body): retry, resuming the .part file."""


def cache_root() -> Path:
    """$CONVSCOPE_DATA, else $XDG_CACHE_HOME/convscope, else ~/.cache/convscope."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "convscope"


def dataset_key(name: str) -> str:
    """The downloadable data set behind a data set name: 'cifar10:cat,dog' -> 'cifar10'."""
    key = name.partition(":")[0]
    if key not in CHECKSUMS:
        raise ValueError(f"no download for {name!r}; downloadable: {', '.join(CHECKSUMS)}")
    return key


def cache_dir(name: str) -> Path:
    """The cache folder of a downloadable data set (it may not exist yet)."""
    return cache_root() / dataset_key(name)


def file_md5(path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _outputs(file_name: str) -> tuple:
    """The names a downloaded file leaves in the folder: its archive's members, or itself."""
    return ARCHIVES[file_name][1] if file_name in ARCHIVES else (file_name,)


def _is_done(folder: Path, file_name: str, md5: str) -> bool:
    if file_name in ARCHIVES:
        return all((folder / out).is_file() for out in _outputs(file_name))
    return (folder / file_name).is_file() and file_md5(folder / file_name) == md5


def is_downloaded(name: str, folder=None) -> bool:
    """Whether every file of data set `name` is in `folder` (default: its cache folder), MD5 checked."""
    key = dataset_key(name)
    folder = Path(folder) if folder is not None else cache_dir(key)
    return all(_is_done(folder, f, md5) for f, md5 in CHECKSUMS[key].items())


def _open(url: str, offset: int, opener, timeout: float):
    """The HTTP response for `url` from byte `offset` on; raises _Unreachable or _Transient."""
    import http.client
    import socket
    import ssl
    import urllib.error
    import urllib.request

    from convscope import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"convscope/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return None  # nothing left after `offset`: the .part file is complete
        if error.code in (408, 429) or error.code >= 500:
            raise _Transient(f"HTTP {error.code} {error.reason}") from None
        raise _Unreachable(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError | socket.gaierror | FileNotFoundError | ssl.SSLError):
            raise _Unreachable(str(reason)) from None
        raise _Transient(str(reason)) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise _Transient(str(error) or type(error).__name__) from None


def _resume_offset(response, offset: int) -> int:
    """Where the response body starts: `offset` if the server honoured the Range header, else 0."""
    if not offset or getattr(response, "status", None) != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    if not content_range.startswith(f"bytes {offset}-"):
        raise _Transient(f"asked for bytes from {offset}, the server sent {content_range or 'no range'}")
    return offset


def _fetch_to_part(url: str, part: Path, opener, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part` (resuming after its current size, or starting over)."""
    import http.client

    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, opener, timeout)
    if response is None:
        return
    with response:
        try:
            offset = _resume_offset(response, offset)
        except _Transient:
            part.unlink()
            raise
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.stem,
            disable=not progress,
        )  # fmt: skip
        with open(part, "ab" if offset else "wb") as out, bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
                raise _Transient(f"connection lost after {out.tell():,} bytes ({error!r})") from None
            size = out.tell()
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size:,} of {total:,} bytes")


def _try_url(url: str, part: Path, opener, retries, backoff, timeout, progress, sleep, log, failures) -> bool:
    """Download `url` into `part`, retrying transient failures with backoff, each retry resuming where the
    last one stopped. True on success; False (the reasons appended to `failures`) if this URL failed."""
    for attempt in range(retries + 1):
        if part.exists() and part.stat().st_size:
            log(f"{part.stem}: resuming from byte {part.stat().st_size:,}")
        try:
            _fetch_to_part(url, part, opener, timeout, progress)
            return True
        except _Unreachable as error:
            failures.append((url, str(error)))
            return False
        except _Transient as error:
            failures.append((url, str(error)))
            if attempt < retries:
                wait = backoff * 2**attempt
                log(f"{part.stem}: {error}; retrying in {wait:g} s")
                sleep(wait)
    return False


def _fetch_verified(urls, target: Path, md5: str, *fetch_options) -> list:
    """Download the first URL that works into `target` via `target.part`, keeping it only if its MD5 is
    `md5`. Returns [] on success, else the failures [(url, reason)]; a wrong MD5 raises ChecksumError and
    removes the .part file."""
    part = target.with_name(target.name + ".part")
    failures = []
    for url in urls:
        resumed = part.exists() and part.stat().st_size > 0
        if not _try_url(url, part, *fetch_options, failures):
            continue
        got = file_md5(part)
        if got == md5:
            os.replace(part, target)
            return []
        part.unlink()
        restart = " (it resumed an earlier partial download: running again starts afresh)" if resumed else ""
        raise ChecksumError(
            f"{url}: MD5 {got} differs from the published {md5}; nothing was saved as {target}{restart}"
        )
    return failures


def extract_members(archive: Path, folder: Path, inner: str, names) -> None:
    """Copy the regular files `inner + name` of a .tar.gz archive to `folder/name`, each via a temporary
    file and a rename. Only those exact member names are read and each is written under its own fixed
    name, so no member can choose where it lands; links and other member types are refused."""
    import tarfile

    wanted = {inner + name: name for name in names}
    done = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    continue
                if not member.isreg() or member.size > MAX_MEMBER_BYTES:
                    raise DataFormatError(f"{archive}: member {member.name} is not a plain file of sane size")
                if name in done:
                    continue
                _write_atomically(tar.extractfile(member), folder / name)
                done.add(name)
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataFormatError(f"{archive}: cannot unpack: {error}") from None
    missing = [inner + n for n in names if n not in done]
    if missing:
        raise DataFormatError(f"{archive}: missing member(s) {', '.join(missing)}")


def _write_atomically(source, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        with open(temporary, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _manual_steps(key: str, folder: Path, urls_by_file: dict, failures: list) -> str:
    """What failed, and exactly which files to fetch by hand and where to put them."""
    lines = [f"cannot download {key}:"] + [f"  {url}: {reason}" for url, reason in failures[-4:]]
    lines.append("Offline or behind a firewall? Fetch these files by hand (any one URL per file):")
    for file_name, urls in urls_by_file.items():
        lines.append(f"  {file_name}: {'  or  '.join(urls)}")
    lines.append(f"and put them, with those names, in {folder}{os.sep}")
    members = [member for f in urls_by_file if f in ARCHIVES for member in _outputs(f)]
    if members:
        lines.append(f"(an archive is checked and unpacked there; or put its {', '.join(members)} there)")
    dir_option = "" if folder == cache_dir(key) else f" --dir {folder}"
    lines.append(f"then run `convscope data download {key}{dir_option}` again to check them.")
    return "\n".join(lines)


def download(
    name: str,
    folder=None,
    *,
    base_url=None,
    checksums=None,
    retries: int = RETRIES,
    backoff: float = BACKOFF_S,
    timeout: float = TIMEOUT_S,
    progress: bool = True,
    opener=None,
    sleep=time.sleep,
    log=print,
) -> Path:
    """Fetch data set `name` ('mnist', 'fashion-mnist', 'cifar10') into `folder` (default: its cache
    folder) and return that folder. Files already there with the right MD5 are kept.

    base_url: a URL (or a list tried in order) replacing the official mirrors, e.g. a local copy.
    checksums: {file name: md5} replacing the published table (for tests and private mirrors).
    opener: a urllib opener (default: urllib.request.build_opener()); sleep, log: for the retry waits and
    the messages. Raises DownloadError (with the URLs and the folder for a manual download) or ChecksumError.
    """
    import urllib.request

    key = dataset_key(name)
    folder = Path(folder) if folder is not None else cache_dir(key)
    table = dict(CHECKSUMS[key] if checksums is None else checksums)
    bases = MIRRORS[key] if base_url is None else [base_url] if isinstance(base_url, str) else base_url
    bases = [b if b.endswith("/") else b + "/" for b in bases]
    opener = opener or urllib.request.build_opener()
    folder.mkdir(parents=True, exist_ok=True)
    todo = {f: md5 for f, md5 in table.items() if not _is_done(folder, f, md5)}
    for file_name in (f for f in table if f not in todo):
        log(f"{file_name}: already in {folder}")
    for file_name, md5 in todo.items():
        target = folder / file_name
        if file_name in ARCHIVES and target.is_file() and file_md5(target) == md5:
            log(f"{file_name}: found in {folder}, MD5 checked")
        else:
            if target.is_file():
                log(f"{file_name}: the copy in {folder} has the wrong MD5, downloading it again")
            urls = [b + file_name for b in bases]
            fetch_options = (opener, retries, backoff, timeout, progress, sleep, log)
            failures = _fetch_verified(urls, target, md5, *fetch_options)
            if failures:
                pending = {f: [b + f for b in bases] for f, m in todo.items() if not _is_done(folder, f, m)}
                raise DownloadError(_manual_steps(key, folder, pending, failures))
            log(f"{file_name}: downloaded, MD5 {md5} checked")
        if file_name in ARCHIVES:
            extract_members(target, folder, *ARCHIVES[file_name])
            target.unlink()
            log(f"{file_name}: unpacked {', '.join(_outputs(file_name))}")
    return folder
