"""The shared names have one home that loads no model library, and they are the names the code uses: the
metrics the module logs, the paired tests the report runs, the strategies' and regularizers' names."""

from __future__ import annotations

import subprocess
import sys

from transferlab.core import names

from .conftest import REPO


def test_the_names_module_imports_no_torch():
    probe = "import sys, transferlab.core.names; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pytorch_lightning', 'timm')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_the_validation_metrics_are_what_the_module_logs(one_thread):
    from transferlab.backbones import create_backbone
    from transferlab.module import TransferModule
    from transferlab.strategies import Full

    module = TransferModule(create_backbone("simple_cnn", image_size=16), Full(), num_classes=10)
    assert sorted(module.validation_metric_names()) == sorted(names.VALIDATION_METRICS)
    assert {f"test/{m}" for m in (*names.CLASSIFICATION_METRICS, names.LOSS)} <= set(names.REPORT_METRICS)


def test_the_paired_tests_are_the_reports_and_the_schemas():
    import typing

    from transferlab.core import schema
    from transferlab.report import stats

    assert stats.TESTS == tuple(names.PAIRED_TESTS)
    assert typing.get_args(schema.Report.model_fields["test"].annotation) == tuple(names.PAIRED_TESTS)
    for test in names.PAIRED_TESTS:  # every name runs
        assert 0.0 <= stats.paired_test([0.5, 0.6, 0.7, 0.9], [0.4, 0.6, 0.5, 0.6], test).p_value <= 1.0


def test_a_strategys_name_is_its_configs_and_a_class_built_without_one_takes_its_packaged_name(make_cfg):
    from transferlab.strategies import LPFT, LoRA, TransferStrategy, build_strategy
    from transferlab.strategies.regularizers import L2SP

    assert LoRA(rank=2).name == "lora" and LPFT().name == "lp_ft" and L2SP().name == "l2_sp"
    assert build_strategy(make_cfg("strategy=lora").strategy).name == "lora"

    class HeadAndFirst(TransferStrategy):
        pass

    assert HeadAndFirst().name == "head_and_first"  # a user's class without a config
    assert HeadAndFirst(name="mine").name == "mine"
