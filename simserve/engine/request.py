"""Moved: request state lives in `simserve.request` (the scheduler and the engine both import it)."""
from simserve.request import Request

__all__ = ["Request"]
