"""The answers file (YAML, `version: 1`): the wizard's choices given ahead of time.

The same Answers value comes from the interactive wizard, so both paths share plan and apply.
Parsing checks the file on its own (types, values, passphrases, credentials, disk references
that can never be stable); what needs the machine (does the disk exist, is it big enough,
does it hold data) is the plan's job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anklume import exitcodes, yamlfile
from anklume.errors import PermanentError
from anklume.firstboot import admin, diskref, passphrase
from anklume.problems import Problem, ValidationError

VERSION = 1
ACTIONS = ("create", "import")
BACKENDS = ("zfs", "luks-btrfs")
TPM2 = ("auto", "yes", "no")
DEFAULT_POOL = "anklume"
KEYS = frozenset({"version", "action", "backend", "disk", "passphrase", "passphrase_confirm",
                  "passphrase_file", "tpm2", "admin", "erase", "pool_name"})
ADMIN_KEYS = frozenset({"root_password_hash", "ssh_authorized_keys"})

# Where unattended answers are looked for (docs/firstboot.md).
CREDENTIAL = "anklume.firstboot.answers"
VOLUME_LABEL = "ANKLUME-CFG"
VOLUME_FILE = "anklume-answers.yml"
# A machine provisioned to stay in live mode (kiosks, tests): no setup offer on the consoles,
# and no ANKLUME-CFG volume read, so a volume plugged in by someone else makes no pool. The
# answers credential still does: it comes from the same provisioner.
SKIP_CREDENTIAL = "anklume.firstboot.skip"


class AnswersError(PermanentError):
    exit_code = exitcodes.INVALID

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__("\n".join([f"the answers are invalid ({n} problem"
                                    f"{'s' if n != 1 else ''}):",
                                    *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class Admin:
    root_password_hash: str | None = field(default=None, repr=False)
    ssh_authorized_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answers:
    action: str
    backend: str
    disk: str
    passphrase: str = field(repr=False)
    admin: Admin
    tpm2: str = "auto"
    erase: str | None = None
    pool_name: str = DEFAULT_POOL
    source: str = "<wizard>"  # where they came from, for messages


def _pool_name_problem(name: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", name) or name.startswith(
            ("mirror", "raidz", "draid", "spare", "log")):
        return "a pool name starts with a letter and has letters, digits, _ . : - only"
    return None


def check(a: Answers) -> list[tuple[str, str]]:
    """(field, problem) for the rules every Answers must satisfy, whatever produced it."""
    out: list[tuple[str, str]] = []
    if a.action not in ACTIONS:
        out.append(("action", f"must be one of {', '.join(ACTIONS)}"))
    if a.backend not in BACKENDS:
        out.append(("backend", f"must be one of {', '.join(BACKENDS)} (zfs is recommended)"))
    if a.tpm2 not in TPM2:
        out.append(("tpm2", f"must be one of {', '.join(TPM2)}"))
    if diskref.is_kernel_name(a.disk):
        out.append(("disk", f"{a.disk!r} is a kernel device name: those follow probe order and "
                            "can name another disk at the next boot; give its /dev/disk/by-id "
                            "name, WWN or serial (`anklume firstboot detect` lists them)"))
    elif not a.disk.strip():
        out.append(("disk", "required"))
    if a.erase is not None and diskref.is_kernel_name(a.erase):
        out.append(("erase", "type the disk's stable reference (the `disk` value), not a kernel "
                             "name"))
    if not a.admin.root_password_hash and not a.admin.ssh_authorized_keys:
        out.append(("admin", "give root_password_hash or ssh_authorized_keys (or both): without "
                             "them nobody could log in once the wizard locks the console"))
    if a.admin.root_password_hash:
        why = admin.hash_problem(a.admin.root_password_hash)
        if why:
            out.append(("admin.root_password_hash", why))
    for i, key in enumerate(a.admin.ssh_authorized_keys):
        why = admin.key_problem(key)
        if why:
            out.append((f"admin.ssh_authorized_keys[{i}]", why))
    if a.backend == "zfs":
        why = _pool_name_problem(a.pool_name)
        if why:
            out.append(("pool_name", why))
    return out


def parse(text: str, filename: str) -> Answers:
    """Answers from YAML text; AnswersError lists every problem with file and line."""
    try:
        doc, lines = yamlfile.parse(text, filename)
    except ValidationError as e:
        raise AnswersError(e.problems) from None
    problems: list[Problem] = []

    def add(where: str, what: str) -> None:
        path = tuple(int(p) if p.isdigit() else p
                     for p in where.replace("[", ".").replace("]", "").split(".") if p)
        line = None
        for n in range(len(path), 0, -1):
            line = lines.get(path[:n])
            if line:
                break
        problems.append(Problem(where, what, None, filename, line))

    if not isinstance(doc, Mapping):
        raise AnswersError([Problem("", "expected a mapping of answers", None, filename)])
    for key in sorted(set(doc) - KEYS, key=str):
        add(str(key), "unknown key (typo?); known: " + ", ".join(sorted(KEYS)))
    if doc.get("version") != VERSION:
        add("version", f"must be {VERSION} (got {doc.get('version')!r})")

    def text_of(key: str, default: str | None = None, source: Mapping[object, object] = doc,
                prefix: str = "") -> str | None:
        v = source.get(key, default)
        if v is None or isinstance(v, str):
            return v
        add(prefix + key, f"must be a string (got {type(v).__name__}; quote it)")
        return None

    action = text_of("action") or ""
    if "action" not in doc:
        add("action", "required (create or import)")
    disk = text_of("disk") or ""
    if "disk" not in doc:
        add("disk", "required: the /dev/disk/by-id name, WWN or serial of the data disk")

    secret = text_of("passphrase")
    confirm = text_of("passphrase_confirm")
    pfile = text_of("passphrase_file")
    if pfile is not None:
        if secret is not None:
            add("passphrase_file", "give passphrase or passphrase_file, not both")
        path = Path(pfile) if os.path.isabs(pfile) else Path(filename).parent / pfile
        try:
            secret = path.read_text(encoding="utf-8").removesuffix("\n")
            confirm = secret  # a file cannot be mistyped
        except OSError as e:
            add("passphrase_file", f"cannot read {path}: {e.strerror}")
    if secret is None:
        if pfile is None:
            add("passphrase", "required (or passphrase_file)")
        secret = ""
    elif action == "create" and confirm is None:
        add("passphrase_confirm", "required with passphrase when creating a pool (it catches "
                                  "a typo before it locks the pool forever)")
    elif secret:
        for why in passphrase.problems(secret, confirm):
            add("passphrase_confirm" if "differ" in why else "passphrase", why)

    raw_admin = doc.get("admin") or {}
    root_hash, keys = None, ()
    if not isinstance(raw_admin, Mapping):
        add("admin", "must be a mapping with root_password_hash and/or ssh_authorized_keys")
        raw_admin = {}
    for key in sorted(set(raw_admin) - ADMIN_KEYS, key=str):
        add(f"admin.{key}", "unknown key; known: " + ", ".join(sorted(ADMIN_KEYS)))
    root_hash = text_of("root_password_hash", source=raw_admin, prefix="admin.")
    raw_keys = raw_admin.get("ssh_authorized_keys") or []
    if isinstance(raw_keys, str):
        raw_keys = [raw_keys]
    if not isinstance(raw_keys, list) or not all(isinstance(k, str) for k in raw_keys):
        add("admin.ssh_authorized_keys", "must be a list of public key lines")
    else:
        keys = tuple(k.strip() for k in raw_keys if k.strip())

    pool_name = text_of("pool_name", DEFAULT_POOL) or DEFAULT_POOL
    answers = Answers(action=action, backend=text_of("backend", "zfs") or "zfs", disk=disk,
                      passphrase=secret, admin=Admin(root_hash, keys),
                      tpm2=text_of("tpm2", "auto") or "auto", erase=text_of("erase"),
                      pool_name=pool_name, source=filename)
    for where, what in check(answers):
        if where in ("action", "disk") and where not in doc:
            continue  # already reported as required
        add(where, what)
    if problems:
        raise AnswersError(problems)
    return answers


def load(path: Path) -> Answers:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AnswersError([Problem("", f"cannot read: {e.strerror}", None, str(path))]) from None
    return parse(text, str(path))


def volume_refused(credentials_dir: str | None) -> bool:
    """True when the machine is provisioned to stay in live mode and no answers credential
    overrides it: an ANKLUME-CFG volume is then not even mounted."""
    if not credentials_dir:
        return False
    d = Path(credentials_dir)
    return (d / SKIP_CREDENTIAL).is_file() and not (d / CREDENTIAL).is_file()


def find(credentials_dir: str | None, volume_mounts: Sequence[Path]) -> Path | None:
    """The unattended answers, first found wins: the systemd credential, then the file on a
    mounted ANKLUME-CFG volume. None: ask interactively."""
    if credentials_dir:
        cred = Path(credentials_dir) / CREDENTIAL
        if cred.is_file():
            return cred
    for mount in volume_mounts:
        candidate = Path(mount) / VOLUME_FILE
        if candidate.is_file():
            return candidate
    return None
