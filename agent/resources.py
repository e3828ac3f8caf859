"""Incus resources as plain values: what desired state and observed state are both made of.

Desired (built from infra.yml) and observed (read from Incus) use the same type so the planner
compares like with like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from anklume.agent.firewall import Firewall
from anklume.agent.model import frozen_map

# Our ownership marker: resources carrying it with our project_name are ours to update and,
# when no longer declared, to prune. Anything without it is never touched.
OWNER_KEY = "user.anklume.owner"
PROTECT_KEY = "security.protection.delete"
# The image an instance was created from (as declared): a different os_image means recreate.
IMAGE_KEY = "user.anklume.os_image"


class Kind(StrEnum):
    PROJECT = "project"
    NETWORK = "network"
    PROFILE = "profile"
    INSTANCE = "instance"
    # An image the OS ships (agent/images.py), named by its fingerprint: imported when Incus
    # lacks it, never deleted (Incus images carry no owner marker).
    IMAGE = "image"
    FIREWALL = "firewall"  # our nftables table (State.firewall); not an Incus object


Key = tuple[Kind, str, str]  # (kind, project, name); project "" for projects and the firewall


@dataclass(frozen=True)
class Resource:
    kind: Kind
    name: str
    project: str = ""  # the Incus project holding it ("" for projects; "default" for bridges)
    description: str = ""
    config: Mapping[str, str] = field(default_factory=frozen_map)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=frozen_map)
    # Instances only.
    profiles: tuple[str, ...] = ()
    instance_type: str = ""  # "container" | "virtual-machine"
    # Desired instances: the image to create from (alias, fingerprint, remote:alias); desired
    # images: the tarball to import.
    image: str = ""
    status: str = ""  # observed: "Running", "Stopped", ...
    architecture: str = ""  # observed: Incus wants it back on a full PUT
    used_by: tuple[str, ...] = ()  # observed: API URLs of users (profiles, instances)

    @property
    def key(self) -> Key:
        return (self.kind, self.project, self.name)

    @property
    def owner(self) -> str | None:
        return self.config.get(OWNER_KEY)

    @property
    def protected(self) -> bool:
        return self.config.get(PROTECT_KEY, "false").lower() == "true"

    @property
    def label(self) -> str:
        """How a resource is named to the user: `instance work/work-dev`."""
        where = f"{self.project}/" if self.kind in (Kind.PROFILE, Kind.INSTANCE) else ""
        return f"{self.kind.value} {where}{self.name}"


def label(key: Key) -> str:
    kind, project, name = key
    where = f"{project}/" if kind in (Kind.PROFILE, Kind.INSTANCE) else ""
    return f"{kind.value} {where}{name}"


@dataclass(frozen=True)
class State:
    """A set of resources, desired or observed, indexed by key."""
    resources: Mapping[Key, Resource] = field(default_factory=frozen_map)
    owner: str = ""  # desired: our project_name (the ownership marker's value)
    # Observed: why this host cannot run VMs (None: it can, or unknown for desired state).
    vm_unsupported: str | None = None
    # The `inet anklume` table: desired, or as read from the kernel (present=False: no table).
    # None: not managed (desired) or not read (observed); the planner then leaves it alone.
    firewall: Firewall | None = None

    @classmethod
    def of(cls, items: list[Resource] | tuple[Resource, ...], **kw: object) -> State:
        return cls(resources=frozen_map({r.key: r for r in items}), **kw)  # type: ignore[arg-type]

    def get(self, key: Key) -> Resource | None:
        return self.resources.get(key)

    def of_kind(self, kind: Kind) -> list[Resource]:
        return [r for r in self.resources.values() if r.kind is kind]
