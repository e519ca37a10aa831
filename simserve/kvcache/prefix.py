"""Automatic prefix caching (vLLM V1's `KVCacheManager` with `enable_prefix_caching`), as counts.

A full KV block is named by a hash of everything up to its last token, chained block to block as
vLLM's `hash_block_tokens(parent_block_hash, block_tokens)` chains them (vllm/v1/core/
kv_cache_utils.py), so two requests share a block exactly when they share every token up to its
end. simserve has no token ids: a request's tokens are named by its workload's prefix identity
(`ids`, one per `segment_tokens` tokens: Mooncake's `hash_ids` name 512-token blocks; the synthetic
`shared_prefix` names a group's whole prefix), and token t is (ids[t // segment], t % segment).
Tokens past the identity are the request's own; their blocks are never shared, so they are not
hashed (only blocks that can hit are tracked).

The pool (vllm/v1/core/block_pool.py, as counts):
- a block in use is held by one or more running requests (`refs`, counted once in `kv.used`:
  sharing is the memory saving);
- a cached block no running request holds waits in `evictable` (vLLM's `FreeKVCacheBlockQueue`),
  least recently freed first; a request frees its blocks tail first, so a prefix's tail is evicted
  before its head, as vLLM frees them in reverse order;
- allocating a fresh block when no empty one is left evicts the first evictable one, so the table
  never holds more than the cache's `num_blocks` entries (memory bounded by the KV cache, not by
  the number of requests).
Blocks are hashed when the chunk that fills them is scheduled (vLLM V1 `allocate_slots` ->
`cache_blocks` for num_computed + num_new tokens), so a request scheduled later, in this step or
after, hits them. A request whose prompt is wholly cached still recomputes its last token
(`max_cache_hit_length = num_tokens - 1`: the step needs its logits).

Hit rates count first admissions (vLLM's `PrefixCacheStats` keeps preempted requests apart).
"""
from __future__ import annotations

from collections import deque
from itertools import compress, repeat, takewhile
from operator import add, sub
from typing import Optional, Sequence


