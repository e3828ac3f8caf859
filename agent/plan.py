"""Desired vs observed -> the list of actions that makes Incus match (pure).

The plan is a value: `anklume plan` prints it, `anklume apply` executes it, and the tests check it
against recorded Incus answers without a daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from anklume.agent import firewall as fw
from anklume.agent.model import frozen_map
from anklume.agent.resources import (
    IMAGE_KEY,
    OWNER_KEY,
    PROTECT_KEY,
    Key,
    Kind,
    Resource,
    State,
    label,
)

# Keys Incus writes itself; never ours to compare or remove.
_INCUS_OWNED = ("volatile.", "image.")
# Instance changes a running container only picks up when it starts again: a new eth0 address
# is a new DHCP reservation (the old lease lives on in the guest), and these config keys are
# read by LXC at start.
_RESTART_CONFIG = ("raw.", "security.privileged", "security.nesting", "security.idmap",
                   "linux.kernel_modules", "environment.", "nvidia.")
FIREWALL_KEY: Key = (Kind.FIREWALL, "", "inet anklume")


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    START = "start"


@dataclass(frozen=True)
class Change:
    key: str  # "config.limits.cpu", "devices.eth0.ipv4.address", "profiles", "description"
    old: str | None  # None: absent
    new: str | None


@dataclass(frozen=True)
class Action:
    op: Op
    kind: Kind
    name: str
    project: str = ""
    changes: tuple[Change, ...] = ()
    needs_restart: bool = False
    reason: str = ""
    desired: Resource | None = None  # what to write (create/update)
    observed: Resource | None = None  # what is there now (update/delete/start)
    depends_on: tuple[Key, ...] = ()  # actions that must succeed first
    firewall: fw.Firewall | None = None  # the firewall's desired table (Kind.FIREWALL only)

    @property
    def key(self) -> Key:
        return (self.kind, self.project, self.name)

    @property
    def label(self) -> str:
        return label(self.key)

    @property
    def level(self) -> float:
        """Dependency level: every action of a level may run concurrently; levels run in
        order. Instance deletions go first (they free names and addresses), then containers of
        things before things, and the other deletions last, innermost first."""
        if self.op is Op.DELETE:
            return {Kind.INSTANCE: 0, Kind.PROFILE: 5, Kind.PROJECT: 6, Kind.NETWORK: 7}[self.kind]
        if self.op is Op.START:
            # Higher boot priority first, like Incus's own boot order: 4.0 (100) .. 4.1 (0).
            return 4 + (100 - boot_priority(self.desired)) / 1000
        # A shipped image goes into the default project, which always exists: its import (the
        # longest step of a first deploy under emulation) runs beside the projects and bridges.
        return {Kind.PROJECT: 1, Kind.NETWORK: 1, Kind.IMAGE: 1, Kind.PROFILE: 2,
                Kind.FIREWALL: 2, Kind.INSTANCE: 3}[self.kind]


@dataclass(frozen=True)
class Note:
    """A resource the plan leaves alone, and why (kept orphans, conflicts)."""
    key: Key
    reason: str

    @property
    def label(self) -> str:
        return label(self.key)


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    kept: tuple[Note, ...] = ()  # orphans not deleted (no --prune, protected, still in use)
    conflicts: tuple[Note, ...] = ()  # declared but not doable: apply reports them as errors
    in_sync: Mapping[Kind, int] = field(default_factory=frozen_map)  # declared and matching

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def levels(self) -> list[list[Action]]:
        by: dict[float, list[Action]] = {}
        for a in self.actions:
            by.setdefault(a.level, []).append(a)
        return [by[k] for k in sorted(by)]

    def why_empty(self) -> str:
        parts = [f"{n} {k.value}{'s' if n != 1 else ''}" for k, n in self.in_sync.items() if n]
        return ("No changes: " + ", ".join(parts) + " already match") if parts else \
            "No changes: nothing declared and nothing of ours found"


def boot_priority(r: Resource | None) -> int:
    v = (r.config if r else {}).get("boot.autostart.priority", "0")
    return int(v) if v.isdigit() else 0


def _autostart(r: Resource) -> bool:
    """apply never starts what the user keeps stopped at boot; they start it with incus."""
    return r.config.get("boot.autostart", "").lower() not in ("false", "0", "no", "off")


KEPT_STOPPED = "boot_autostart is false: left stopped (start it with `incus start`)"


def _ignored(key: str) -> bool:
    return key.startswith(_INCUS_OWNED)


def _diff_map(prefix: str, old: Mapping[str, str], new: Mapping[str, str],
              only_new_keys: bool = False) -> list[Change]:
    keys = set(new) if only_new_keys else set(new) | {k for k in old if not _ignored(k)}
    return [Change(f"{prefix}{k}", old.get(k), new.get(k))
            for k in sorted(keys) if old.get(k) != new.get(k)]


def _diff_devices(old: Mapping[str, Mapping[str, str]],
                  new: Mapping[str, Mapping[str, str]]) -> list[Change]:
    def fmt(d: Mapping[str, str]) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(d.items()))

    out: list[Change] = []
    for dev in sorted(set(old) | set(new)):
        o, n = old.get(dev), new.get(dev)
        if o is None or n is None:
            # A whole device appears or goes: one line, readable.
            out.append(Change(f"devices.{dev}", fmt(o) if o else None, fmt(n) if n else None))
        else:
            out += _diff_map(f"devices.{dev}.", o, n)
    return out


def diff(old: Resource, new: Resource) -> list[Change]:
    """What changes to turn observed `old` into desired `new` (keys Incus owns excluded)."""
    # Incus fills in project features we do not declare; only ours are compared there.
    changes = _diff_map("config.", old.config, new.config,
                        only_new_keys=new.kind is Kind.PROJECT)
    if new.kind in (Kind.PROFILE, Kind.INSTANCE):
        changes += _diff_devices(old.devices, new.devices)
    if new.kind is Kind.INSTANCE and old.profiles != new.profiles:
        changes.append(Change("profiles", ",".join(old.profiles), ",".join(new.profiles)))
    if old.description != new.description:
        changes.append(Change("description", old.description or None, new.description or None))
    return changes


def _needs_restart(changes: list[Change]) -> bool:
    for c in changes:
        if c.key.startswith("devices.eth0") or (
                c.key.startswith("config.") and c.key[len("config."):].startswith(_RESTART_CONFIG)):
            return True
    return False


def _networks_of(r: Resource) -> set[str]:
    return {d["network"] for d in r.devices.values() if d.get("network")}


def _deps(r: Resource) -> list[Key]:
    """Keys a desired resource needs to exist first."""
    deps: list[Key] = []
    if r.kind in (Kind.PROFILE, Kind.INSTANCE):
        deps.append((Kind.PROJECT, "", r.project))
        deps += [(Kind.NETWORK, "default", n) for n in sorted(_networks_of(r))]
    if r.kind is Kind.INSTANCE:
        deps += [(Kind.PROFILE, r.project, p) for p in r.profiles]
    return deps


def _owned(r: Resource, observed: State, owner: str) -> bool:
    if r.kind is Kind.PROFILE and r.name == "default":
        # A project's default profile belongs to whoever owns the project.
        p = observed.get((Kind.PROJECT, "", r.project))
        return p is not None and p.owner == owner
    return r.owner == owner


_KIND_ORDER = (Kind.PROJECT, Kind.NETWORK, Kind.PROFILE, Kind.INSTANCE)


def _firewall(desired: State, observed: State) -> Action | None:
    """The table's update, when both sides carry it (one of them None: not managed here)."""
    want, have = desired.firewall, observed.firewall
    if want is None or have is None:
        return None
    added, removed = fw.diff(have, want)
    if not added and not removed:
        return None
    changes = [Change("rule", None, line) for line in added]
    changes += [Change("rule", line, None) for line in removed]
    return Action(Op.UPDATE, Kind.FIREWALL, FIREWALL_KEY[2], changes=tuple(changes),
                  firewall=want)


