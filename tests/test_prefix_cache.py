"""Prefix caching (scheduler.prefix_caching, vLLM automatic prefix caching) and prefix_affinity routing."""
from __future__ import annotations

import gzip
import json

import pytest

from simserve.cost import BatchStats
from simserve.errors import ConfigError
from simserve.kvcache import BlockManager
from simserve.kvcache.prefix import PrefixCache, block_keys
from simserve.request import Request
from simserve.simulation import simulate
from simserve.workload.trace import BUNDLED_DIR
from simserve.world import build_world

# two KV layers of one 64-wide head in bf16: 512 bytes per token, so an H100 holds ~140M tokens
# ("ample KV": the first 700 Mooncake requests hold 9.6M prompt tokens)
TINY = {"name": "tiny-test", "num_layers": 2, "hidden": 512, "intermediate": 1024, "num_heads": 8,
        "num_kv_heads": 1, "head_dim": 64, "vocab": 32000, "max_context": 131072}
MOONCAKE = "conversation_trace.jsonl.gz"


def test_block_keys_are_equal_exactly_up_to_the_shared_prefix():
    a = block_keys((7, 8, 9), 32, 96, 16)
    b = block_keys((7, 8, 5), 32, 96, 16)
    assert len(a) == 6 and a[:4] == b[:4] and not set(a[4:]) & set(b)
    assert block_keys((7, 8, 9), 32, 90, 16) == a[:5]            # only full blocks of the prompt
    # a block straddling two segments (block 16 does not divide the 20-token segment) depends on both
    c, d = block_keys((1, 2, 3), 20, 60, 16), block_keys((1, 4, 3), 20, 60, 16)
    assert c[0] == d[0] and c[1] != d[1] and len(set(c)) == 3
    assert block_keys(None, 512, 4096, 16) == []


def _request(rid, ids, isl=64):
    return Request(rid, 0.0, isl, 4, ids)