def block_keys(ids: Optional[Sequence[int]], segment_tokens: int, tokens: int, block_size: int) -> list[int]:
    """Keys of the full KV blocks of a prompt's first `tokens` tokens that carry an identity.

    A block's key is the hash chain of the segment ids up to the segment of its last token, plus
    the block's start relative to that segment: equal keys mean equal tokens from the first up to
    the block's end. (Two different prefixes collide only if their 64-bit chain hashes fall within
    a segment's length of each other: probability ~ pairs x 2^-54.)"""
    if not ids:
        return []
    covered = min(tokens, len(ids) * segment_tokens)
    keys: list[int] = []
    chain = 0
    for j in range(-(-covered // segment_tokens)):
        chain = hash((chain, ids[j]))
        base = j * segment_tokens
        # blocks whose last token lies in segment j
        first = max(0, -(-(base - block_size + 1) // block_size) * block_size)
        end = min(base + segment_tokens - block_size, covered - block_size)   # last start, inclusive
        if end >= first:
            keys.extend(range(chain + first - base, chain + end - base + 1, block_size))
    return keys


class PrefixCache:
    """The cached blocks of one replica's KV pool (`kv.prefix`); see the module docstring.

    `table` maps a cached block's key to the running requests holding it; 0 means evictable, and
    then `evictable` maps it to the number of the release that freed it. The free queue is two
    deques (key, release number) in the order blocks were freed; an entry whose block was taken
    again or freed later is stale and skipped when it reaches the front, and the queue is compacted
    when stale entries outnumber live ones (so it stays within twice the cache's blocks). Bulk
    dict and deque operations keep the cost per block a few C-level steps (a 12k-token prompt has
    750 blocks)."""

    def __init__(self, kv, segment_tokens: int):
        self.kv = kv
        self.block_size = kv.block_size
        self.segment_tokens = segment_tokens
        self.table: dict[int, int] = {}
        self.evictable: dict[int, int] = {}
        self._queue_keys: deque[int] = deque()
        self._queue_stamps: deque[int] = deque()
        self._releases = 0
        self.evictions = 0
        self.queried_blocks = self.hit_blocks = 0
        self.queried_tokens = self.hit_tokens = 0

    def keys(self, req) -> list[int]:
        """The request's block keys, computed once and kept while it is in the system."""
        if req.block_keys is None:
            req.block_keys = block_keys(req.prefix_hashes, self.segment_tokens, req.isl, self.block_size)
        return req.block_keys

    def lookup(self, req) -> tuple[int, int]:
        """(leading blocks cached, how many of them are evictable, i.e. counted as free)."""
        keys = self.keys(req)
        if not keys:
            return 0, 0
        cap = min(len(keys), (req.prefill_target - 1) // self.block_size)
        table = self.table
        hits = list(takewhile(table.__contains__, keys[:cap]))
        return len(hits), list(map(table.__getitem__, hits)).count(0)

    def cached_blocks(self, req) -> int:
        return self.lookup(req)[0]

    def acquire(self, req, need: int, hit: int) -> None:
        """The request takes its `hit` cached blocks (its prompt needs `need` blocks) and starts
        with their tokens computed."""
        if req.preemptions == 0:
            self.queried_blocks += need
            self.hit_blocks += hit
            self.queried_tokens += req.prefill_target
            self.hit_tokens += hit * self.block_size
        req.cached_upto = hit
        if not hit:
            req.cached_keys = []
            return
        held = req.block_keys[:hit]
        table = self.table
        counts = list(map(table.__getitem__, held))
        revived = counts.count(0)
        if revived:                             # nobody held these: they leave the free queue
            deque(map(self.evictable.pop, compress(held, map((0).__eq__, counts))), maxlen=0)
        table.update(zip(held, map(add, counts, repeat(1))))
        self.kv.take_cached(revived)
        req.cached_keys = held
        req.prefilled = hit * self.block_size

    def scheduled(self, req, computed_tokens: int) -> None:
        """The request's blocks full once `computed_tokens` are computed join the cache. A block
        another request cached meanwhile stays this request's own (vLLM keeps such duplicates)."""
        keys = req.block_keys
        full = min(len(keys), computed_tokens // self.block_size)
        if full <= req.cached_upto:
            return
        new = keys[req.cached_upto:full]
        req.cached_upto = full
        table = self.table
        if table.keys().isdisjoint(new):
            table.update(dict.fromkeys(new, 1))
            req.cached_keys.extend(new)
            return
        for key in new:
            if key not in table:
                table[key] = 1
                req.cached_keys.append(key)

    def release(self, req) -> int:
        """The request leaves the running set: its cached blocks stay cached (evictable once nobody
        holds them, tail first); returns how many blocks go back to the pool's free count."""
        held = req.cached_keys
        req.cached_keys = ()
        if not held:
            return req.blocks
        table = self.table
        counts = list(map(table.__getitem__, held))
        table.update(zip(held, map(sub, counts, repeat(1))))
        last = list(compress(reversed(held), map((1).__eq__, reversed(counts))))   # freed, tail first
        if last:
            self._releases += 1
            self.evictable.update(dict.fromkeys(last, self._releases))
            self._queue_keys.extend(last)
            self._queue_stamps.extend(repeat(self._releases, len(last)))
            if len(self._queue_keys) > 2 * len(self.evictable) + 4096:
                self._compact()
        return req.blocks - (len(held) - len(last))

    def _compact(self) -> None:
        evictable = self.evictable
        live = [(k, st) for k, st in zip(self._queue_keys, self._queue_stamps) if evictable.get(k) == st]
        self._queue_keys = deque(k for k, _ in live)
        self._queue_stamps = deque(st for _, st in live)

    def fit(self, empty: int) -> None:
        """Evict least recently freed blocks until the evictable ones fit in `empty` blocks."""
        evictable, table = self.evictable, self.table
        keys, stamps = self._queue_keys, self._queue_stamps
        while len(evictable) > empty:
            key, stamp = keys.popleft(), stamps.popleft()
            if evictable.get(key) == stamp:
                del evictable[key]
                del table[key]
                self.evictions += 1


def prefix_summary(caches: list) -> dict:
    """The summary's prefix-caching keys over the replicas' caches (none when caching is off):
    `prefix_cache_hit_rate` {blocks, tokens} (hits over queries, summed) and the evictions."""
    if not caches or caches[0] is None:
        return {}
    blocks = sum(c.queried_blocks for c in caches)
    tokens = sum(c.queried_tokens for c in caches)
    return {"prefix_cache_hit_rate": {"blocks": sum(c.hit_blocks for c in caches) / blocks if blocks else 0.0,
                                      "tokens": sum(c.hit_tokens for c in caches) / tokens if tokens else 0.0},
            "prefix_cache_evictions": int(sum(c.evictions for c in caches))}
