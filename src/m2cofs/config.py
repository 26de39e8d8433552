"""Run configuration: presets (``paper``, ``lite``, ``tiny``) as YAML, overrides, validation.

A configuration has four sections — ``model`` (part sizes), ``data`` (preprocessing, patches,
batches), ``train`` (schedule, loss weights) and ``inference``. A preset is a complete YAML file
in ``m2cofs/configs``, or one that ``extends:`` another with what it changes (``tiny`` is lite
shrunk for tests and smoke runs); a user file (``--config``) and ``--set section.key=value`` overrides are
merged on top. Unknown keys and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from m2cofs.errors import M2CofsError
from m2cofs.models.spec import FUSION_HEADS, FUSION_WEIGHTS, ModelConfig, seg_head_names  # torch-free: the CLI imports this module

PRESETS = ("lite", "paper", "tiny")
SEG_LOSSES = ("dice", "dicece")  # train.seg_loss (losses.make_seg_loss) and compare --peer-loss
# The training loops, in order (training.options.LOOP_NAMES; spelled here so that the CLI needs no torch).
BUDGET_LOOPS = ("stage0_autoencoder", "stage1_fusion", "stage1_segmentation", "stage2_seg_to_fusion",
                "stage2_fusion_to_seg", "stage3_unification")
STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class DataConfig:
    spacing: tuple[float, float, float] | None = None
    intensity: str = "percentile"
    patch_size: tuple[int, int, int] = (64, 64, 32)
    batch_size: int = 2
    samples_per_case: int = 4
    foreground_ratio: float = 0.5
    augment: bool = True
    bias_field_prob: float = 0.0  # per modality and patch: a smooth multiplicative field (MONAI RandBiasField)
    gamma_prob: float = 0.0       # per modality and patch: a random gamma in [0.7, 1.5] (MONAI RandAdjustContrast)
    workers: int = 0


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 1e-5
    # Epochs per stage; a loop's own key (e.g. stage1_fusion) overrides its stage's count for that loop
    epochs: dict[str, int] = field(default_factory=lambda: {"stage0": 100, "stage1": 200, "stage2": 100, "stage3": 200})
    alpha: float = 0.1
    fusion_ssim: float = 0.0  # > 0: + this · Σ_i (1 − SSIM(fused, source_i)) in the fusion loss (0: the paper's L_F)
    seg_loss: str = "dice"
    si_lambda: float = 0.1
    si_mu: float = 0.1
    si_xi: float = 1e-3
    eta: float = 2.0
    gamma: float = 0.1
    manifold: str = "geodesic"
    knn_k: int = 5
    g_hidden: int = 64
    g_init: str = "mean"
    stage2_lr: float | None = None  # Stage II fine-tuning rate (None: train.lr)
    stage2_train_heads: bool = False
    stage3_si: bool = True
    checkpoint_every: int = 50
    seed: int = 0
    lr_schedule: str = "constant"  # constant | poly: lr · (1 − progress)^0.9, progress by steps or by the time budget
    time_budget_minutes: float = 0.0  # > 0: train for this long in all, split over the stages (see stage_budgets)
    # Under a time budget, a weight per training loop (all zero: the stages' epochs decide the split; see loop_budgets)
    budget_shares: dict[str, int] = field(default_factory=lambda: {k: 0 for k in BUDGET_LOOPS})
    fusion_retention: float = 0.0  # > 0: + this · lesion-contrast retention loss (needs labels and a weights head; see FusionLoss)
    fusion_retention_overshoot: float = 0.0  # > 0: the retention term also penalises a contrast shown stronger than the source's, by this much
    # Stage III trains ψ's path from φ's probabilities (model.fusion_reads_seg) at this many times its rate:
    # Adam moves a weight by about the rate per step, and the path starts at zero with ~100 steps to go
    seg_path_lr_scale: float = 30.0


#: inference.fusion_guide: no guide, or the predicted region that guides the fused volume
FUSION_GUIDES = ("none", "ET", "TC", "WT")
#: inference.fusion_guide_rule: how the guide moves the fused volume towards the rim source
FUSION_GUIDE_RULES = ("add", "max", "enhance")
#: the largest inference.fusion_guide_gain
FUSION_GUIDE_MAX_GAIN = 4.0


@dataclass(frozen=True)
class InferenceConfig:
    overlap: float = 0.5
    sw_batch_size: int = 2
    postprocess: bool = True
    min_component_mm3: float = 100.0
    keep_largest_wt: bool = True
    wt_keep_fraction: float = 0.5  # with keep_largest_wt, also keep WT components this fraction of the largest (1: it alone)
    detail_transfer: str = "auto"  # auto | on | off: sources' detail finer than the model grid, max-abs rule
    trunk: str = "window"  # window | volume: Φ and F in every window, or once per voxel (fusion faster; segmentation worse)
    tta_axes: tuple[int, ...] = ()  # mirror test-time augmentation of the segmentation: also predict flipped along these axes (0 L-R, 1 A-P, 2 S-I), average
    wt_select: str = "largest"  # with keep_largest_wt: which whole-tumour components to keep: largest (by size) or core (those holding a tumour core)
    min_core_mm3: float = 200.0  # wt_select core: a component holds a core when its TC is at least this large
    et_min_mm3: float = 0.0  # > 0: enhancing tumour smaller than this in all is called non-enhancing core instead (ET → TC)
    fusion_guide: str = "none"  # none | ET | TC | WT: the rim source (T1ce) guides the fused volume inside the model's own predicted region, smoothed (inference.fusion_output.guide_fusion; results/cv19_guide)
    fusion_guide_rule: str = "add"  # add: + gain · s · T1ce (both contrasts kept; the paper's edge metrics fall) | max: towards T1ce where brighter | enhance: + gain · s · T1ce's excess over the region's median
    fusion_guide_gain: float = 1.0  # in [0, FUSION_GUIDE_MAX_GAIN]
    fusion_guide_sigma_mm: float = 1.5


@dataclass(frozen=True)
class Config:
    preset: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    inference: InferenceConfig

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "Config":
        return _build(d, source)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "inference": InferenceConfig}


def _fail(source: str, key: str, problem: str) -> M2CofsError:
    return M2CofsError(f"{key}: {problem}", source)


def _unknown(source: str, prefix: str, key: str, known) -> M2CofsError:
    """``prefix.key: unknown key; did you mean prefix.close? (known: ...)``."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return _fail(source, f"{prefix}{key}", f"unknown key{hint} (known: {', '.join(known)})")