def _admit(kv, req):
    hit, _ = kv.prefix.lookup(req)
    need = -(-req.isl // kv.block_size)
    kv.prefix.acquire(req, need, hit)
    kv.allocate(need - hit)
    req.blocks = need
    kv.prefix.scheduled(req, req.isl)
    return hit


def test_shared_blocks_count_once_and_evict_least_recently_freed_tail_first():
    kv = BlockManager(8, 16, watermark=0)
    kv.prefix = PrefixCache(kv, 16)
    a, b = _request(0, (1, 2, 3, 4)), _request(1, (1, 2, 5, 6))
    assert _admit(kv, a) == 0 and kv.used == 4
    assert _admit(kv, b) == 2 and kv.used == 6         # blocks 1, 2 are shared: held once
    kv.release(kv.prefix.release(a))                    # a's own blocks 3, 4 become evictable
    assert kv.used == 4 and kv.free == 4 and len(kv.prefix.evictable) == 2
    kv.release(kv.prefix.release(b))
    assert kv.used == 0 and len(kv.prefix.table) == 6   # everything stays cached, 6 of 8 blocks
    kv.allocate(4)                                      # 2 empty blocks, then 2 evictions: a's tail first
    assert kv.prefix.evictions == 2 and len(kv.prefix.table) + kv.used <= kv.num_blocks
    left = set(kv.prefix.table)
    keys_a = block_keys((1, 2, 3, 4), 16, 64, 16)
    assert keys_a[3] not in left and keys_a[2] not in left and keys_a[0] in left
    kv.release(4)
    again = _request(2, (1, 2, 3, 4))
    assert _admit(kv, again) == 2                       # the evicted tail is computed again


def _mooncake_repeated_share(n: int) -> tuple[float, float]:
    """Of the first n requests' 512-token prefix blocks (and their tokens), the share that repeats
    a block seen earlier in the trace: what an unbounded cache would hit."""
    seen, blocks, repeated, tokens, repeated_tokens = set(), 0, 0, 0, 0
    with gzip.open(BUNDLED_DIR / MOONCAKE, "rt") as f:
        for _, line in zip(range(n), f):
            row = json.loads(line)
            isl = row["input_length"]
            tokens += isl
            for j, h in enumerate(row["hash_ids"]):
                blocks += 1
                if h in seen:
                    repeated += 1
                    repeated_tokens += min(512, isl - 512 * j)
                seen.add(h)
    return repeated / blocks, repeated_tokens / tokens


def test_conversation_trace_hits_the_blocks_it_repeats_and_ttft_drops():
    n = 700
    config = {"model": TINY, "workload": {"trace": MOONCAKE, "num_requests": n}}
    off = simulate(config).summary
    on = simulate({**config, "scheduler": {"prefix_caching": True}}).summary
    share_blocks, share_tokens = _mooncake_repeated_share(n)
    rate = on["prefix_cache_hit_rate"]
    # 2 points (the band): KV blocks are 16 tokens, so a repeated Mooncake block's partial
    # last 512 tokens count in the trace's share as a whole block (0.35 points here), and a prompt
    # wholly cached recomputes its last block (vLLM's max_cache_hit_length = num_tokens - 1)
    assert rate["blocks"] == pytest.approx(share_blocks, abs=0.02)
    assert rate["tokens"] == pytest.approx(share_tokens, abs=0.02)
    assert on["prefix_cache_evictions"] == 0 and on["preemptions"] == 0
    assert on["ttft"]["mean"] < off["ttft"]["mean"]
    assert "prefix_cache_hit_rate" not in off


def test_caching_changes_nothing_where_prompts_share_no_identity():
    """The Azure trace names no prompt tokens: every block is a miss and the run is the same."""
    config = {"workload": {"num_requests": 300}}
    off, on = simulate(config), simulate({**config, "scheduler": {"prefix_caching": True}})
    assert off.requests.equals(on.requests)
    assert on.summary["prefix_cache_hit_rate"] == {"blocks": 0.0, "tokens": 0.0}


def test_a_cached_prefix_skips_its_prefill_but_attention_reads_it():
    """Two requests of one shared 2048-token group, far apart: the second prefills its own 512
    tokens with attention over the 2048 cached ones."""
    config = {"scheduler": {"prefix_caching": True, "chunk_size": 4096}, "engine": {"runtime": "ideal"},
              "workload": {"lengths": {"isl": 512, "osl": 2}, "arrivals": {"process": "poisson", "rate": 0.01},
                           "num_requests": 2, "shared_prefix": {"tokens": 2048, "groups": 1}}}
    world = build_world(config).run()
    ttft_first, ttft = world.requests.first_token_s - world.requests.arrival_s
    stage = world.replicas[0].stages[0]
    assert ttft == pytest.approx(stage.time(BatchStats.of([(512, 2048)])), rel=1e-12)
    assert ttft_first == pytest.approx(stage.time(BatchStats.of([(2560, 0)])), rel=1e-12)


def test_eviction_under_kv_pressure_keeps_the_table_within_the_cache():
    """400 prompts over 400 groups of 4000 shared tokens (1.6M distinct cached tokens): a 0.4M-token
    cache evicts, hits less than a 1.3M-token one, and its table never outgrows its blocks."""
    rates = []
    for util in (0.01, 0.005):
        config = {"model": TINY, "engine": {"gpu_memory_utilization": util, "reserved_GiB": 0},
                  "scheduler": {"prefix_caching": True},
                  "workload": {"lengths": {"isl": 3000, "osl": 20}, "arrivals": {"process": "poisson", "rate": 20},
                               "num_requests": 400, "shared_prefix": {"tokens": 4000, "groups": 400}}}
        world = build_world(config).run()
        kv = world.replicas[0].kv
        cache = kv.prefix
        assert len(cache.table) <= kv.num_blocks                     # bounded by the KV cache
        assert len(cache._queue_keys) <= 2 * len(cache.evictable) + 4096
        rates.append((cache.hit_blocks / cache.queried_blocks, cache.evictions))
    (ample, ample_evictions), (tight, tight_evictions) = rates
    assert tight_evictions > ample_evictions and tight < ample


def test_prefix_affinity_sends_a_group_where_its_prefix_is_cached():
    config = {"parallelism": {"dp": 4}, "cluster": {"topology": "dgx-h100"},
              "workload": {"lengths": {"isl": 256, "osl": 16}, "arrivals": {"process": "poisson", "rate": 20},
                           "num_requests": 200, "shared_prefix": {"tokens": 2048, "groups": 4}},
              "scheduler": {"prefix_caching": True}}
    spread = simulate({**config, "router": {"policy": "round_robin"}}).summary["prefix_cache_hit_rate"]
    affine = simulate({**config, "router": {"policy": "prefix_affinity"}}).summary["prefix_cache_hit_rate"]
    # a prompt is 2304 tokens (144 blocks), 128 of them its group's: round robin computes each
    # group's prefix once per replica (16 first misses of 200), affinity once per group (4)
    assert spread["blocks"] == pytest.approx((200 - 16) / 200 * 128 / 144, rel=1e-12)
    assert affine["blocks"] == pytest.approx((200 - 4) / 200 * 128 / 144, rel=1e-12)


@pytest.mark.parametrize("config,message", [
    ({"router": {"policy": "prefix_affinity"}}, "set scheduler.prefix_caching: true"),
    ({"workload": {"lengths": {"isl": 8, "osl": 8}, "arrivals": {"process": "batch"},
                   "shared_prefix": {"tokens": 0, "groups": 2}}}, "workload.shared_prefix.tokens"),
])
def test_bad_prefix_settings_are_one_line_errors(config, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_world(config)
    assert "\n" not in str(err.value)
