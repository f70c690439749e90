"""Beyond the one test set: shifted test sets, temperature scaling and WiSE-FT, on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torchvision import transforms as T

from transferlab.core.config import compose_train
from transferlab.core.errors import TransferlabError
from transferlab.evaluation.calibration import fit_temperature
from transferlab.evaluation.scoring import loader_of, predict
from transferlab.evaluation.sets import build_eval_sets
from transferlab.evaluation.shifts import SHIFTS
from transferlab.evaluation.wise import curve, interpolate, load_anchor, logits_by_alpha
from transferlab.run import build
from transferlab.run.job import train
from transferlab.strategies import build_strategy
from transferlab.strategies.context import RunContext

from .conftest import FAST, write_image_folder

SMALL = ["dataset.samples_per_class=20", "trainer.max_epochs=2", "seed=5"]
SETS = ["rotation", "gaussian_noise", "invert", "blur", "elastic"]


def digits(*overrides: str):
    cfg = compose_train(["eval_sets=digits_shifts", *overrides], output_dir="/tmp/unused")
    datamodule = build.build_datamodule(cfg, build.build_backbone(cfg, False))
    return cfg, datamodule


def test_each_shift_is_deterministic_for_its_seed_and_changes_pixels_not_labels():
    cfg, datamodule = digits()
    sets = {s.name: s.dataset for s in build_eval_sets(cfg, datamodule)}
    assert list(sets) == SETS and set(SHIFTS) == set(SETS)
    again = {s.name: s.dataset for s in build_eval_sets(cfg, datamodule)}
    reseeded = {s.name: s.dataset for s in build_eval_sets(*digits(*(f"eval_sets.{n}.seed=1" for n in SETS)))}
    test = datamodule.splits["test"]
    plain = T.Compose([T.Resize((32, 32), antialias=True), T.ToTensor()])
    for name, dataset in sets.items():
        assert [y for _, y in dataset.samples] == [y for _, y in test]  # labels untouched, same order
        for i in (0, 7, len(dataset) - 1):
            shifted = dataset.pixels(i)
            assert torch.equal(shifted, again[name].pixels(i)), name  # same seed: same pixels
            unshifted = plain(datamodule.read(test[i][0]))
            assert torch.equal(dataset.resize(datamodule.read(test[i][0])), unshifted)  # as the test sees it
            assert (shifted - unshifted).abs().max() > 0.1, name  # the pixels do change
            assert dataset[i][1] == test[i][1]
        random_shift = name not in ("invert", "blur")
        moved = any(not torch.equal(dataset.pixels(i), reseeded[name].pixels(i)) for i in range(5))
        assert moved == random_shift, name  # another seed draws another shift (deterministic ones stay)
    batch = next(iter(loader_of(sets["rotation"], 16)))[0]
    assert torch.equal(batch[3], sets["rotation"][3][0])  # batching does not change an image


def test_a_set_with_classes_the_run_does_not_know_is_refused_before_training(tmp_path):
    folder = write_image_folder(tmp_path / "other", classes=("3", "11"), per_class=0, test_per_class=2)
    out = tmp_path / "run"
    record = train(compose_train([*FAST, f"+eval_sets.other.folder={folder / 'test'}"], output_dir=out))
    assert record["status"] == "failed"
    assert "\n" not in record["error"] and "eval_sets.other" in record["error"] and "'11'" in record["error"]
    assert not (out / "checkpoints").exists()  # refused before training
    cfg, datamodule = digits("eval_sets.rotation.degrees=[40,10]")
    with pytest.raises(TransferlabError, match=r"eval_sets.rotation.degrees=\[40, 10\]"):
        build_eval_sets(cfg, datamodule)


def test_temperature_scaling_recovers_a_known_temperature():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (4000,))
    true_logits = torch.randn(4000, 5) * 2
    true_logits[torch.arange(4000), labels] += 2.0
    # labels drawn from softmax(true_logits): the calibrated temperature of 3 * true_logits is 3
    drawn = torch.distributions.Categorical(logits=true_logits).sample()
    assert fit_temperature(3 * true_logits, drawn) == pytest.approx(3.0, rel=0.1)


class CountingSet(torch.utils.data.Dataset):
    """Fixed random inputs that count how often each is read (what decoding and shifting would cost)."""

    def __init__(self, n: int):
        self.x, self.reads = torch.randn(n, 4, generator=torch.Generator().manual_seed(0)), [0] * n

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads[i] += 1
        return self.x[i], i % 3


class TinyNet(torch.nn.Module):
    """A backbone (with BatchNorm buffers) and a head, named as a TransferModule's."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_the_wise_curve_reads_each_sample_once_and_scores_each_alpha_as_its_own_model():
    torch.manual_seed(0)
    net = TinyNet()
    net(torch.randn(16, 4))  # moves the BatchNorm buffers: they are interpolated too
    tuned = {k: v.clone() for k, v in net.state_dict().items()}
    anchor = {k: v + torch.rand_like(v) if v.is_floating_point() else v for k, v in tuned.items()}
    sets = {"val": CountingSet(10), "test": CountingSet(7)}
    loaders = {name: loader_of(data, batch_size=4) for name, data in sets.items()}
    alphas = [0.0, 0.3, 1.0]
    outputs = logits_by_alpha(net, anchor, alphas, loaders)
    assert [data.reads for data in sets.values()] == [[1] * 10, [1] * 7]  # one pass for three alphas
    assert all(torch.equal(net.state_dict()[k], v) for k, v in tuned.items())  # fine-tuned weights back
    assert net.training  # as it was
    for alpha in alphas:  # the same logits as loading that alpha's weights and predicting every set alone
        alone = TinyNet()
        alone.load_state_dict(interpolate(anchor, tuned, alpha))
        for name, loader in loaders.items():
            logits, labels = predict(alone, loader)
            assert torch.equal(outputs[alpha][name][0], logits), (alpha, name)
            assert torch.equal(outputs[alpha][name][1], labels)
    assert not torch.equal(outputs[0.0]["test"][0], outputs[1.0]["test"][0])