def _coerce(cls, section: str, values: dict[str, Any], source: str):
    if not isinstance(values, dict):
        raise _fail(source, section, "must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise _unknown(source, f"{section}.", unknown[0], fields)
    out = {}
    for name, f in fields.items():
        if name not in values:
            continue
        v = values[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        key = f"{section}.{name}"
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise _fail(source, key, f"expected true or false, got {v!r}")
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, int):
                raise _fail(source, key, f"expected an integer, got {v!r}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _fail(source, key, f"expected a number, got {v!r}")
            v = float(v)
        elif isinstance(default, tuple) or name in ("spacing",):
            if v is None and name == "spacing":
                pass
            elif not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise _fail(source, key, f"expected a list of numbers, got {v!r}")
            else:
                ints = isinstance(default, tuple) and (name == "tta_axes" or (default and isinstance(default[0], int)))
                v = tuple(int(x) if ints else float(x) for x in v)
        elif isinstance(default, dict):
            if not isinstance(v, dict):
                raise _fail(source, key, "must be a mapping")
            known = {**default, **({n: 0 for n in BUDGET_LOOPS} if key == "train.epochs" else {})}  # + a loop's own epochs
            bad = sorted(set(v) - set(known))
            if bad:
                raise _unknown(source, f"{key}.", bad[0], known)
            merged = dict(default)
            for k2, v2 in v.items():
                if isinstance(v2, bool) or not isinstance(v2, int):
                    raise _fail(source, f"{key}.{k2}", f"expected an integer, got {v2!r}")
                merged[k2] = v2
            v = merged
        elif name == "stage2_lr":
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _fail(source, key, f"expected a number or null, got {v!r}")
            v = None if v is None else float(v)
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise _fail(source, key, f"expected a string, got {v!r}")
        out[name] = v
    return cls(**out)


def _check_ranges(cfg: Config, source: str) -> None:
    m, d, t, i = cfg.model, cfg.data, cfg.train, cfg.inference

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise _fail(source, key, what)

    for k in ("feature_channels", "embed_dim", "window_size", "patch_embed", "fusion_growth", "fusion_channels",
              "seg_feature_size", "seg_window_size"):
        need(getattr(m, k) >= 1, f"model.{k}", "must be >= 1")
    need(len(m.depths) == len(m.num_heads) and len(m.depths) >= 1, "model.depths", "needs one head count per stage")
    need(all(m.embed_dim % h == 0 for h in m.num_heads), "model.num_heads", f"every head count must divide embed_dim {m.embed_dim}")
    need(m.fusion_head in FUSION_HEADS, "model.fusion_head", f"unknown fusion head {m.fusion_head!r}; choose one of {', '.join(FUSION_HEADS)}")
    need(m.fusion_weights in FUSION_WEIGHTS, "model.fusion_weights", f"must be one of {', '.join(FUSION_WEIGHTS)}")
    need(not m.fusion_reads_seg or m.fusion_head == "weights", "model.fusion_reads_seg",
         "needs model.fusion_head: weights (an image head would write intensities of its own)")
    need(m.seg_head in seg_head_names(), "model.seg_head", f"unknown head {m.seg_head!r}; choose one of {', '.join(seg_head_names())}")
    if m.seg_head == "swinunetr":
        need(m.seg_feature_size % 12 == 0, "model.seg_feature_size", "must be a multiple of 12 for swinunetr")
        need(len(m.seg_depths) == 4 and len(m.seg_num_heads) == 4, "model.seg_depths", "swinunetr needs 4 stages")
    if m.seg_head == "segresnet":
        need(m.seg_feature_size % 8 == 0, "model.seg_feature_size", "must be a multiple of 8 for segresnet (group norm)")
    need(d.spacing is None or (len(d.spacing) == 3 and min(d.spacing) > 0), "data.spacing", "must be null or three positive numbers")
    need(d.intensity in ("percentile", "robust", "minmax"), "data.intensity", "must be percentile, robust or minmax")
    need(len(d.patch_size) == 3 and min(d.patch_size) >= 8, "data.patch_size", "must be three sizes >= 8")
    multiple = {"swinunetr": 32, "unetr": 16, "unet": 16, "segresnet": 8}.get(m.seg_head, 1)  # each head's down-sampling
    need(all(p % multiple == 0 for p in d.patch_size), "data.patch_size", f"must be multiples of {multiple} for the {m.seg_head} head")
    if m.seg_head == "swinunetr":
        need(sum(p // 32 > 1 for p in d.patch_size) >= 1, "data.patch_size", "is too small for swinunetr (use at least 64 on one axis)")
    need(all(p % m.patch_embed == 0 for p in d.patch_size), "data.patch_size", f"must be divisible by model.patch_embed {m.patch_embed}")
    need(d.batch_size >= 1, "data.batch_size", "must be >= 1")
    need(d.samples_per_case >= 1, "data.samples_per_case", "must be >= 1")
    need(0.0 <= d.foreground_ratio <= 1.0, "data.foreground_ratio", "must be between 0 and 1")
    for k in ("bias_field_prob", "gamma_prob"):
        need(0.0 <= getattr(d, k) <= 1.0, f"data.{k}", "must be between 0 and 1")
    need(d.workers >= 0, "data.workers", "must be >= 0")
    need(t.optimizer in ("adamw", "adam", "sgd"), "train.optimizer", "must be adamw, adam or sgd")
    need(0 < t.lr < 1, "train.lr", "must be between 0 and 1")
    need(t.stage2_lr is None or 0 < t.stage2_lr < 1, "train.stage2_lr", "must be null or between 0 and 1")
    need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(0 < t.seg_path_lr_scale <= 1000, "train.seg_path_lr_scale", "must be > 0 and <= 1000")
    for k, v in t.epochs.items():
        need(v >= 0, f"train.epochs.{k}", "must be >= 0")
    for k, v in t.budget_shares.items():
        need(v >= 0, f"train.budget_shares.{k}", "must be >= 0")
    for k in ("alpha", "fusion_ssim", "fusion_retention", "fusion_retention_overshoot", "si_lambda", "si_mu", "eta", "gamma"):
        need(getattr(t, k) >= 0, f"train.{k}", "must be >= 0")
    need(t.si_xi > 0, "train.si_xi", "must be > 0")
    need(t.seg_loss in SEG_LOSSES, "train.seg_loss", f"must be {' or '.join(SEG_LOSSES)}")
    need(t.manifold in ("geodesic", "euclidean"), "train.manifold", "must be geodesic or euclidean")
    need(t.knn_k >= 1, "train.knn_k", "must be >= 1")
    need(t.g_hidden >= 1, "train.g_hidden", "must be >= 1")
    need(t.g_init in ("mean", "theta_f"), "train.g_init", "must be mean or theta_f")
    need(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    need(t.lr_schedule in ("constant", "poly"), "train.lr_schedule", "must be constant or poly")
    need(t.time_budget_minutes >= 0, "train.time_budget_minutes", "must be >= 0 (0: no budget, the epochs decide)")
    need(0 <= i.overlap < 1, "inference.overlap", "must be in [0, 1)")
    need(i.sw_batch_size >= 1, "inference.sw_batch_size", "must be >= 1")
    need(i.min_component_mm3 >= 0, "inference.min_component_mm3", "must be >= 0")
    need(0 < i.wt_keep_fraction <= 1, "inference.wt_keep_fraction", "must be in (0, 1]")
    need(i.detail_transfer in ("auto", "on", "off"), "inference.detail_transfer", "must be auto, on or off")
    need(i.trunk in ("window", "volume"), "inference.trunk", "must be window or volume")
    need(all(a in (0, 1, 2) for a in i.tta_axes) and len(set(i.tta_axes)) == len(i.tta_axes), "inference.tta_axes",
         "must be distinct axes among 0, 1, 2")
    need(i.wt_select in ("largest", "core"), "inference.wt_select", "must be largest or core")
    need(i.min_core_mm3 >= 0 and i.et_min_mm3 >= 0, "inference.min_core_mm3", "and inference.et_min_mm3 must be >= 0")
    need(i.fusion_guide in FUSION_GUIDES, "inference.fusion_guide", f"must be one of {', '.join(FUSION_GUIDES)}")
    need(i.fusion_guide_rule in FUSION_GUIDE_RULES, "inference.fusion_guide_rule", f"must be one of {', '.join(FUSION_GUIDE_RULES)}")
    need(0 <= i.fusion_guide_gain <= FUSION_GUIDE_MAX_GAIN, "inference.fusion_guide_gain", f"must be in [0, {FUSION_GUIDE_MAX_GAIN:g}]")
    need(i.fusion_guide_sigma_mm >= 0, "inference.fusion_guide_sigma_mm", "must be >= 0")


def _build(d: dict[str, Any], source: str) -> Config:
    if not isinstance(d, dict):
        raise M2CofsError("a configuration must be a YAML mapping", source)
    unknown = sorted(set(d) - {"preset", *_SECTIONS})
    if unknown:
        raise _unknown(source, "", unknown[0], ["preset", *_SECTIONS])
    preset = d.get("preset", "custom")
    if not isinstance(preset, str):
        raise _fail(source, "preset", "must be a string")
    parts = {name: _coerce(cls, name, d.get(name, {}) or {}, source) for name, cls in _SECTIONS.items()}
    cfg = Config(preset=preset, **parts)
    _check_ranges(cfg, source)
    return cfg


def preset_dict(name: str) -> dict[str, Any]:
    """The raw YAML mapping of a preset."""
    if name not in PRESETS:
        raise M2CofsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("m2cofs.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    d = yaml.safe_load(text)
    base = d.pop("extends", None)
    return _deep_merge(preset_dict(base), d) if base else d


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["train.lr=0.01", "train.epochs.stage1=5"]`` → nested mapping (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise M2CofsError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise M2CofsError(f"--set {item!r}: expected section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise M2CofsError(f"--set {item!r}: cannot parse the value") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parsed
    return out


def load_config(preset: str = "lite", config_file: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Preset, then ``config_file`` (a partial or whole YAML), then ``--set`` overrides."""
    d = preset_dict(preset)
    source = f"preset {preset}"
    if config_file is not None:
        path = Path(config_file)
        try:
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise M2CofsError(f"cannot be read ({exc.strerror})", path) from None
        except yaml.YAMLError as exc:
            raise M2CofsError(f"is not valid YAML ({str(exc).splitlines()[0]})", path) from None
        if not isinstance(user, dict):
            raise M2CofsError("a configuration must be a YAML mapping", path)
        d = _deep_merge(d, user)
        source = str(path)
    if overrides:
        d = _deep_merge(d, parse_set(overrides))
        source = source + " with --set"
    return _build(d, source)
