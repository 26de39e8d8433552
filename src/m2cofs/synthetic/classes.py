"""Tissue classes, phantom components and the label map of each convention."""

from __future__ import annotations

import numpy as np

# Tissue classes (Phantom.tissue).
BG, CSF, GM, WM, NCR, ENH, EDEMA, NET = range(8)
TISSUE_NAMES = {BG: "background", CSF: "CSF", GM: "GM", WM: "WM", NCR: "necrosis",
                ENH: "enhancing", EDEMA: "oedema", NET: "non-enhancing core"}

# Components: finer than tissue classes (fraction maps are computed per component).
_C_BG, _C_CSF_EXT, _C_VENT, _C_CORTEX, _C_DEEP, _C_WM, _C_NCR, _C_ENH, _C_ED, _C_NET = range(10)
_N_COMP = 10
_COMP_TISSUE = np.array([BG, CSF, CSF, GM, GM, WM, NCR, ENH, EDEMA, NET], np.uint8)
# MRBrainS13 9-class code per component (cerebellum / brainstem are set from the region map).
_COMP_STRUCT = np.array([0, 5, 6, 1, 2, 3, 4, 4, 4, 4], np.uint8)

# Tissue class -> label, per convention (tumour conventions; tissue conventions use the structure map).
_TUMOUR_LUT = {
    "brats2013": {NCR: 1, EDEMA: 2, NET: 3, ENH: 4},
    "brats2017": {NCR: 1, EDEMA: 2, NET: 1, ENH: 4},
    "brats2023": {NCR: 1, EDEMA: 2, NET: 1, ENH: 3},
    "msd":       {NCR: 2, EDEMA: 1, NET: 2, ENH: 3},
}


def _class_maps(fracs: np.ndarray, d_cer, d_cbl, d_bs, in_cbl, vox: float):
    """Hard maps from the component fractions: ``(tissue, brainmask, structure)``."""
    comp = np.argmax(fracs, axis=0).astype(np.uint8)
    tissue = _COMP_TISSUE[comp]
    brainmask = tissue > 0
    structure = _COMP_STRUCT[comp]
    # cerebellum (its GM/WM) and brainstem (outside the cerebrum) from the region maps
    region_bs = (d_bs < 0) & (d_cer > 0)
    region_cbl = in_cbl & ~region_bs & (d_cbl < 0.5 * vox)
    structure[region_cbl & np.isin(comp, (_C_CORTEX, _C_WM, _C_DEEP))] = 7
    structure[region_bs & np.isin(comp, (_C_CORTEX, _C_WM, _C_DEEP))] = 8
    return tissue, brainmask, structure


def _make_label(tissue: np.ndarray, structure: np.ndarray, convention: str) -> np.ndarray | None:
    if convention == "none":
        return None
    if convention == "mrbrains9":
        return structure.copy()
    if convention == "mrbrains":
        s2t = np.array([0, 2, 2, 3, 3, 1, 1, 0, 0], np.uint8)  # structure code -> CSF/GM/WM (7, 8 -> 0)
        return s2t[structure]
    lut = np.zeros(8, np.uint8)
    for cls, value in _TUMOUR_LUT[convention].items():
        lut[cls] = value
    return lut[tissue]
