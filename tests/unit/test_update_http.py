"""The HTTP source against a real server on 127.0.0.1: resume, restart, truncation."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_update_fixtures import keyset, make_build  # noqa: F401

from anklume.updates import hashing, stage
from anklume.updates.anchors import Anchors
from anklume.updates.errors import FileMismatch, MissingFile, TruncatedDownload
from anklume.updates.publish import publish
from anklume.updates.source_http import HttpSource


class Server:
    """Serves a directory; `drops` maps a file name to how many requests for it are cut after
    `drop_after` bytes; `ranges` False makes it ignore Range like a naive server."""

    def __init__(self, root: Path) -> None:
        self.root, self.log = root, []
        self.drops: dict[str, int] = {}
        self.drop_after = 100_000
        self.ranges = True
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rel = self.path.lstrip("/")
                srv.log.append((rel, self.headers.get("Range")))
                p = srv.root / rel
                if not p.is_file():
                    self.send_error(404)
                    return
                data = p.read_bytes()
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and srv.ranges:
                    start = int(m.group(1))
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
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                name = Path(rel).name
                if srv.drops.get(name, 0) > 0:
                    srv.drops[name] -= 1
                    self.wfile.write(body[:srv.drop_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    publish(tmp_path / "build", tmp_path / "out")
    srv = Server(tmp_path / "out")
    yield srv, Anchors(update_cert=keyset.verity_cert, db_cert=keyset.db_cert)
    srv.close()


def usr_name(root: Path) -> str:
    return next(p.name for p in (root / "0.2.0").glob("*.usr-x86-64.*.raw"))


def test_full_update_over_http_verifies(served, tmp_path):
    srv, anchors = served
    seen = []
    v = stage.prepare(HttpSource(srv.url), tmp_path / "s", anchors, running="0.1.0",
                      progress=lambda n, d, t: seen.append((n, d, t)))
    assert v.manifest.version == "0.2.0"
    assert ("latest", None) in srv.log
    usr = v.manifest.file("usr")
    assert (usr.name, usr.size, usr.size) in seen
    # Zero runs were written as holes, the content is still exact.
    assert hashing.digest(v.dir / usr.name) == (usr.size, usr.sha256)


def test_dropped_connection_resumes_with_range(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    srv.drops[name] = 2
    v = stage.prepare(HttpSource(srv.url), tmp_path / "s", anchors, running="0.1.0")
    ranges = [r for rel, r in srv.log if rel.endswith(name)]
    assert ranges[0] is None and len(ranges) == 3
    # Each retry asks only for what is missing: whole chunks received before the cut are kept.
    offsets = [int(re.fullmatch(r"bytes=(\d+)-", r).group(1)) for r in ranges[1:]]
    assert 0 < offsets[0] <= srv.drop_after < offsets[1] <= 2 * srv.drop_after
    assert v.manifest.file("usr").name == name


def test_server_ignoring_range_restarts_from_zero(served, tmp_path):
    srv, anchors = served
    srv.ranges = False
    name = usr_name(srv.root)
    srv.drops[name] = 1
    v = stage.prepare(HttpSource(srv.url), tmp_path / "s", anchors, running="0.1.0")
    ranges = [r for rel, r in srv.log if rel.endswith(name)]
    assert ranges[0] is None and ranges[1].startswith("bytes=")  # asked, got 200: started over
    f = v.manifest.file("usr")
    assert hashing.digest(v.dir / f.name) == (f.size, f.sha256)


def test_truncated_download_is_refused(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    srv.drops[name] = 100
    srv.drop_after = 1000
    with pytest.raises(TruncatedDownload, match=rf"{name}: received \d+ of \d+ bytes .* 5 attem"):
        stage.prepare(HttpSource(srv.url, attempts=5), tmp_path / "s", anchors,
                      running="0.1.0")


def test_a_stale_partial_file_is_restarted_cleanly(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    staging = tmp_path / "s"
    staging.mkdir()
    (staging / name).write_bytes(b"\xff" * 50_000)  # a partial from another upload
    v = stage.prepare(HttpSource(srv.url), staging, anchors, running="0.1.0")
    assert [r for rel, r in srv.log if rel.endswith(name)] == ["bytes=50000-", None]
    f = v.manifest.file("usr")
    assert hashing.digest(v.dir / f.name) == (f.size, f.sha256)


def test_a_partial_longer_than_the_server_file_restarts(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    size = (srv.root / "0.2.0" / name).stat().st_size
    staging = tmp_path / "s"
    staging.mkdir()
    (staging / name).write_bytes(b"\0" * size)  # full length but wrong: hash decides
    v = stage.prepare(HttpSource(srv.url), staging, anchors, running="0.1.0")
    f = v.manifest.file("usr")
    assert hashing.digest(v.dir / f.name) == (f.size, f.sha256)


def test_missing_file_on_the_server_is_refused(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    (srv.root / "0.2.0" / name).unlink()
    with pytest.raises(MissingFile, match="HTTP 404"):
        stage.prepare(HttpSource(srv.url), tmp_path / "s", anchors, running="0.1.0")


def test_server_sending_more_than_the_manifest_size_is_refused(served, tmp_path):
    srv, anchors = served
    name = usr_name(srv.root)
    with open(srv.root / "0.2.0" / name, "ab") as f:
        f.write(b"extra")
    with pytest.raises(FileMismatch, match="sends more than the manifest's"):
        stage.prepare(HttpSource(srv.url), tmp_path / "s", anchors, running="0.1.0")