def _images(desired: State, observed: State, in_sync: dict[Kind, int]) -> list[Action]:
    """Shipped images (agent/images.py) Incus lacks are imported; one it has gets the alias
    back if the alias points elsewhere (an older OS's image). Images are never deleted."""
    out: list[Action] = []
    for want in sorted(desired.of_kind(Kind.IMAGE), key=lambda r: r.key):
        have = observed.get(want.key)
        alias = want.config.get("alias", "")
        if have is None:
            out.append(Action(Op.CREATE, Kind.IMAGE, want.name, desired=want,
                              reason=f"shipped with the OS: {want.image}",
                              changes=(Change("alias", None, alias),
                                       Change("from", None, want.image))))
        elif alias and alias not in have.config.get("aliases", "").split(","):
            out.append(Action(Op.UPDATE, Kind.IMAGE, want.name, desired=want, observed=have,
                              changes=(Change("alias", None, alias),)))
        else:
            in_sync[Kind.IMAGE] += 1
    return out


def plan(desired: State, observed: State, *, prune: bool = False, force: bool = False,
         recreate: bool = False) -> Plan:
    """The actions that make `observed` match `desired`.

    prune: delete our resources that are no longer declared; force: also delete those
    protected by security.protection.delete; recreate: delete and create again the instances
    whose os_image changed (protected ones only with force).
    Resources without our ownership marker are never changed or deleted. The firewall
    (State.firewall) is planned when both states carry it.
    """
    owner = desired.owner
    actions: list[Action] = []
    conflicts: list[Note] = []
    kept: list[Note] = []  # declared resources left as they are on purpose
    blocked: set[Key] = set()  # declared resources we cannot make right, and their dependents
    in_sync: dict[Kind, int] = dict.fromkeys((*_KIND_ORDER, Kind.IMAGE), 0)
    actions += _images(desired, observed, in_sync)

    for kind in _KIND_ORDER:
        for want in sorted(desired.of_kind(kind), key=lambda r: r.key):
            have = observed.get(want.key)
            bad = [d for d in _deps(want) if d in blocked]
            if bad:
                blocked.add(want.key)
                conflicts.append(Note(want.key, f"skipped: needs {label(bad[0])}"))
                continue
            deps = tuple(_deps(want))
            if kind is Kind.INSTANCE and desired.get((Kind.IMAGE, "", want.image)):
                deps += ((Kind.IMAGE, "", want.image),)  # a shipped image, imported first
            if have is None:
                if kind is Kind.INSTANCE and want.instance_type == "virtual-machine" and \
                        observed.vm_unsupported:
                    blocked.add(want.key)
                    conflicts.append(Note(want.key,
                                          f"cannot create a VM: {observed.vm_unsupported}"))
                    continue
                actions.append(Action(Op.CREATE, kind, want.name, want.project, desired=want,
                                      depends_on=deps,
                                      changes=tuple(diff(Resource(kind, want.name), want))))
                if kind is Kind.INSTANCE and _autostart(want):
                    actions.append(Action(Op.START, kind, want.name, want.project,
                                          desired=want, depends_on=(want.key,), reason="new"))
                elif kind is Kind.INSTANCE:
                    kept.append(Note(want.key, KEPT_STOPPED))
                continue
            if not _owned(have, observed, owner):
                blocked.add(want.key)
                who = have.owner if kind is not Kind.PROFILE or want.name != "default" else None
                conflicts.append(Note(want.key, "exists but is not anklume's " + (
                    f"(owned by project_name {who!r})" if who else f"(no {OWNER_KEY}={owner})")
                    + ": left untouched"))
                continue
            if kind is Kind.INSTANCE and have.instance_type != want.instance_type:
                blocked.add(want.key)
                conflicts.append(Note(want.key, f"is a {have.instance_type}, declared as a "
                                      f"{want.instance_type}: delete it to have it recreated"))
                continue
            if kind is Kind.INSTANCE:
                old_image = have.config.get(IMAGE_KEY)
                if old_image is not None and old_image != want.config.get(IMAGE_KEY):
                    if recreate:
                        actions += _recreate(want, have, deps, force, conflicts, kept)
                        continue
                    conflicts.append(Note(want.key, f"os_image changed ({old_image} -> "
                                          f"{want.config.get(IMAGE_KEY)}): recreate needed; "
                                          "`apply --recreate` deletes and creates it again"))
                    # Other changes still apply; the record keeps the image it really has.
                    want = replace(want, config=frozen_map({**want.config,
                                                            IMAGE_KEY: old_image}))
            changes = diff(have, want)
            running = have.status == "Running"
            if changes:
                actions.append(Action(Op.UPDATE, kind, want.name, want.project,
                                      changes=tuple(changes), desired=want, observed=have,
                                      depends_on=deps,
                                      needs_restart=kind is Kind.INSTANCE and running
                                      and _needs_restart(changes)))
            if kind is Kind.INSTANCE and not running and not _autostart(want):
                kept.append(Note(want.key, KEPT_STOPPED))
            elif kind is Kind.INSTANCE and not running:
                actions.append(Action(Op.START, kind, want.name, want.project, desired=want,
                                      observed=have, depends_on=(want.key,),
                                      reason=f"is {have.status.lower() or 'not running'}"))
            if not changes:
                in_sync[kind] += 1

    fw_action = _firewall(desired, observed)
    if fw_action is not None:
        actions.append(fw_action)
    # Isolation first: no instance starts before the firewall that separates it is in place.
    fw_dep = (FIREWALL_KEY,) if any(a.kind is Kind.FIREWALL for a in actions) else ()
    actions = [replace(a, depends_on=a.depends_on + fw_dep) if a.op is Op.START and fw_dep
               else a for a in actions]

    deletes, orphans = _orphans(desired, observed, prune=prune, force=force)
    return Plan(actions=tuple(deletes + actions), kept=tuple(kept + orphans),
                conflicts=tuple(conflicts), in_sync=frozen_map(in_sync))


