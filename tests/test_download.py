"""masktune.download against a local HTTP server on 127.0.0.1 serving a small fixture archive.

The server can cut the connection after K bytes, ignore Range, answer 404 or send a web page, and
records every request's Range header, so that the tests check what was asked for, not only the result.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from masktune.datasets import DATASETS, download
from masktune.datasets.download import Source, archive_kind, extract, fetch, resolve_dataset_folder
from masktune.errors import UserError

SOURCES = {name: spec.sources for name, spec in DATASETS.items() if spec.sources}

PARAM = "prepare.waterbirds.dir"
DESCRIPTION = "Waterbirds (Sagawa et al. 2020)"
METADATA = b"img_id,img_filename,y,split,place\n1,images/a.jpg,1,0,0\n"
JPEG = random.Random(0).randbytes(60_000)  # incompressible, so the archive is ~60 kB
CUT = 10_000


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


ARCHIVE = tar_gz({"wb/metadata.csv": METADATA, "wb/images/a.jpg": JPEG})


class Server:
    """Serves `files` (path -> bytes) with Range support and configurable failures."""

    def __init__(self) -> None:
        self.files = {"/data.tar.gz": ARCHIVE}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # one-shot: the next answer stops after this many body bytes
        self.ignore_range = False
        self.status: int | None = None
        self.content_type = "application/gzip"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def url(self, path: str = "/data.tar.gz") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                header = self.headers.get("Range")
                server.requests.append((self.path, header))
                if server.status is not None or self.path not in server.files:
                    self.send_error(server.status or 404)
                    return
                data, start = server.files[self.path], 0
                if header and not server.ignore_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(body)))  # the full length, even when cut below
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[:server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)
                self.wfile.flush()

        return Handler


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never send 127.0.0.1 through a proxy set in the environment
    monkeypatch.setattr(download, "RETRY_PAUSE_S", 0.0)
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def source(url: str, filename: str = "data.tar.gz", **checksums) -> Source:
    return Source(url=url, filename=filename, param=PARAM, description=DESCRIPTION, **checksums)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- fetch ----------------------------------------------------------------------------------------

def test_fetch_downloads_and_verifies_both_checksums(server, tmp_path, capsys):
    path = fetch(source(server.url(), sha256=sha256(ARCHIVE), md5=hashlib.md5(ARCHIVE).hexdigest()), tmp_path)
    assert path == tmp_path / "data.tar.gz"
    assert path.read_bytes() == ARCHIVE
    assert leftovers(tmp_path) == ["data.tar.gz"]  # no .part
    assert server.requests == [("/data.tar.gz", None)]
    assert capsys.readouterr().err == ""  # the progress bar is off when stderr is not a terminal


def test_cut_connection_keeps_part_then_rerun_resumes_with_range(server, tmp_path):
    server.cut_after = CUT
    src = source(server.url(), sha256=sha256(ARCHIVE))
    with pytest.raises(UserError) as error:
        fetch(src, tmp_path, attempts=1)
    message = str(error.value)
    assert f"interrupted at {CUT} of {len(ARCHIVE)} bytes" in message and "rerun to resume" in message
    assert "\n" not in message and PARAM in message
    assert (tmp_path / "data.tar.gz.part").read_bytes() == ARCHIVE[:CUT]
    assert not (tmp_path / "data.tar.gz").exists()

    path = fetch(src, tmp_path)
    assert server.requests == [("/data.tar.gz", None), ("/data.tar.gz", f"bytes={CUT}-")]
    assert path.read_bytes() == ARCHIVE
    assert leftovers(tmp_path) == ["data.tar.gz"]


def test_cut_connection_is_resumed_automatically(server, tmp_path):
    server.cut_after = CUT
    path = fetch(source(server.url(), sha256=sha256(ARCHIVE)), tmp_path)
    assert server.requests == [("/data.tar.gz", None), ("/data.tar.gz", f"bytes={CUT}-")]
    assert path.read_bytes() == ARCHIVE


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "data.tar.gz.part").write_bytes(b"x" * CUT)  # would corrupt the file if appended to
    path = fetch(source(server.url(), sha256=sha256(ARCHIVE)), tmp_path)
    assert server.requests == [("/data.tar.gz", f"bytes={CUT}-")]
    assert path.read_bytes() == ARCHIVE
    assert leftovers(tmp_path) == ["data.tar.gz"]


def test_complete_part_answered_416_is_verified_and_kept(server, tmp_path):
    (tmp_path / "data.tar.gz.part").write_bytes(ARCHIVE)
    path = fetch(source(server.url(), sha256=sha256(ARCHIVE)), tmp_path)
    assert server.requests == [("/data.tar.gz", f"bytes={len(ARCHIVE)}-")]
    assert path.read_bytes() == ARCHIVE


def test_checksum_mismatch_deletes_download_and_names_both_digests(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(UserError) as error:
        fetch(source(server.url(), sha256=wrong), tmp_path)
    message = str(error.value)
    assert wrong in message and sha256(ARCHIVE) in message
    assert "data.tar.gz" in message and server.url() in message and "\n" not in message
    assert leftovers(tmp_path) == []


def test_wrong_size_is_rejected(server, tmp_path):
    with pytest.raises(UserError, match=f"expected {len(ARCHIVE) + 1} bytes, got {len(ARCHIVE)} bytes"):
        fetch(Source(url=server.url(), filename="data.tar.gz", param=PARAM, description=DESCRIPTION,
                     size=len(ARCHIVE) + 1), tmp_path)
    assert leftovers(tmp_path) == []


def test_no_checksum_prints_sha256_to_pin(server, tmp_path, capsys):
    path = fetch(source(server.url()), tmp_path)
    assert path.read_bytes() == ARCHIVE
    assert f"sha256 {sha256(ARCHIVE)}" in capsys.readouterr().err


def test_http_404_names_param_on_one_line(server, tmp_path):
    with pytest.raises(UserError) as error:
        fetch(source(server.url("/missing.tar.gz")), tmp_path)
    message = str(error.value)
    assert message.startswith(f"could not download {DESCRIPTION} from {server.url('/missing.tar.gz')} (HTTP 404")
    assert message.endswith(f"set {PARAM} in params.yaml to a local copy") and "\n" not in message
    assert leftovers(tmp_path) == []


def test_connection_refused_names_param(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError) as error:
        fetch(source(f"http://127.0.0.1:{port}/data.tar.gz"), tmp_path)
    message = str(error.value)
    assert "refused" in message.lower() and f"set {PARAM} in params.yaml" in message and "\n" not in message


def test_web_page_instead_of_file_is_refused(server, tmp_path):
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(UserError, match=f"web page.*set {PARAM}"):
        fetch(source(server.url()), tmp_path)
    assert leftovers(tmp_path) == []


def test_existing_verified_file_makes_no_request(server, tmp_path):
    (tmp_path / "data.tar.gz").write_bytes(ARCHIVE)
    assert fetch(source(server.url(), sha256=sha256(ARCHIVE)), tmp_path).read_bytes() == ARCHIVE
    assert server.requests == []


def test_existing_corrupt_file_is_downloaded_again(server, tmp_path):
    (tmp_path / "data.tar.gz").write_bytes(b"stale")
    assert fetch(source(server.url(), sha256=sha256(ARCHIVE)), tmp_path).read_bytes() == ARCHIVE
    assert server.requests == [("/data.tar.gz", None)]


# -- extract --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, build", [("data.tar.gz", tar_gz), ("data.zip", zip_bytes)])
def test_extract_unpacks_files_and_is_idempotent(tmp_path, name, build):
    archive = tmp_path / name
    archive.write_bytes(build({"wb/metadata.csv": METADATA, "wb/images/a.jpg": JPEG}))
    out = extract(archive, tmp_path / "out")
    assert (out / "wb" / "metadata.csv").read_bytes() == METADATA
    assert (out / "wb" / "images" / "a.jpg").read_bytes() == JPEG
    archive.unlink()  # a completed destination is returned without reading the archive again
    assert extract(archive, tmp_path / "out") == out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_extract_merges_a_second_archive_into_the_destination(tmp_path):
    (tmp_path / "a.tar.gz").write_bytes(tar_gz({"in9l/train/x.jpg": b"x"}))
    (tmp_path / "b.zip").write_bytes(zip_bytes({"bg_challenge/original/val/y.jpg": b"y"}))
    out = tmp_path / "out"
    extract(tmp_path / "a.tar.gz", out)
    extract(tmp_path / "b.zip", out)
    assert (out / "in9l/train/x.jpg").read_bytes() == b"x"
    assert (out / "bg_challenge/original/val/y.jpg").read_bytes() == b"y"


@pytest.mark.parametrize("name, build", [("evil.tar.gz", tar_gz), ("evil.zip", zip_bytes)])
@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/masktune-escape.txt", "ok/../../escape.txt"])
def test_extract_refuses_path_traversal(tmp_path, name, build, member):
    archive = tmp_path / name
    archive.write_bytes(build({"fine.txt": b"ok", member: b"evil"}))
    with pytest.raises(UserError, match="refusing to unpack member"):
        extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_extract_refuses_a_symlink_pointing_outside(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("wb/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(link)
    (tmp_path / "link.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="refusing to unpack member 'wb/link'"):
        extract(tmp_path / "link.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_keeps_a_relative_symlink_inside_the_archive(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("wb/images/a.jpg")
        info.size = len(JPEG)
        tar.addfile(info, io.BytesIO(JPEG))
        link = tarfile.TarInfo("wb/alias/a.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "../images/a.jpg"
        tar.addfile(link)
    (tmp_path / "link.tar.gz").write_bytes(buffer.getvalue())
    out = extract(tmp_path / "link.tar.gz", tmp_path / "out")
    assert (out / "wb/alias/a.jpg").is_symlink() and (out / "wb/alias/a.jpg").read_bytes() == JPEG


@pytest.mark.parametrize("name, data", [("cut.tar.gz", ARCHIVE[: len(ARCHIVE) // 2]),
                                        ("junk.tar.gz", b"not an archive at all"),
                                        ("junk.zip", b"PK not really a zip")])
def test_corrupt_archive_names_it(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError) as error:
        extract(tmp_path / name, tmp_path / "out")
    assert str(error.value).startswith(f"{tmp_path / name}: corrupt or truncated archive")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_interrupted_extraction_leaves_no_destination(tmp_path, monkeypatch):
    (tmp_path / "data.tar.gz").write_bytes(ARCHIVE)
    real, calls = download._extract_member, []

    def fail_on_second(tar, member, into):
        calls.append(member.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(tar, member, into)

    monkeypatch.setattr(download, "_extract_member", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        extract(tmp_path / "data.tar.gz", tmp_path / "out")
    assert calls == ["wb/metadata.csv", "wb/images/a.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tar.gz"]  # neither out/ nor a temporary folder


# -- resolve_dataset_folder -----------------------------------------------------------------------

def test_local_folder_is_returned_as_is(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(METADATA)
    assert resolve_dataset_folder(tmp_path, False, SOURCES["waterbirds"], tmp_path / "cache", "metadata.csv") \
        == tmp_path
    assert not (tmp_path / "cache").exists()


def test_missing_local_folder_names_the_param(tmp_path):
    with pytest.raises(UserError, match=f"^{PARAM}: {tmp_path / 'nope'} is not a folder"):
        resolve_dataset_folder(tmp_path / "nope", True, SOURCES["waterbirds"], tmp_path / "cache", "metadata.csv")


def test_local_folder_without_marker_names_the_missing_file(tmp_path):
    with pytest.raises(UserError) as error:
        resolve_dataset_folder(tmp_path, False, SOURCES["waterbirds"], tmp_path / "cache", "metadata.csv")
    assert str(error.value).startswith(f"{tmp_path}: missing metadata.csv") and PARAM in str(error.value)


def test_download_off_without_local_copy_names_the_param(tmp_path):
    with pytest.raises(UserError) as error:
        resolve_dataset_folder(None, False, SOURCES["celeba"], tmp_path / "cache", "list_attr_celeba.txt")
    assert str(error.value) == ("CelebA (Liu et al. 2015): no local copy and download is off: set prepare.celeba.dir "
                                "to its folder, or download: true")


def test_download_fetches_unpacks_and_finds_the_dataset_folder(server, tmp_path):
    server.files["/notes.txt"] = b"hello"
    sources = [source(server.url(), sha256=sha256(ARCHIVE)), source(server.url("/notes.txt"), "notes.txt")]
    cache = tmp_path / "cache"
    folder = resolve_dataset_folder(None, True, sources, cache, "metadata.csv")
    assert folder == cache / "wb"  # the archive's own top folder, found by its marker
    assert (folder / "images" / "a.jpg").read_bytes() == JPEG
    assert (cache / "notes.txt").read_bytes() == b"hello"
    assert not (cache / "downloads" / "data.tar.gz").exists()  # the archive is deleted once unpacked
    assert len(server.requests) == 2
    assert resolve_dataset_folder(None, True, sources, cache, "metadata.csv") == folder
    assert len(server.requests) == 2  # already unpacked and fetched: no new request
    with pytest.raises(UserError, match=re.escape(f"{cache}: the download of {DESCRIPTION} holds no folder with labels")):
        resolve_dataset_folder(None, True, sources, cache, "labels.csv")


def test_registry_is_complete_and_consistent():
    assert set(SOURCES) == {"waterbirds", "celeba", "in9l", "cifar10", "svhn"}  # Cats vs Dogs: behind a Kaggle login
    for name, sources in SOURCES.items():
        assert len({(s.param, s.description) for s in sources}) == 1, name
        for s in sources:
            assert s.param == f"prepare.{name}.dir"
            assert s.md5 is None or len(s.md5) == 32
            # SVHN's server has no https; its files are checked against torchvision's md5s instead
            assert s.url.startswith("https://") or (s.url.startswith("http://") and s.md5 is not None)
    assert [archive_kind(s.filename) for s in SOURCES["celeba"]] == ["zip", None, None]
