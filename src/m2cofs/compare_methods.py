"""The method groups of ``m2cofs compare`` (torch-free: ``m2cofs compare --help`` lists them
without importing :mod:`m2cofs.compare`, which imports torch)."""

GROUPS: dict[str, list[str]] = {
    "m2cofs": ["m2cofs"],
    "classical": ["mean", "max", "pca", "laplacian"],
    "specialists": ["fusion_specialist", "seg_specialist"],
    "joint": ["joint"],
    "merging": ["average", "task_arithmetic", "ties", "fisher"],
    "continual": ["finetune", "ewc", "si", "lwf"],
    "ablations": ["no_stage2", "no_stage3", "no_si", "no_lm", "euclidean_lm"],
    "peers": ["segresnet", "unet"],
    "plugin": ["plugin_swinunetr", "plugin_unetr", "plugin_segresnet", "plugin_unet"],
}
