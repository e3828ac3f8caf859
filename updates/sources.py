"""Turn `--from` into a source, and find which version directory it offers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from anklume.updates import manifest, sink, versions
from anklume.updates.errors import ManifestInvalid, SourceUnavailable

MANIFEST_MAX = 1024 * 1024
SIG_MAX = 4096


class Source(Protocol):
    def describe(self) -> str: ...
    def read_small(self, rel: str, limit: int) -> bytes | None: ...
    def fetch(self, rel: str, dest: Path, size: int, sha256: str,
              progress: sink.Progress | None = None) -> None: ...


def open_source(spec: str | None, *, usb_mount: Path) -> Source:
    """`https://...` / `http://...`, `usb` (the stick labelled ANKLUME-UPD), or a directory.
    Without --from: $ANKLUME_UPDATE_SOURCE, else the USB stick."""
    spec = spec or os.environ.get("ANKLUME_UPDATE_SOURCE") or "usb"
    if spec.startswith(("http://", "https://")):
        from anklume.updates.source_http import HttpSource

        return HttpSource(spec)
    from anklume.updates.source_local import LocalSource

    if spec == "usb":
        from anklume.updates import source_usb

        return LocalSource(source_usb.locate(usb_mount))
    return LocalSource(Path(spec))


def version_prefix(src: Source) -> str:
    """"" when the source is one version's directory, else "<latest>/" of a published tree."""
    if src.read_small(manifest.MANIFEST, MANIFEST_MAX) is not None:
        return ""
    latest = src.read_small(manifest.LATEST, 256)
    if latest is None:
        raise SourceUnavailable(
            f"{src.describe()}: neither {manifest.MANIFEST} nor {manifest.LATEST} found",
            hint="point --from at what `anklume publish --out` wrote")
    v = latest.decode(errors="replace").strip()
    if not versions.valid(v):
        where = f"{src.describe().rstrip('/')}/{manifest.LATEST}"
        raise ManifestInvalid(f"{where}: {v!r} is not a version")
    return f"{v}/"
