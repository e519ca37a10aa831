"""Summary keys of the serving techniques a config turns on (issue 17): prefix caching,
speculative decoding, sync-point drop; each absent when its technique is off."""
from __future__ import annotations

from simserve.engine.speculative import speculation_summary
from simserve.iteration.build import sync_drop_summary
from simserve.kvcache.prefix import prefix_summary


def technique_keys(cfg, replicas) -> dict:
    keys = prefix_summary([r.kv.prefix for r in replicas])
    keys.update(speculation_summary(cfg, replicas))
    keys.update(sync_drop_summary(cfg.collectives.sync_point_drop, replicas[0].stages))
    return keys
