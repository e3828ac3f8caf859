"""Container images shipped inside the OS: what lets the default infra deploy with no network.

The build packs a small Debian trixie image into `/usr/share/anklume/images/<name>/` with an
`image.json` naming the infra.yml images it stands in for (`images:debian/13`, ...) and its
Incus fingerprint (image/container.py). Before creating instances, the agent imports it when
Incus does not have it yet, and machines whose image it serves are created from it.

A served name always resolves to the shipped image, network or not: it lies on the
verity-checked /usr, so it is as trusted as the OS itself and the same on every boot, whereas a
pull from an image server depends on the network and on that server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from anklume import log, paths
from anklume.agent.incus_api import Incus, IncusError
from anklume.agent.model import frozen_map
from anklume.agent.resources import Kind, State
from anklume.errors import AnklumeError, CommandError
from anklume.run import run

_log = log.get("images")
IMPORT_TIMEOUT = 600  # seconds: unpacking and hashing ~40 MB under emulation


@dataclass(frozen=True)
class Shipped:
    name: str
    tarball: Path
    fingerprint: str
    alias: str
    serves: tuple[str, ...]


def catalog(root: Path | None = None) -> list[Shipped]:
    """The shipped images; an unreadable description is logged and left out, never fatal
    (the machines it would serve then fail on their own with Incus's message)."""
    root = root or paths.image_catalog()
    out: list[Shipped] = []
    if not root.is_dir():
        return out
    for desc in sorted(root.glob("*/image.json")):
        try:
            d = json.loads(desc.read_text())
            tarball = desc.parent / d["file"]
            out.append(Shipped(name=d["name"], tarball=tarball, fingerprint=d["fingerprint"],
                               alias=d["alias"], serves=tuple(d["serves"])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.event(_log, "Shipped image description unreadable", logging.ERROR,
                      file=str(desc), error=str(e))
    return out


def wanted(state: State) -> set[str]:
    """The image names the desired instances are created from."""
    return {r.image for r in state.of_kind(Kind.INSTANCE) if r.image}


def resolve(names: Iterable[str], shipped: Iterable[Shipped]) -> dict[str, Shipped]:
    """Which shipped image serves each name (pure); names nobody serves are left out."""
    by_name: dict[str, Shipped] = {}
    for s in shipped:
        for n in s.serves:
            by_name.setdefault(n, s)
    return {n: by_name[n] for n in names if n in by_name}


def substitute(state: State, image_map: Mapping[str, str]) -> State:
    """The same desired state with served image names replaced by the local fingerprint."""
    if not image_map:
        return state
    # replace() keeps every other field of the state (owner, firewall, ...) as it is.
    return replace(state, resources=frozen_map({
        k: replace(r, image=image_map.get(r.image, r.image)) if r.kind is Kind.INSTANCE else r
        for k, r in state.resources.items()}))


def _present(incus: Incus, fingerprint: str) -> bool:
    try:
        incus.get(f"/1.0/images/{fingerprint}")
        return True
    except IncusError:
        return False


def _import(s: Shipped) -> None:
    # The incus client streams the tarball to the daemon; the API wrapper only sends JSON.
    env = {**os.environ, "HOME": os.environ.get("HOME") or "/root"}
    run(["incus", "image", "import", str(s.tarball)], timeout=IMPORT_TIMEOUT, env=env)


def _alias(incus: Incus, s: Shipped) -> None:
    try:
        have = incus.get(f"/1.0/images/aliases/{s.alias}")
    except IncusError:
        have = None
    if have and have.get("target") == s.fingerprint:
        return
    if have:  # an older OS's image: the alias follows the image this OS ships
        incus.request("DELETE", f"/1.0/images/aliases/{s.alias}")
    incus.request("POST", "/1.0/images/aliases", body={
        "name": s.alias, "target": s.fingerprint,
        "description": f"shipped with the OS ({s.name})"})


def ensure_available(state: State, incus: Incus, shipped: list[Shipped] | None = None
                     ) -> dict[str, str]:
    """Import the shipped images the desired instances need; returns name -> fingerprint for
    every name now served locally. A failed import is logged and its names left unmapped."""
    need = resolve(wanted(state), catalog() if shipped is None else shipped)
    done: dict[str, str] = {}
    for s in {s.fingerprint: s for s in need.values()}.values():
        try:
            if not _present(incus, s.fingerprint):
                log.event(_log, "Importing shipped image", image=s.name, file=str(s.tarball))
                _import(s)
                if not _present(incus, s.fingerprint):
                    raise AnklumeError(f"Incus does not list {s.fingerprint} after importing "
                                       f"{s.tarball} (the file does not match image.json)")
            _alias(incus, s)
        except (AnklumeError, CommandError, OSError, subprocess.TimeoutExpired) as e:
            log.event(_log, "Shipped image not imported", logging.ERROR, image=s.name,
                      error=str(e))
            continue
        done.update({n: s.fingerprint for n, v in need.items() if v.fingerprint == s.fingerprint})
    return done
