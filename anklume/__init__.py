"""anklume: an appliance OS of isolated, encrypted compartments."""

from pathlib import Path

# A plain read, not importlib.resources: this runs in every `anklume` command (see cli.py).
__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
