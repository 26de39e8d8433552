"""The methods of ``m2cofs compare``: a registry of :class:`MethodSpec` (name, group, label and
how the method predicts), and ``--methods`` parsing.

Torch-free (``m2cofs compare --help`` lists the groups without importing torch): a
weight-based method's ``make(ctx)`` imports :mod:`.makers`, which needs torch, when it is
called. Register another method with :func:`register_method` (a decorator on its maker, as
timm's ``register_model``) or :func:`register`; the groups and method lists below follow.

A method predicts in one of three ways (:attr:`MethodSpec.kind`):

* ``model``: ``make(ctx)`` returns the fold's model file, predicted as ``m2cofs predict`` does;
* ``classical``: a learning-free fusion rule (:data:`m2cofs.baselines.classical.CLASSICAL_FUSION`), or
  one source copied (:data:`~m2cofs.baselines.classical.COPY_SOURCE`, group ``copy``);
* ``peer``: a segmentation-only network trained and predicted in memory (:mod:`.predict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from m2cofs.errors import M2CofsError

MODEL, CLASSICAL, PEER = "model", "classical", "peer"
KINDS = (MODEL, CLASSICAL, PEER)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    group: str
    label: str  # its row in the tables, its point in the weight-space plot
    kind: str = MODEL
    make: Callable[[Any], Path] | None = None  # FoldContext → model file (``model`` methods)
    weight_set: bool = True  # a ``model`` method whose F joins the weight-space plot

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if (self.kind == MODEL) != (self.make is not None):
            raise ValueError(f"method {self.name!r}: a model method needs make(ctx), and only it has one")


_METHODS: dict[str, MethodSpec] = {}

#: group → its methods, in registration order (kept up to date by :func:`register`)
GROUPS: dict[str, list[str]] = {}
ALL_METHODS: list[str] = []
DEFAULT_METHODS: list[str] = []  # every group except ``plugin``
ABLATIONS: list[str] = []  # M²-CoFS and its ablations (Table 2)


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is registered already")
    _METHODS[spec.name] = spec
    GROUPS.setdefault(spec.group, []).append(spec.name)
    ALL_METHODS[:] = [m for g in GROUPS.values() for m in g]
    DEFAULT_METHODS[:] = [m for g, ms in GROUPS.items() if g != "plugin" for m in ms]
    ABLATIONS[:] = ["m2cofs", *GROUPS.get("ablations", [])]
    return spec


def register_method(name: str, group: str, label: str, weight_set: bool = True):
    """Decorator: register ``make(ctx) -> Path`` (the model file of one fold) as method ``name``."""

    def deco(make):
        register(MethodSpec(name, group, label, MODEL, make, weight_set))
        return make

    return deco


def method(name: str) -> MethodSpec:
    try:
        return _METHODS[name]
    except KeyError:
        raise M2CofsError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}") from None


def label(name: str) -> str:
    """The method's label; a plug-in's Stage-I specialist row is "<head> alone"."""
    if name in _METHODS:
        return _METHODS[name].label
    base = name.removesuffix("_specialist")
    if base != name and base in _METHODS and _METHODS[base].group == "plugin":
        return base.replace("plugin_", "") + " alone"
    return name


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """``None``/"default", "all", group names and method names, comma-separated."""
    if text is None:
        return list(DEFAULT_METHODS)
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (i.strip() for i in items if i.strip()):
        if item == "default":
            names = DEFAULT_METHODS
        elif item == "all":
            names = ALL_METHODS
        elif item in GROUPS:
            names = GROUPS[item]
        elif item in ALL_METHODS:
            names = [item]
        else:
            raise M2CofsError(f"--methods: unknown method {item!r}; choose from {', '.join(GROUPS)} or {', '.join(ALL_METHODS)}")
        out += [n for n in names if n not in out]
    if "m2cofs" not in out:
        out.insert(0, "m2cofs")  # the reference of every paired test
    return out


# ------------------------------------------------------------------------------ built-in methods
def _run_file(file: str) -> Callable[[Any], Path]:
    """A model file of the fold's own M²-CoFS run."""
    return lambda ctx: ctx.run_dir / file


def _maker(fn: str, *args) -> Callable[[Any], Path]:
    """``makers.<fn>(ctx, *args)``, imported when called (it needs torch)."""

    def make(ctx) -> Path:
        from m2cofs.compare import makers

        return getattr(makers, fn)(ctx, *args)

    return make


def _builtin(group: str, labels: dict[str, str], kind: str = MODEL, maker: str | None = None) -> None:
    for name, text in labels.items():
        register(MethodSpec(name, group, text, kind, _maker(maker, name) if maker else None))


def _continual(labels: dict[str, str]) -> None:
    for i, (name, text) in enumerate(labels.items()):  # the i-th has the seed key CONTINUAL_KEY_BASE + i
        register(MethodSpec(name, "continual", text, make=_maker("continual", name, i)))


def _unified(ctx) -> Path:
    """θU: the model given with ``--model``, else the fold's own run's."""
    return Path(ctx.opts.model) if ctx.opts.model is not None else ctx.run_dir / "unified.ckpt"


register(MethodSpec("m2cofs", "m2cofs", "M²-CoFS (θU)", make=_unified, weight_set=False))
_builtin("classical", {"mean": "mean", "max": "maximum", "pca": "PCA-weighted", "laplacian": "Laplacian pyramid"},
         kind=CLASSICAL)
_builtin("copy", {"copy1": "copy source 1 (no fusion)", "copy2": "copy source 2 (no fusion)"}, kind=CLASSICAL)
register(MethodSpec("fusion_specialist", "specialists", "Stage I fusion (θF)", make=_run_file("fusion_specialist.ckpt"),
                    weight_set=False))
register(MethodSpec("seg_specialist", "specialists", "Stage I segmentation (θS)", make=_run_file("seg_specialist.ckpt"),
                    weight_set=False))
_builtin("joint", {"joint": "joint multi-task"}, maker="joint")
_builtin("merging", {"average": "average θF, θS", "task_arithmetic": "task arithmetic", "ties": "TIES-merging",
                     "fisher": "Fisher merging"}, maker="merged")
_continual({"finetune": "fine-tuning F→S", "ewc": "EWC F→S", "si": "SI F→S", "lwf": "LwF F→S"})
_builtin("ablations", {"no_stage2": "w/o Stage II"}, maker="no_stage2")
_builtin("ablations", {"no_stage3": "w/o Stage III"}, maker="merged")
_builtin("ablations", {"no_si": "w/o L_SI", "no_lm": "w/o L_M", "euclidean_lm": "Euclidean L_M"}, maker="retrained")
_builtin("peers", {"segresnet": "SegResNet (seg only)", "unet": "UNet (seg only)"}, kind=PEER)
_builtin("plugin", {f"plugin_{h}": f"{h} + M²-CoFS" for h in ("swinunetr", "unetr", "segresnet", "unet")},
         maker="plugin")
