"""Hardware and model catalog: frozen records loaded from the YAML files beside this module.

Users extend it without touching the package: a config's ``model`` or ``cluster.hardware`` may be a
catalog name, a path to a YAML file holding one card (or a mapping of name -> card), or an inline
dict with the same fields.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from simserve.errors import CatalogError

CATALOG_DIR = Path(__file__).parent
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp4")
DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5}


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak that real kernels reach (roofline derating) and a fixed cost per kernel."""
    compute: Mapping[str, float]
    memory: float
    attention_compute: float
    attention_memory: float
    kernel_overhead_s: float
    profile: str | None = None   # measured profile these factors were fitted to (name or folder)
    # GEMMs timed from the profile's measured GEMM table (cost.gemm_table), not one compute and
    # one memory fraction; the scalar fractions above remain for kernels without a shape
    shape_aware_gemm: bool = False
    # decode attention and measured elementwise kernels corrected by the profile's operator tables
    # (cost.op_tables: attn_decode.csv, elementwise.csv); fitted factors where a table lacks the shape
    measured_ops: bool = False
    # fraction of HBM bandwidth per elementwise operator (cost.operators name without its
    # prefix, e.g. norms, silu_mul, quantize_activations); others use `memory`
    elementwise: Mapping[str, float] = field(default_factory=dict)
    # fixed time per attention call beyond kernel_overhead_s (prologue, split-KV merge kernels),
    # fitted from the profile's attention tables; 0 where the GPU has no profile
    attention_prefill_s: float = 0.0
    attention_decode_s: float = 0.0


@dataclass(frozen=True)
class ScaleUp:
    kind: str            # nvlink | xgmi | pcie
    links: int
    link_bw_Bps: float   # per link, per direction

    @property
    def total_bw_Bps(self) -> float:
        return self.links * self.link_bw_Bps


@dataclass(frozen=True)
class Gpu:
    name: str
    vendor: str
    hbm_bytes: float
    hbm_bw_Bps: float
    peak_flops: Mapping[str, float]
    scale_up: ScaleUp
    pcie_bw_Bps: float
    nic_bw_Bps: float
    default_topology: str
    efficiency: Efficiency
    aliases: tuple[str, ...] = ()
    price_per_hour: float | None = None   # USD per GPU-hour, on-demand (the planner's cost; sources in hardware.yaml)

    def flops(self, dtype: str) -> float:
        """Peak FLOP/s for a dtype; a dtype without tensor-core support runs at the next wider one."""
        order = ("fp4", "fp8", "bf16", "fp16", "tf32", "fp32")
        for candidate in order[order.index(dtype):]:
            if candidate in self.peak_flops:
                return self.peak_flops[candidate]
        raise CatalogError(f"hardware {self.name!r} has no peak FLOP/s for {dtype} or wider")

    def compute_eff(self, dtype: str) -> float:
        comp = self.efficiency.compute
        return comp.get(dtype, comp.get("bf16", 0.7))


@dataclass(frozen=True)
class MoeSpec:
    num_experts: int
    top_k: int
    expert_intermediate: int
    shared_experts: int = 0
    first_dense_layers: int = 0


