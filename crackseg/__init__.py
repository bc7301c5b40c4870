"""crackseg: particles, cracks and pores in electrode tomograms, and the damage
distribution of the whole electrode with honest uncertainty."""

from crackseg._version import __version__

__all__ = ["__version__"]
