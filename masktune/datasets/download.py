"""Fetch the public datasets from their official sources: resumable, checksummed, atomic.

Waterbirds, CelebA and IN-9L are gigabytes served by university web servers, Google Drive and Dropbox,
links that drop mid-transfer and sometimes answer with a web page instead of the file. So a download
goes to `<name>.part`, resumes from where it stopped (HTTP Range) when rerun or retried, and becomes
`<name>` only once its checksum verifies; an archive is unpacked beside its destination and swapped in
whole. A cut, a bad checksum or a corrupt archive therefore never leaves a file that looks complete.
Every failure a user can act on is a one-line `UserError` naming the file or URL and the params.yaml
key (`Source.param`) to set to a local copy instead. Only the standard library and tqdm are used.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from masktune.errors import UserError

BLOCK_BYTES = 1 << 20  # read and hash in 1 MiB blocks: constant memory for multi-GB archives
ATTEMPTS = 3  # a cut connection is resumed automatically this many times in all before giving up
RETRY_PAUSE_S = 2.0  # pause before resuming a cut download (servers drop bursts of connections)
TIMEOUT_S = 60.0  # a stalled socket counts as a cut connection after this long
USER_AGENT = "masktune-dvc/0.1 (python urllib)"
DOWNLOADS = "downloads"  # sub-folder of a dataset cache that holds the archives while they are fetched
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass(frozen=True, kw_only=True)
class Source:
    """One file of a dataset and where its official copy lives.

    `param` is the params.yaml key a user sets to a local copy instead of downloading (named in every
    error message); `size` (bytes) only feeds the progress bar when the server sends no length, and
    is checked when given. Checksums are verified when given; without one the computed sha256 is
    printed so that it can be pinned here.
    """

    url: str
    filename: str
    param: str
    description: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


class _Interrupted(Exception):
    """The connection ended before the whole file arrived; the `.part` file holds what did."""

    def __init__(self, received: int, total: int | None) -> None:
        super().__init__(received, total)
        self.received, self.total = received, total


def _unreachable(source: Source, reason: str) -> UserError:
    reason = " ".join(str(reason).split())[:200] or "no reason given"
    return UserError(f"could not download {source.description} from {source.url} ({reason}): "
                     f"set {source.param} in params.yaml to a local copy")


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def fetch(source: Source, folder: str | Path, *, attempts: int = ATTEMPTS) -> Path:
    """Download `source` into `folder/source.filename` and return that path.

    A file already there that verifies is returned without a request. Otherwise the download goes to
    `<filename>.part`, resuming a `.part` left by an earlier run; a connection cut mid-transfer is
    resumed up to `attempts` times in all, then reported with the `.part` kept so that a rerun resumes
    it. The `.part` is renamed to its final name only after its checksum verifies; a mismatch deletes it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / source.filename
    if final.is_file() and _verifies(source, final):
        return final
    part = _part_path(final)
    for attempt in range(1, attempts + 1):
        try:
            _download(source, part)
            break
        except _Interrupted as cut:
            if attempt == attempts:
                total = "?" if cut.total is None else str(cut.total)
                raise UserError(f"download of {source.filename} from {source.url} was interrupted at "
                                f"{cut.received} of {total} bytes (kept in {part}): rerun to resume it, "
                                f"or set {source.param} in params.yaml to a local copy") from None
            time.sleep(RETRY_PAUSE_S)
    _check_part(source, part)
    os.replace(part, final)
    return final


def _download(source: Source, part: Path) -> None:
    """One request: append to `part` if the server honours the Range, else write it from zero."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(source.url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and have:  # nothing left after `have` bytes: the .part is whole
            return
        raise _unreachable(source, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:  # DNS failure, connection refused, TLS...
        raise _unreachable(source, error.reason) from None
    except (OSError, http.client.HTTPException) as error:  # timeout, reset while sending the request
        raise _unreachable(source, str(error) or type(error).__name__) from None
    with response:
        _refuse_web_page(source, response)
        resumed = response.status == 206 and _content_range_start(response) == have
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else source.size
        _copy(response, part, "ab" if resumed else "wb", start, total, source.filename)


def _content_range_start(response) -> int | None:
    """First byte of a 206 answer (`Content-Range: bytes 100-199/200`), None if unreadable."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _refuse_web_page(source: Source, response) -> None:
    """Google Drive and Dropbox answer a quota, sign-in or preview page with 200: never save it as the file."""
    if response.headers.get_content_type() == "text/html" and not source.filename.endswith((".html", ".htm")):
        raise _unreachable(source, f"the server sent a web page, not {source.filename}: a quota, sign-in or "
                                   "preview page")