@dataclass(frozen=True)
class MlaSpec:
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds a compressed latent."""
    q_lora_rank: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    num_layers: int
    hidden: int
    intermediate: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    max_context: int
    tied_embeddings: bool = False
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    source: str = ""


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads 3.35e12 as a float (YAML 1.1 would need 3.35e+12)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def load_catalog_file(path: str | Path) -> dict[str, Any]:
    """A catalog YAML file as a mapping of name -> entry (CatalogError naming the file otherwise)."""
    return _load_yaml(Path(path))


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise CatalogError(f"{path}: not a UTF-8 YAML file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping of name -> entry")
    return data


def _build(cls, name: str, raw: Mapping[str, Any], nested: Mapping[str, Any]):
    allowed = {f.name for f in fields(cls)} - {"name"}
    unknown = set(raw) - allowed
    if unknown:
        raise CatalogError(f"{cls.__name__.lower()} {name!r}: unknown field(s) {sorted(unknown)}; "
                           f"allowed: {sorted(allowed)}")
    kwargs = dict(raw)
    for key, sub in nested.items():
        if kwargs.get(key) is not None:
            kwargs[key] = _build(sub, f"{name}.{key}", kwargs[key], {})
    if "name" in {f.name for f in fields(cls)}:
        kwargs["name"] = name
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CatalogError(f"{cls.__name__.lower()} {name!r}: {exc}") from None


def gpu_from_dict(name: str, raw: Mapping[str, Any]) -> Gpu:
    raw = dict(raw)
    raw["aliases"] = tuple(raw.get("aliases", ()))
    eff = dict(raw.get("efficiency", {}))
    raw["efficiency"] = eff
    gpu = _build(Gpu, name, raw, {"scale_up": ScaleUp, "efficiency": Efficiency})
    for key in ("hbm_bytes", "hbm_bw_Bps", "pcie_bw_Bps", "nic_bw_Bps"):
        value = getattr(gpu, key)
        if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise CatalogError(f"hardware {name!r}: {key} must be a positive finite number (got {value!r})")
    return gpu


def model_from_dict(name: str, raw: Mapping[str, Any]) -> ModelCard:
    from simserve.catalog.schema import validate_model_card   # the same checks for catalog and inline cards

    card = _build(ModelCard, name, validate_model_card(name, dict(raw)), {"moe": MoeSpec, "mla": MlaSpec})
    for key in ("num_layers", "hidden", "intermediate", "num_heads", "num_kv_heads", "head_dim",
                "vocab", "max_context"):
        if not int(getattr(card, key)) > 0:
            raise CatalogError(f"model {name!r}: {key} must be a positive integer")
    if card.num_heads % card.num_kv_heads:
        raise CatalogError(f"model {name!r}: num_heads {card.num_heads} is not a multiple of "
                           f"num_kv_heads {card.num_kv_heads}")
    return card


@lru_cache(maxsize=None)
def hardware_catalog() -> dict[str, Gpu]:
    return {name: gpu_from_dict(name, raw) for name, raw in _load_yaml(CATALOG_DIR / "hardware.yaml").items()}


@lru_cache(maxsize=None)
def model_catalog() -> dict[str, ModelCard]:
    return {name: model_from_dict(name, raw) for name, raw in _load_yaml(CATALOG_DIR / "models.yaml").items()}


def _resolve(spec: str | Mapping[str, Any], catalog: Mapping[str, Any], kind: str, build):
    if isinstance(spec, Mapping):
        raw = dict(spec)
        name = str(raw.pop("name", f"custom-{kind}"))
        return build(name, raw)
    key = str(spec).lower()
    if key in catalog:
        return catalog[key]
    for entry in catalog.values():
        if key in getattr(entry, "aliases", ()):
            return entry
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml"):
        data = _load_yaml(path)
        if "num_layers" in data or "hbm_bytes" in data:     # a single card
            return build(data.pop("name", path.stem), data)
        if len(data) != 1:
            raise CatalogError(f"{path}: holds {len(data)} {kind} entries; name one of them "
                               f"in the config or keep one entry per file")
        (name, raw), = data.items()
        return build(name, raw)
    raise CatalogError(f"unknown {kind} {spec!r}; known: {', '.join(sorted(catalog))} "
                       f"(or give a YAML file or an inline dict)")


def get_hardware(spec: str | Mapping[str, Any]) -> Gpu:
    return _resolve(spec, hardware_catalog(), "hardware", gpu_from_dict)


def get_model(spec: str | Mapping[str, Any]) -> ModelCard:
    return _resolve(spec, model_catalog(), "model", model_from_dict)


def profile_dir(name: str) -> Path:
    """Folder of a measured kernel/layer profile (CSV tables) shipped with the package."""
    path = CATALOG_DIR / "profiles" / name
    if not path.is_dir():
        raise CatalogError(f"no measured profile {name!r} under {CATALOG_DIR / 'profiles'}")
    return path


def resolve_profile(spec: str | Path) -> Path:
    """A shipped profile's name, or the path of a profile folder (`simserve profile --out DIR`)."""
    path = Path(spec)
    if path.is_dir() and (path / "meta.json").is_file():
        return path
    return profile_dir(str(spec))
