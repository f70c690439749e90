"""The realistic low-label protocol: samples_per_class / labels_total is every label a run sees
(validation drawn from inside it), dataset.val_source=pool keeps the old protocol, data.labels_used says which."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from transferlab.core.errors import TransferlabError
from transferlab.data import ImageFolderDataModule
from transferlab.data.budget import quotas

from .conftest import compose_cfg, write_image_folder


def _dm(root, **kwargs) -> ImageFolderDataModule:
    module = ImageFolderDataModule(root=str(root), image_size=32, num_workers=0, **kwargs)
    module.setup()
    return module


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(
        tmp_path_factory.mktemp("budget") / "imgs", per_class=20, test_per_class=2, size=16
    )


def test_validation_comes_out_of_the_budget(folder):
    module = _dm(folder, samples_per_class=5, val_fraction=0.2, seed=3)
    sizes = {k: len(v) for k, v in module.splits.items()}
    assert sizes == {"train": 12, "val": 3, "test": 6}
    info = module.describe()
    assert info["labels_used"] == 5 * 3 == sizes["train"] + sizes["val"]  # samples_per_class x classes
    assert info["val_source"] == "budget"
    train, val = {p for p, _ in module.splits["train"]}, {p for p, _ in module.splits["val"]}
    assert not train & val
    assert Counter(y for _, y in module.splits["val"]) == {0: 1, 1: 1, 2: 1}  # stratified inside the budget
    # the budget is the same images as the old protocol's training set would draw, whatever the split
    again = _dm(folder, samples_per_class=5, val_fraction=0.4, seed=3)
    assert {p for p, _ in again.splits["train"] + again.splits["val"]} == train | val


def test_pool_keeps_the_old_protocol_and_says_so(folder):
    module = _dm(folder, samples_per_class=5, val_fraction=0.2, val_source="pool")
    sizes = {k: len(v) for k, v in module.splits.items()}
    assert sizes == {"train": 15, "val": 12, "test": 6}  # validation: 20% of all 60 training images
    assert module.describe()["labels_used"] == 27 and module.describe()["val_source"] == "pool"


def test_labels_total_is_shared_by_class_size(tmp_path):
    assert quotas(np.array([50, 30, 20]), None, 10).tolist() == [5, 3, 2]
    assert quotas(np.array([90, 5, 5]), None, 7).tolist() == [5, 1, 1]  # at least one each
    assert quotas(np.array([3, 3]), None, 100).tolist() == [3, 3]  # capped by what there is
    assert quotas(np.array([4, 4]), None, None) is None
    module = _dm(write_image_folder(tmp_path / "i", per_class=10, test_per_class=1, size=16), labels_total=13)
    assert module.describe()["labels_used"] == 13
    assert sum(Counter(y for _, y in module.splits["train"] + module.splits["val"]).values()) == 13


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_source": "outside"}, "dataset.val_source=outside is not one of budget, pool"),
        ({"samples_per_class": 3, "labels_total": 9}, "are both set; give one budget"),
        ({"labels_total": 2}, "dataset.labels_total=2 is less than the 3 classes"),
        ({"samples_per_class": 1}, "budget leaves 1 image.*or dataset.val_source=pool"),
    ],
)
def test_bad_budgets_are_one_line_errors(folder, kwargs, message):
    with pytest.raises(TransferlabError, match=message) as info:
        _dm(folder, **kwargs)
    assert "\n" not in str(info.value)


def test_the_digits_target_counts_every_label(tmp_path):
    from transferlab.core.errors import instantiate

    cfg = compose_cfg(tmp_path / "run", ["dataset=digits_target"])
    assert cfg.dataset.val_source == "budget" and cfg.dataset.labels_total is None
    module = instantiate(cfg.dataset, data_config=None, _convert_="all")
    module.setup()
    assert module.describe()["labels_used"] == 10 * 5  # samples_per_class x classes
    assert {k: len(v) for k, v in module.splits.items()}["val"] == 2 * 5
    old = instantiate(cfg.dataset, data_config=None, val_source="pool", _convert_="all")
    old.setup()
    assert {k: len(v) for k, v in old.splits.items()} == {"train": 50, "val": 134, "test": 224}
    assert old.describe()["labels_used"] == 184 and old.describe()["val_source"] == "pool"


def test_without_a_budget_both_protocols_split_alike(folder):
    budget, pool = _dm(folder, val_source="budget"), _dm(folder, val_source="pool")
    assert budget.splits == pool.splits and budget.describe()["labels_used"] == 60


def test_cv_folds_never_share_an_image_between_train_and_validation(folder):
    budget = None
    seen_val: list[str] = []
    for fold in range(4):
        module = _dm(folder, samples_per_class=6, cv_folds=4, cv_fold=fold, seed=2)
        train = {p for p, _ in module.splits["train"]}
        val = {p for p, _ in module.splits["val"]}
        assert val and not train & val
        budget = budget or train | val
        assert train | val == budget and len(budget) == 18  # every fold splits the same 6 x 3 labels
        assert module.describe()["labels_used"] == 18 and module.describe()["cv"] == {
            "folds": 4,
            "fold": fold,
        }
        seen_val += sorted(val)
    assert sorted(seen_val) == sorted(budget)  # each labelled image validates in exactly one fold
    with pytest.raises(TransferlabError, match="cv_fold=4: need cv_folds >= 2 and 0 <= cv_fold < cv_folds"):
        _dm(folder, samples_per_class=6, cv_folds=4, cv_fold=4)
    final = _dm(folder, samples_per_class=6, cv_folds=4, cv_fold=-1, seed=2)  # the final run: all trains
    assert {p for p, _ in final.splits["train"]} == budget and final.splits["val"] == []
    assert final.describe()["labels_used"] == 18
    with pytest.raises(TransferlabError, match="validation comes from dataset.val_source=pool"):
        _dm(folder, samples_per_class=6, cv_folds=4, val_source="pool")


@pytest.mark.slow
def test_cv_folds_tuning_scores_each_trial_by_the_mean_over_its_folds(tmp_path):
    import json

    import optuna

    from transferlab.tuning.storage import open_storage

    from .conftest import REPO, fork_cli

    sweep = tmp_path / "sweep"
    out = fork_cli(  # the sweep's own process is a fork of the test process
        "-m",
        "hparams_search=optuna",
        "dataset=digits_target",
        "strategy=linear_probe",
        "tuning.n_trials=2",
        "tuning.cv_folds=2",
        "tuning.final_seeds=[100]",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        f"hydra.sweep.dir={sweep}",
        cwd=REPO,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    (final,) = [r for r in records if r["tuning"]["phase"] == "final"]
    records = [r for r in records if r["tuning"]["phase"] == "trial"]
    assert len(records) == 4  # 2 trials x 2 folds
    # the final run trains on every label of the budget: no validation split, the last epoch tested
    assert (
        final["status"] == "ok"
        and final["data"]["sizes"]["train"] == 50
        and final["data"]["sizes"]["val"] == 0
    )
    assert final["data"]["labels_used"] == 50 and final["data"]["cv"] == {"folds": 2, "fold": -1}
    assert final["objective"]["selected_at"] == "last epoch" and final["metrics"]["test/acc"] > 0.2
    assert (
        final["probe"]["solver"] == "lbfgs, L2 by 5-fold CV on train"
        and final["probe"]["l2"] in final["probe"]["grid"]
    )
    assert "calibration" not in final or not final["calibration"]
    assert all(r["data"]["sizes"]["val"] == 25 for r in records)  # each fold validates on half the budget
    by_trial: dict[str, list[dict]] = {}
    for r in records:
        assert r["status"] == "ok" and r["data"]["labels_used"] == 50 and r["data"]["val_source"] == "budget"
        by_trial.setdefault(str(r["tuning"]["trial"]), []).append(r)
    (name,) = {r["tuning"]["study"] for r in records}
    study = optuna.load_study(study_name=name, storage=open_storage(str(next(sweep.glob("*.journal")))))
    for trial in study.trials:
        folds = by_trial[str(trial.number)]
        assert sorted(r["data"]["cv"]["fold"] for r in folds) == [0, 1]
        assert folds[0]["data"]["split_sha256"]["val"] != folds[1]["data"]["split_sha256"]["val"]
        assert trial.value == pytest.approx(np.mean([r["objective"]["value"] for r in folds]))
    from transferlab.report.collect import load_rows

    rows = load_rows(sweep)
    assert rows["labels_used"].tolist() == [50] * 5 and set(rows["val_source"]) == {"budget"}
