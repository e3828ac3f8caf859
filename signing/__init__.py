"""Key management: Secure Boot db key/cert and the verity/update signing key."""

from pathlib import Path

DEFAULT_KEY_DIR = Path("/var/lib/anklume/keys")  # here, not in keys: the CLI shows it cheaply
