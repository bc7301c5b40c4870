"""crackseg: particles, cracks and pores in electrode tomograms, and the damage
distribution of the whole electrode with honest uncertainty."""

from crackseg._version import __version__

__all__ = ["__version__", "load_model", "predict_volume", "particle_instances"]


def __getattr__(name):
    # ``crackseg.load_model`` without importing torch for ``import crackseg``.
    if name == "load_model":
        from crackseg.model_io import load_model

        return load_model
    if name == "predict_volume":
        from crackseg.inference import predict_volume

        return predict_volume
    if name == "particle_instances":
        from crackseg.particles import particle_instances

        return particle_instances
    raise AttributeError(f"module 'crackseg' has no attribute {name!r}")
