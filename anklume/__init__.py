"""anklume: an appliance OS of isolated, encrypted compartments."""

from importlib import resources

__version__ = resources.files(__package__).joinpath("VERSION").read_text().strip()