def test_a_repeated_alpha_scores_each_sample_once_and_keeps_its_point_on_the_curve():
    torch.manual_seed(0)
    net = TinyNet()
    tuned = {k: v.clone() for k, v in net.state_dict().items()}
    anchor = {k: v + 1 if v.is_floating_point() else v for k, v in tuned.items()}
    sets = {"val": CountingSet(10), "test": CountingSet(7)}
    loaders = {name: loader_of(data, batch_size=4) for name, data in sets.items()}
    outputs = logits_by_alpha(net, anchor, [0.5, 0.5, 1.0], loaders)
    # each sample once per alpha (twice, the confusion matrix of wise.apply counted every test image twice)
    assert [len(outputs[0.5][n][1]) for n in sets] == [10, 7] == [len(outputs[1.0][n][0]) for n in sets]
    result, _ = curve(net, anchor, [0.5, 0.5, 1.0], loaders, lambda by_set: {"val/acc": 0.0})
    assert [p["alpha"] for p in result["curve"]] == result["alphas"] == [0.5, 0.5, 1.0]  # one point each


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    plain = train(compose_train([*FAST, *SMALL, "calibration.enabled=false"], output_dir=root / "plain"))
    shifted = train(
        compose_train(
            [*FAST, *SMALL, "eval_sets=digits_shifts", "wise.enabled=true", "logger=many"],
            output_dir=root / "shifted",
        )
    )
    assert plain["status"] == "ok", plain["error"]
    assert shifted["status"] == "ok", shifted["error"]
    return root, plain, shifted


