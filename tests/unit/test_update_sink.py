"""The staging writer: bounded, sparse for zero runs, cut exactly where a stream broke."""

# ruff: noqa: F811  (pytest fixtures imported from test_update_fixtures, used as arguments)
from __future__ import annotations

import pytest
from test_update_fixtures import keyset, make_build  # noqa: F401
from typer.testing import CliRunner

from anklume.cli import app
from anklume.updates import sink
from anklume.updates.errors import FileMismatch


def test_zero_chunks_become_holes_and_content_is_exact(tmp_path):
    p = tmp_path / "f"
    chunks = [b"a" * 65536] + [b"\0" * 65536] * 64 + [b"b" * 10]
    n = sink.write(chunks, p, offset=0, limit=66 * 65536)
    assert n == p.stat().st_size == 65 * 65536 + 10
    assert p.read_bytes() == b"".join(chunks)
    assert p.stat().st_blocks * 512 < 1024 * 1024  # the 4 MiB of zeros take no space


def test_trailing_zeros_still_count_and_a_break_cuts_the_file(tmp_path):
    p = tmp_path / "f"

    def broken():
        yield b"x" * 100
        yield b"\0" * 100
        raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        sink.write(broken(), p, offset=0, limit=1000)
    assert p.read_bytes() == b"x" * 100 + b"\0" * 100
    assert sink.write([b"y" * 5], p, offset=200, limit=1000) == 205


def test_more_than_the_limit_is_refused(tmp_path):
    with pytest.raises(FileMismatch, match="more than the manifest's 10 bytes"):
        sink.write([b"x" * 11], tmp_path / "f", offset=0, limit=10)


def test_publish_command(tmp_path, keyset):
    make_build(tmp_path / "build", "0.2.0", keyset)
    r = CliRunner().invoke(app, ["publish", "--build-dir", str(tmp_path / "build"),
                                 "--out", str(tmp_path / "out"), "--min-version", "0.1.0"])
    assert r.exit_code == 0, r.output
    assert "published 0.2.0" in r.output
    assert (tmp_path / "out" / "0.2.0" / "manifest.json.sig").is_file()
