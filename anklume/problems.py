"""Problems found in infra.yml, and the one error that carries all of them.

Validation never stops at the first mistake: every check adds a Problem to a Report, and
the caller raises one ValidationError listing them all, so a user fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from anklume import exitcodes
from anklume.errors import PermanentError

# A key path inside the merged document: ("domains", "pro", "machines", "pro-dev", "ip").
KeyPath = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """`domains.pro.machines.pro-dev.ip`, `network_policies[2].ports` (what users see)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Problem:
    where: str  # key path, "" for the whole document
    what: str
    hint: str | None = None
    file: str | None = None
    line: int | None = None
    tag: str | None = None  # a kind some callers single out (containment.UNSAFE); not printed

    def __str__(self) -> str:
        loc = ""
        if self.file:
            loc = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        where = f"{self.where}: " if self.where else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{loc}{where}{self.what}{hint}"


class ValidationError(PermanentError):
    """infra.yml is invalid; `.problems` lists every error found, `.warnings` the warnings."""

    exit_code = exitcodes.INVALID

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        super().__init__(self._message())

    def _message(self) -> str:
        n = len(self.problems)
        head = f"infra.yml is invalid ({n} problem{'s' if n != 1 else ''}):"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])

    def __str__(self) -> str:
        return self._message()


@dataclass
class Locator:
    """Where each key path of the merged document came from: (file, line)."""

    lines: dict[KeyPath, tuple[str, int | None]] = field(default_factory=dict)

    def find(self, path: KeyPath) -> tuple[str | None, int | None]:
        # The longest known prefix: a missing key is reported at its parent mapping.
        for n in range(len(path), -1, -1):
            hit = self.lines.get(tuple(path[:n]))
            if hit:
                return hit
        return None, None


class Report:
    """Collects errors and warnings with their location."""

    def __init__(self, locator: Locator | None = None) -> None:
        self.locator = locator or Locator()
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def _make(self, path: KeyPath, what: str, hint: str | None, tag: str | None = None
              ) -> Problem:
        file, line = self.locator.find(path)
        return Problem(format_path(path), what, hint, file, line, tag)

    def error(self, path: KeyPath, what: str, hint: str | None = None) -> None:
        self.errors.append(self._make(path, what, hint))

    def warn(self, path: KeyPath, what: str, hint: str | None = None,
             tag: str | None = None) -> None:
        self.warnings.append(self._make(path, what, hint, tag))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ValidationError(self.errors, self.warnings)


def describe(value: object) -> str:
    """A short name of a YAML value's type for error messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