def _copy(response, part: Path, mode: str, start: int, total: int | None, name: str) -> None:
    """Stream the body into `part` in blocks with a progress bar (silent when stderr is not a terminal)."""
    received = start
    with open(part, mode) as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                                       desc=name, disable=None, leave=False) as bar:
        while True:
            try:
                block = response.read(BLOCK_BYTES)
            except (http.client.HTTPException, OSError):  # IncompleteRead, ConnectionResetError, timeout
                raise _Interrupted(received, total) from None
            if not block:
                break
            out.write(block)
            received += len(block)
            bar.update(len(block))
    if total is not None and received < total:  # the server closed the connection early
        raise _Interrupted(received, total)


def _expected(source: Source) -> dict[str, str]:
    return {name: value.lower() for name, value in (("sha256", source.sha256), ("md5", source.md5)) if value}


def _digests(path: Path, names: Sequence[str]) -> dict[str, str]:
    """Hex digests of `path` for each hashlib algorithm in `names`, in one streaming pass."""
    hashers = {name: hashlib.new(name) for name in names}
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _verifies(source: Source, path: Path) -> bool:
    """Whether an existing final file matches the source (size and checksums that are known)."""
    if source.size is not None and path.stat().st_size != source.size:
        return False
    expected = _expected(source)
    return not expected or _digests(path, list(expected)) == expected


def _check_part(source: Source, part: Path) -> None:
    """Verify a finished download; delete it and explain on a mismatch, print its sha256 if none is pinned."""
    size = part.stat().st_size
    if source.size is not None and size != source.size:
        _reject(source, part, "size", f"{source.size} bytes", f"{size} bytes")
    expected = _expected(source)
    actual = _digests(part, list(expected) or ["sha256"])
    for name in expected:
        if actual[name] != expected[name]:
            _reject(source, part, name, expected[name], actual[name])
    if not expected:
        print(f"{source.filename}: no published checksum, accepted with sha256 {actual['sha256']} "
              f"(pin it in the dataset's SOURCES, masktune/datasets/<name>.py)", file=sys.stderr)


def _reject(source: Source, part: Path, what: str, expected: str, actual: str) -> None:
    part.unlink(missing_ok=True)
    raise UserError(f"{source.filename} from {source.url}: {what} mismatch (expected {expected}, got {actual}); "
                    f"the download was deleted: rerun to fetch it again, or set {source.param} in params.yaml "
                    f"to a local copy")


def archive_kind(name: str) -> str | None:
    """'zip', 'tar' (plain or compressed) or None for a file that is used as it is."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    return "tar" if lower.endswith(_TAR_SUFFIXES) else None


def _stamp(destination: Path, archive: Path) -> Path:
    """Written last into the destination: its presence says this archive was unpacked completely."""
    return destination / f".{archive.name}.extracted"


def extract(archive: str | Path, destination: str | Path) -> Path:
    """Unpack a .tar(.gz/.tgz/.bz2/.xz) or .zip archive into `destination` and return it.

    The archive is unpacked into a temporary folder beside `destination`, which is then renamed to
    `destination` (or, when `destination` already holds another dataset part, each of its top-level
    entries is moved in, replacing any stale copy). A stamp file written last marks the archive as
    done, so a second call returns at once and an interrupted one leaves nothing that looks finished.
    Members with absolute paths or `..` are refused, as are links that point outside.
    """
    archive, destination = Path(archive), Path(destination)
    if _stamp(destination, archive).is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        _unpack(archive, tmp)
        _stamp(tmp, archive).touch()
        if destination.exists():
            _merge(tmp, destination, last=_stamp(tmp, archive).name)
        else:
            os.replace(tmp, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return destination


def _merge(source: Path, destination: Path, last: str) -> None:
    """Move each entry of `source` into `destination` (replacing what is there), `last` at the end."""
    for entry in sorted(source.iterdir(), key=lambda path: (path.name == last, path.name)):
        target = destination / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)


def _unpack(archive: Path, into: Path) -> None:
    kind = archive_kind(archive.name)
    if kind is None:
        raise UserError(f"{archive}: not an archive that can be unpacked (.tar, .tar.gz, .tgz, .zip)")
    try:
        if kind == "zip":
            _unzip(archive, into)
        else:
            _untar(archive, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"{archive}: corrupt or truncated archive ({type(error).__name__}: {error}): "
                        f"delete it and rerun to download it again") from None
    except OSError as error:  # disk full, permissions
        raise UserError(f"could not unpack {archive} ({error})") from None


def _check_member(archive: Path, name: str, link: str | None = None) -> None:
    """Refuse a member whose name is absolute or holds `..`, or a link whose target (a path from the archive
    root, see `_link_target`) resolves outside the destination."""
    unix = name.replace("\\", "/")
    bad_name = unix.startswith("/") or ":" in unix.split("/", 1)[0] or ".." in PurePosixPath(unix).parts
    bad_link = link is not None and (link.startswith("/") or posixpath.normpath(link).split("/", 1)[0] == "..")
    if bad_name or bad_link:
        raise UserError(f"{archive}: refusing to unpack member {name!r}, which points outside the destination "
                        f"(absolute path or '..'): the archive is not trustworthy, delete it")


def _link_target(member: tarfile.TarInfo) -> str | None:
    """A symlink's target as a path from the archive root (hard links already are), None for a non-link."""
    if member.issym():
        return str(PurePosixPath(member.name).parent / member.linkname) if not member.linkname.startswith("/") \
            else member.linkname
    return member.linkname if member.islnk() else None


