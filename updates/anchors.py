"""The trust anchors inside the running, verified /usr (installed by the image build)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anklume.paths import trust_anchors_dir


@dataclass(frozen=True)
class Anchors:
    # update.crt signs manifests and verity root hashes; db.crt (Secure Boot db) signs UKIs.
    update_cert: Path = field(default_factory=lambda: trust_anchors_dir() / "update.crt")
    db_cert: Path = field(default_factory=lambda: trust_anchors_dir() / "db.crt")

    def check_present(self) -> None:
        from anklume.errors import PermanentError

        missing = [str(p) for p in (self.update_cert, self.db_cert) if not p.is_file()]
        if missing:
            raise PermanentError(f"trust anchors missing: {', '.join(missing)}",
                                 hint="this OS image does not carry its update certificates")
