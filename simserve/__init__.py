"""simserve: a discrete-event simulator of LLM inference serving on GPU clusters.

    import simserve
    result = simserve.simulate("config.yaml")      # or a dict, or None for the bundled default
    result.summary, result.requests                # dict (summary.json), pandas DataFrame
"""
__version__ = "0.1.0"
__all__ = ["simulate", "load_config", "Result", "SimConfig"]


def __getattr__(name):   # lazy, so `simserve.cost` and the CLI's light commands import quickly
    if name in ("simulate", "Result"):
        from simserve import simulation
        return getattr(simulation, name)
    if name in ("load_config", "SimConfig"):
        from simserve import config
        return getattr(config, name)
    raise AttributeError(f"module 'simserve' has no attribute {name!r}")