def _recreate(want: Resource, have: Resource, deps: tuple[Key, ...], force: bool,
              conflicts: list[Note], kept: list[Note]) -> list[Action]:
    """Delete, create, start: the same key, so a failed deletion skips the rest."""
    if have.protected and not force:
        conflicts.append(Note(want.key, f"os_image changed but {PROTECT_KEY}=true: "
                              "`apply --recreate --force` recreates it"))
        return []
    why = f"os_image {have.config.get(IMAGE_KEY)} -> {want.config.get(IMAGE_KEY)}"
    out = [Action(Op.DELETE, Kind.INSTANCE, want.name, want.project, observed=have,
                  reason=f"recreate: {why}"),
           Action(Op.CREATE, Kind.INSTANCE, want.name, want.project, desired=want,
                  depends_on=(*deps, want.key), reason="recreate",
                  changes=tuple(diff(Resource(Kind.INSTANCE, want.name), want)))]
    if _autostart(want):
        out.append(Action(Op.START, Kind.INSTANCE, want.name, want.project, desired=want,
                          depends_on=(want.key,), reason="new"))
    else:
        kept.append(Note(want.key, KEPT_STOPPED))
    return out


def _orphans(desired: State, observed: State, *, prune: bool,
             force: bool) -> tuple[list[Action], list[Note]]:
    """Our resources that are no longer declared: deleted with prune (innermost first, and only
    when nothing still needs them), listed otherwise."""
    owner = desired.owner
    deleted: set[Key] = set()
    actions: list[Action] = []
    kept: list[Note] = []

    def still_uses(user: Resource, name: str,
                   names_of: Callable[[Resource], Collection[str]]) -> bool:
        if user.key in deleted:
            return False
        if user.kind is Kind.PROFILE and (Kind.PROJECT, "", user.project) in deleted:
            return False  # a project's default profile goes with the project
        w = desired.get(user.key)
        return name in names_of(w if w is not None else user)

    def decide(r: Resource, blockers: list[Resource], depends: tuple[Key, ...] = ()) -> None:
        if not prune:
            kept.append(Note(r.key, "not declared any more; `apply --prune` deletes it"))
        elif r.kind is Kind.INSTANCE and r.protected and not force:
            kept.append(Note(r.key, f"not declared but {PROTECT_KEY}=true; "
                                    "`apply --prune --force` deletes it"))
        elif blockers:
            more = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
            kept.append(Note(r.key, f"not declared but still needed by {blockers[0].label}{more}"))
        else:
            deleted.add(r.key)
            actions.append(Action(Op.DELETE, r.kind, r.name, r.project, observed=r,
                                  depends_on=depends, reason="not declared"))

    def orphans(kind: Kind) -> list[Resource]:
        return sorted((r for r in observed.of_kind(kind)
                       if r.owner == owner and desired.get(r.key) is None
                       and not (kind is Kind.PROFILE and r.name == "default")),
                      key=lambda r: r.key)

    instances = observed.of_kind(Kind.INSTANCE)
    profiles = observed.of_kind(Kind.PROFILE)
    for r in orphans(Kind.INSTANCE):
        decide(r, [])
    for r in orphans(Kind.PROFILE):
        users = [i for i in instances if i.project == r.project
                 and still_uses(i, r.name, lambda x: x.profiles)]
        decide(r, users, tuple(i.key for i in instances if i.key in deleted
                               and i.project == r.project))
    for r in orphans(Kind.PROJECT):
        inside = [x for x in instances + profiles
                  if x.project == r.name and not (x.kind is Kind.PROFILE and x.name == "default")]
        decide(r, [x for x in inside if x.key not in deleted],
               tuple(x.key for x in inside if x.key in deleted))
    for r in orphans(Kind.NETWORK):
        users = [x for x in instances + profiles
                 if still_uses(x, r.name, _networks_of)]
        decide(r, users, tuple(k for k in deleted if k[0] is Kind.PROJECT))
    return actions, kept
