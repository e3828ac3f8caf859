"""An update directory on an HTTP(S) server: any static web server.

Interrupted downloads resume with a Range request; a server that ignores Range (200 instead of
206), answers 416, or a resumed file whose hash comes out wrong is restarted from zero once.
"""

from __future__ import annotations

import re
from pathlib import Path

import requests

from anklume.updates import hashing, sink
from anklume.updates.errors import FileMismatch, MissingFile, SourceUnavailable, TruncatedDownload

# What a dropped connection can lose: the chunk being read when it broke is not handed over.
CHUNK = 64 * 1024
_TIMEOUT = 30


class HttpSource:
    def __init__(self, base_url: str, *, session: requests.Session | None = None,
                 attempts: int = 5) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.session = session or requests.Session()
        self.attempts = attempts

    def describe(self) -> str:
        return self.base

    def _get(self, rel: str, headers: dict[str, str] | None = None) -> requests.Response:
        try:
            return self.session.get(self.base + rel, headers=headers or {}, stream=True,
                                    timeout=_TIMEOUT)
        except requests.RequestException as e:
            raise SourceUnavailable(f"{self.base}{rel}: {e}") from None

    def read_small(self, rel: str, limit: int) -> bytes | None:
        r = self._get(rel)
        with r:
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise SourceUnavailable(f"{self.base}{rel}: HTTP {r.status_code}")
            data = b""
            try:
                for c in r.iter_content(64 * 1024):
                    data += c
                    if len(data) > limit:
                        raise FileMismatch(f"{self.base}{rel}: larger than {limit} bytes")
            except requests.RequestException as e:
                raise SourceUnavailable(f"{self.base}{rel}: {e}") from None
        return data

    def _download(self, rel: str, dest: Path, size: int,
                  progress: sink.Progress | None) -> tuple[int, bool]:
        """Fill dest up to `size` bytes, resuming over dropped connections.
        Returns (bytes on disk, whether any part was resumed)."""
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            have = 0
        resumed = have > 0  # bytes kept from an earlier run count as resumed: hash decides
        for _ in range(self.attempts):
            if have == size:
                break
            r = self._get(rel, {"Range": f"bytes={have}-"} if have else None)
            with r:
                if r.status_code == 404:
                    raise MissingFile(f"{rel}: not found on {self.base} (HTTP 404)")
                if have and r.status_code == 206 and _range_start(r) == have:
                    resumed = True
                elif r.status_code == 200:
                    have = 0  # Range ignored: the body is the whole file again
                elif r.status_code == 416:
                    have = 0  # our partial file does not fit the server's: start over
                    sink.write([], dest, offset=0, limit=size)
                    continue
                else:
                    raise SourceUnavailable(f"{self.base}{rel}: HTTP {r.status_code}")
                try:
                    have = sink.write(r.iter_content(CHUNK), dest, offset=have, limit=size,
                                      progress=progress)
                except requests.RequestException:
                    have = dest.stat().st_size  # the sink cut the file where the data ended
        return have, resumed

    def fetch(self, rel: str, dest: Path, size: int, sha256: str,
              progress: sink.Progress | None = None) -> None:
        have, resumed = self._download(rel, dest, size, progress)
        if have == size and resumed and hashing.digest(dest)[1] != sha256:
            # The kept part may be stale (the file changed on the server): once from zero.
            dest.unlink()
            have, _ = self._download(rel, dest, size, progress)
        if have < size:
            raise TruncatedDownload(
                f"{rel}: received {have} of {size} bytes from {self.base} "
                f"after {self.attempts} attempts")


def _range_start(r: requests.Response) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", r.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None