def _untar(archive: Path, into: Path) -> None:
    """Check and unpack member by member: one pass over a compressed stream, however large."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            _check_member(archive, member.name, _link_target(member))
            _extract_member(tar, member, into)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: no devices, setuid bits or escaping links
        tar.extract(member, into, filter="data")
    else:  # older Pythons: `_check_member` has refused escaping names and links
        tar.extract(member, into)


def _unzip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for member in members:
            _check_member(archive, member.filename)
        for member in members:
            zf.extract(member, into)


def _require(folder: Path, markers: Sequence[str], source: Source) -> None:
    for marker in markers:
        if not (folder / marker).exists():
            raise UserError(f"{folder}: missing {marker}, which a copy of {source.description} holds: "
                            f"set {source.param} in params.yaml to the folder that contains it")


def _install(source: Source, cache: Path, keep_archives: bool) -> None:
    """Fetch one source into the cache: an archive is unpacked into it (and deleted), a plain file stays."""
    if archive_kind(source.filename) is None:
        fetch(source, cache)
        return
    archive = cache / DOWNLOADS / source.filename
    if _stamp(cache, archive).is_file():
        return
    extract(fetch(source, cache / DOWNLOADS), cache)
    if not keep_archives:
        archive.unlink(missing_ok=True)


def _find(cache: Path, markers: Sequence[str]) -> Path | None:
    """The shallowest folder of `cache` (down to two levels) holding every marker, in name order."""
    level = [cache]
    for _ in range(3):
        for folder in level:
            if all((folder / marker).exists() for marker in markers):
                return folder
        level = [child for folder in level for child in sorted(folder.iterdir())
                 if child.is_dir() and not child.name.startswith(".") and child.name != DOWNLOADS]
    return None


def resolve_dataset_folder(local: str | Path | None, download: bool, sources: Sequence[Source], cache: str | Path,
                           marker: str | Sequence[str], *, keep_archives: bool = False) -> Path:
    """The folder a `prepare` stage reads a dataset from: the user's copy, or one downloaded into `cache`.

    - `local` given (the value of `sources[0].param`): it must be a folder holding `marker`; returned as is.
    - else with `download` true: every source is fetched into `cache` (archives unpacked into it, then
      deleted unless `keep_archives`), and the folder returned is the shallowest one under `cache`
      (`cache` itself or down to two levels, first in name order) that holds `marker`, so that an
      archive's own top folder (Waterbirds' `waterbird_complete95_forest2water2/`) needs no setting.
      A source already unpacked or fetched is not downloaded again.
    - else: a one-line `UserError` naming the param to set.

    `marker` is a path relative to the dataset folder (e.g. "metadata.csv"), or several that must all exist.
    """
    first = sources[0]
    markers = (marker,) if isinstance(marker, str) else tuple(marker)
    if local is not None:
        local = Path(local)
        if not local.is_dir():
            raise UserError(f"{first.param}: {local} is not a folder: set it to your copy of {first.description}, "
                            f"or to null with download: true")
        _require(local, markers, first)
        return local
    if not download:
        raise UserError(f"{first.description}: no local copy and download is off: set {first.param} to its folder, "
                        f"or download: true")
    cache = Path(cache)
    for source in sources:
        _install(source, cache, keep_archives)
    folder = _find(cache, markers)
    if folder is None:
        raise UserError(f"{cache}: the download of {first.description} holds no folder with "
                        f"{' and '.join(markers)}: set {first.param} in params.yaml to a folder that does")
    return folder


def drive_url(file_id: str) -> str:
    """Direct link to a public Google Drive file. `confirm=t` skips the "cannot scan for viruses" page of
    large files; a quota page (HTML) is refused by `fetch`, and its md5 catches anything else."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
