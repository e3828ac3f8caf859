"""The trust anchors inside the running, verified /usr (installed by the image build)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEYS_DIR = Path("/usr/share/anklume/keys")


@dataclass(frozen=True)
class Anchors:
    update_cert: Path = KEYS_DIR / "update.crt"  # signs manifests and verity root hashes
    db_cert: Path = KEYS_DIR / "db.crt"  # Secure Boot db: signs UKIs

    def check_present(self) -> None:
        from anklume.errors import PermanentError

        missing = [str(p) for p in (self.update_cert, self.db_cert) if not p.is_file()]
        if missing:
            raise PermanentError(f"trust anchors missing: {', '.join(missing)}",
                                 hint="this OS image does not carry its update certificates")
