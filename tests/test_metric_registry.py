"""The one metric registry: every module reads names, aliases and directions from it."""

import pytest

from m2cofs.metrics import registry
from m2cofs.metrics.registry import find_metric, get_metric, higher_is_better, resolve_modes, resolve_selection


def test_paper_metrics_are_the_six_of_table_1_in_order():
    assert registry.PAPER_METRICS == ("Q_MI", "Q_TE", "Q_NCIE", "Q_G", "MI", "VIF")
    assert set(registry.PAPER_METRICS) < set(registry.FUSION_METRICS)
    assert registry.SEG_METRICS == ("Dice", "HD95")


@pytest.mark.parametrize("alias, name", [("qabf", "Q_G"), ("QAB/F", "Q_G"), ("ncie", "Q_NCIE"), ("q-mi", "Q_MI"),
                                         ("QMI", "Q_MI"), ("entropy", "EN"), ("dice", "Dice"), ("hd_95", "HD95")])
def test_aliases_resolve(alias, name):
    assert get_metric(alias).name == name


def test_unknown_metric():
    assert find_metric("psnr2") is None
    with pytest.raises(KeyError, match="known metrics"):
        get_metric("psnr2")


@pytest.mark.parametrize("column, better", [("volume/Q_MI", True), ("slice/Q_CV", False), ("Q_CV", False),
                                            ("Dice/ET", True), ("HD95/WT", False), ("volume/n_slices", None)])
def test_direction_of_columns(column, better):
    assert higher_is_better(column) is better


def test_the_modules_use_the_registry():
    from m2cofs.metrics import fusion, segmentation

    assert fusion.FUSION_METRICS is registry.FUSION_METRICS and fusion.PAPER_METRICS is registry.PAPER_METRICS
    assert fusion.HIGHER_IS_BETTER["Q_CV"] is False and all(v for k, v in fusion.HIGHER_IS_BETTER.items() if k != "Q_CV")
    assert segmentation.SEG_METRICS is registry.SEG_METRICS
    assert segmentation.HIGHER_IS_BETTER == {"Dice": True, "HD95": False}


def test_selection_and_modes():
    assert resolve_selection(None) == (list(registry.FUSION_METRICS), ["Dice", "HD95"])
    assert resolve_selection("hd95, paper") == (list(registry.PAPER_METRICS), ["HD95"])
    assert resolve_selection("VIF,q_mi") == (["Q_MI", "VIF"], [])  # report order, not the order asked
    assert resolve_selection(" , ") is None
    with pytest.raises(KeyError):
        resolve_selection("Q_MI,nope")
    assert resolve_modes("both") == ["volume", "slice"] and resolve_modes("slice") == ["slice"]
    with pytest.raises(KeyError):
        resolve_modes("axial")