@pytest.mark.slow
def test_scoring_more_sets_leaves_the_test_numbers_unchanged_and_logs_every_set(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from .wandb_offline import read_offline_run

    root, plain, shifted = runs
    id_metrics = [k for k in plain["metrics"] if k.startswith("test/")]
    assert {"test/acc", "test/f1_macro", "test/ece", "test/loss"} <= set(id_metrics)
    assert {k: shifted["metrics"][k] for k in id_metrics} == {k: plain["metrics"][k] for k in id_metrics}
    metrics = shifted["metrics"]
    for name in SETS:
        for kind in ("acc", "f1_macro", "ece", "loss", "ece_calibrated"):
            assert 0.0 <= metrics[f"test/{name}/{kind}"] < 20, (name, kind)
    assert metrics["test/ood_mean/acc"] == pytest.approx(sum(metrics[f"test/{n}/acc"] for n in SETS) / 5)
    assert metrics["test/invert/acc"] < metrics["test/acc"]  # an inverted digit is another distribution
    assert set(shifted["eval_sets"]) == set(SETS) and shifted["eval_sets"]["rotation"]["samples"] == 450
    # calibration: fitted on validation, ECE before and after on every set
    calibration = shifted["calibration"]
    assert calibration["fitted_on"] == "val" and calibration["temperature"] > 0
    assert calibration["val"]["nll_after"] <= calibration["val"]["nll_before"] + 1e-9
    assert set(calibration["ece"]) == {"test", *SETS}
    assert calibration["ece"]["test"] == {
        "before": metrics["test/ece"],
        "after": metrics["test/ece_calibrated"],
    }
    # every logger got them
    run = root / "shifted"
    log = pd.read_csv(run / "csv" / "metrics.csv")
    assert log["test/rotation/acc"].dropna().tolist() == [pytest.approx(metrics["test/rotation/acc"])]
    scalars = set(EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"])
    assert {f"test/{n}/acc" for n in SETS} | {"test/ood_mean/acc", "wise/alpha"} <= scalars
    history = read_offline_run(next(run.glob("**/wandb/offline-run-*"))).history
    assert any(row.get("test/elastic/ece") == pytest.approx(metrics["test/elastic/ece"]) for row in history)


@pytest.mark.slow
def test_wise_endpoints_are_the_starting_and_the_fine_tuned_models(runs):
    root, _, shifted = runs
    run = root / "shifted"
    wise = shifted["wise"]
    assert wise["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0] and wise["selected_on"] == "val/acc"
    assert wise["anchor"]["kind"] == "start"
    by_alpha = {p["alpha"]: p for p in wise["curve"]}
    best_val = max(p["val/acc"] for p in wise["curve"])
    assert by_alpha[wise["chosen_alpha"]]["val/acc"] == best_val  # chosen on validation only
    for key in ("test/acc", "test/loss", "test/rotation/acc"):  # alpha 1 is the tested model, exactly
        assert by_alpha[1.0][key] == shifted["metrics"][key]
    assert set(by_alpha[0.5]) >= {f"test/{n}/acc" for n in SETS} | {"test/ood_mean/acc", "val/loss"}

    # alpha 0 is the model the run started from: rebuild it (same seed, same config) before any training
    cfg = compose_train([*FAST, *SMALL, "eval_sets=digits_shifts", "wise.enabled=true"], output_dir=run)
    strategy = build_strategy(cfg.strategy)
    pl.seed_everything(cfg.seed, workers=True)
    backbone = build.build_backbone(cfg, build.resolve_pretrained(cfg, strategy, {}, run=None))
    datamodule = build.build_datamodule(cfg, backbone)
    start = build.build_module(cfg, strategy, RunContext(cfg, datamodule, {}), backbone)
    loader = loader_of(datamodule.dataset("test", augment=False), 256)
    start_logits, _ = predict(start, loader)
    anchor = load_anchor(run / "checkpoints")["state"]
    tuned = torch.load(shifted["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    for alpha, expected in ((0.0, start_logits), (1.0, None)):
        model = build.build_module(
            cfg, strategy, RunContext(cfg, datamodule, {}), build.build_backbone(cfg, False)
        )
        model.load_state_dict(tuned, strict=False)
        if expected is None:
            expected, _ = predict(model, loader)  # the fine-tuned model's own predictions
        model.load_state_dict(
            interpolate(anchor, {k: v for k, v in tuned.items() if k in anchor}, alpha), strict=False
        )
        assert torch.equal(predict(model, loader)[0], expected), alpha
    record = json.loads((run / "results.json").read_text())
    assert record["metrics"]["wise/alpha"] == wise["chosen_alpha"]
    # wise.head=finetuned: the anchor without its head, so alpha 0 is the start's backbone + the tuned head
    backbone_only = interpolate({k: v for k, v in anchor.items() if not k.startswith("head.")}, tuned, 0.0)
    assert all(torch.equal(backbone_only[k], anchor[k]) for k in anchor if k.startswith("backbone."))
    assert all(torch.equal(backbone_only[k], tuned[k]) for k in tuned if k.startswith("head."))


def test_eval_sets_are_checked_by_the_schema():
    from transferlab.core.schema import ConfigError, check

    cfg = compose_train(
        ["eval_sets=digits_shifts", "wise.alphas=[0,1.5]", "ema.decay=2"], output_dir=Path("/tmp/x")
    )
    with pytest.raises(ConfigError) as exc:
        check(cfg)
    assert "wise.alphas.1=1.5" in str(exc.value) and "ema.decay=2" in str(exc.value)


def test_the_report_has_a_column_per_eval_set_and_holm_covers_every_set(tmp_path):
    import numpy as np

    from transferlab.report import build_report
    from transferlab.report.stats import holm
    from transferlab.report.wise_plot import wise_points

    from .test_report_stats import write_sweep

    noise = np.array([0.0, 0.03, -0.02, 0.01, -0.01])
    id_acc = {"full": 0.95 + noise, "lp_ft": 0.93 + noise, "linear_probe": 0.85 + noise}
    sweep = write_sweep(tmp_path / "sweep", {arm: list(v) for arm, v in id_acc.items()})
    shift = {"full": -0.40, "lp_ft": -0.20, "linear_probe": -0.05}  # full loses most under shift
    for path in sweep.glob("*/results.json"):
        record = json.loads(path.read_text())
        acc, arm = record["metrics"]["test/acc"], record["strategy"]
        ood = {"rotation": acc + shift[arm], "invert": acc + 2 * shift[arm] + 0.01 * record["seed"]}
        record["metrics"] |= {f"test/{n}/acc": v for n, v in ood.items()}
        record["metrics"]["test/ood_mean/acc"] = sum(ood.values()) / 2
        record["eval_sets"] = {n: {"kind": "shift", "sha256": f"{n}-hash"} for n in ood}
        if arm == "full":  # its WiSE-FT curve: alpha 0 and 1
            curve = [
                {"alpha": a, "test/acc": acc - 0.1 * (1 - a), "test/ood_mean/acc": a} for a in (0.0, 1.0)
            ]
            record["wise"] = {"curve": curve}
        path.write_text(json.dumps(record))
    report = build_report(sweep)
    text = (sweep / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| strategy") and "ood_mean" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "strategy", "in distribution", "invert", "rotation", "ood_mean"
    ]  # fmt: skip
    assert "- invert: **winner linear_probe**" in text and "- rotation: **winner linear_probe**" in text
    assert report.analysis.family_size == 3 * 4  # 3 pairs of arms on the test set and 3 eval-set metrics
    table = pd.read_csv(sweep / "comparison.csv")
    assert sorted(table["metric"].unique()) == sorted(
        ["test/acc", "test/invert/acc", "test/rotation/acc", "test/ood_mean/acc"]
    )
    block = report.analysis.blocks[0]
    raw = np.concatenate([c.pairs["p_value"].to_numpy() for c in (block.comparison, *block.sets.values())])
    adjusted = np.concatenate(
        [c.pairs["p_holm"].to_numpy() for c in (block.comparison, *block.sets.values())]
    )
    assert np.allclose(adjusted, holm(raw))  # one family: every comparison the report states
    assert (sweep / "wise_curve.png").is_file() and "wise_curve.png" in text
    points = wise_points(report.analysis).set_index("alpha")
    assert list(points["arm"]) == ["full", "full"]
    assert points.at[0.0, "test/acc"] == pytest.approx(id_acc["full"].mean() - 0.1)

    # a run whose eval set is other data cannot be paired on that set
    path = next(sweep.glob("*/results.json"))
    record = json.loads(path.read_text())
    record["eval_sets"]["invert"]["sha256"] = "other"
    path.write_text(json.dumps(record))
    sets = build_report(sweep).analysis.blocks[0].sets
    assert sets["test/invert/acc"].refused and "test_invert_data_sha256" in sets["test/invert/acc"].refused
    assert sets["test/rotation/acc"].refused is None


@pytest.mark.slow
def test_lp_ft_interpolates_from_its_probed_model_and_wise_apply_makes_it_the_runs_model(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    overrides = [*FAST, *SMALL, "strategy=lp_ft", "strategy.probe_epochs=1", "wise.enabled=true"]
    overrides += ["wise.alphas=[0.5]", "wise.apply=true"]
    record = train(compose_train(overrides, output_dir=out))
    assert record["status"] == "ok", record["error"]
    wise = record["wise"]
    assert wise["anchor"] == {"kind": "linear_probe", "epoch": 1, "head": "interpolate"}
    anchor = load_anchor(out / "checkpoints")["state"]
    cfg = compose_train(overrides, output_dir=out)
    strategy = build_strategy(cfg.strategy)
    pl.seed_everything(cfg.seed, workers=True)
    backbone = build.build_backbone(cfg, build.resolve_pretrained(cfg, strategy, {}, run=None))
    context = RunContext(cfg, build.build_datamodule(cfg, backbone), {})
    start = build.build_module(cfg, strategy, context, backbone).state_dict()
    backbone_keys = [k for k in anchor if k.startswith("backbone.")]
    assert all(torch.equal(anchor[k], start[k]) for k in backbone_keys)  # frozen while probing
    assert not torch.equal(anchor["head.1.weight"], start["head.1.weight"])  # the probed head

    # wise.apply: the interpolation is tested, calibrated and exported as the run's model
    assert wise["applied"] and wise["chosen_alpha"] == 0.5
    point = wise["curve"][0]
    for key in ("test/acc", "test/f1_macro", "test/ece", "test/loss", "test/acc_top5"):
        assert record["metrics"][key] == point[key], key
    assert sum(map(sum, record["confusion_matrix"])) == record["test_samples"]
    tuned = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    expected = interpolate(anchor, {k: tuned[k] for k in anchor}, 0.5)
    for name, value in load_file(out / "head.safetensors").items():
        assert torch.equal(value, expected[f"head.1.{name}"]), name


@pytest.mark.slow
def test_greedy_soup_is_an_arm_never_below_its_best_ingredient_on_validation(tmp_path):
    from .conftest import REPO, fork_cli

    sweep = tmp_path / "sweep"
    out = fork_cli(  # the whole -m sweep and its report, without a fresh interpreter
        "-m",
        "hparams_search=optuna",
        "tuning.arms=[full,linear_probe]",
        "tuning.n_trials=3",
        "tuning.final_seeds=[]",
        "tuning.soup=greedy",
        "dataset.samples_per_class=20",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "callbacks=minimal",
        f"hydra.sweep.dir={sweep}",
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    trials = [r for r in records if r["tuning"]["phase"] == "trial" and r["strategy"] == "full"]
    (soup,) = [r for r in records if r["tuning"]["arm"].endswith("_soup")]  # none for the closed-form probe
    assert soup["status"] == "ok" and soup["seed"] == trials[0]["seed"]  # the trials' validation split
    best = max(r["objective"]["value"] for r in trials)
    assert soup["soup"]["value"] >= best - 1e-6  # never below its best ingredient on validation
    assert soup["objective"]["value"] == pytest.approx(soup["soup"]["value"], abs=1e-6)
    assert soup["soup"]["candidates"] == 3 and soup["soup"]["steps"][0]["trial_value"] == pytest.approx(best)
    assert soup["soup"]["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in trials), abs=0.01)
    assert "test/acc" in soup["metrics"]
    report = (sweep / "report.md").read_text()
    assert "full_soup" in report and "linear_probe_soup" not in report


def test_a_folder_or_a_dataset_config_set_is_labelled_by_the_runs_class_names():
    _, datamodule = digits("eval_sets=none")
    test = datamodule.splits["test"]
    cfg, datamodule = digits(
        "eval_sets=none",
        f"+eval_sets.folder_copy.folder={datamodule.root / 'test'}",
        "+eval_sets.config_copy={dataset:digits,overrides:['dataset.classes=[9,8,7,6,5,4,3,2,1,0]']}",
    )
    sets = {s.name: s for s in build_eval_sets(cfg, datamodule)}
    for name in ("folder_copy", "config_copy"):  # the run's test split, whatever order the set's classes
        assert sorted(map(tuple, sets[name].dataset.samples)) == sorted(test), name
        assert sets[name].description["samples"] == len(test)
    assert sets["config_copy"].description["sha256"] != datamodule.split_hash("test")  # its own labels
