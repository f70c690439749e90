"""The Optuna sweeper (current Optuna, ask/tell API) behind `hparams_search=optuna`.

One study per arm (and per level of any other swept factor), all in one on-disk storage in the sweep
directory. Trials are launched through whatever `hydra/launcher` is selected, `n_jobs` per study at a
time; a trial never looks at the test set (`test=false`). With `final_seeds`, each study's best
configuration is then re-run once per fresh seed and tested: those final runs are what the report
compares. Re-running the command with the same `hydra.sweep.dir` resumes every study from its storage:
finished trials are kept, a trial cut off by the crash is run again, finished final runs are skipped.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from transferlab.core.errors import TransferlabError
from transferlab.core.names import MULTIRUN_FILE, OPTIMIZATION_RESULTS_FILE
from transferlab.tuning.cv import cv_folds, fold_jobs, fold_outcome
from transferlab.tuning.pruning import PRUNER_ATTR, pruner_record
from transferlab.tuning.space import declared_space, format_value, parse_space
from transferlab.tuning.storage import default_storage, open_storage
from transferlab.tuning.trials import (
    STALE,
    best_trial,
    finished_finals,
    finished_trials,
    next_job_index,
    optimization_results,
    outcome,
    overrides,
)

log = logging.getLogger(__name__)
ARM_GROUP = "strategy"  # a discrete sweep over this group on the command line defines the arms


@dataclass
class ArmStudy:
    """One study: an arm (e.g. a strategy) within one level of the other swept factors."""

    arm: str
    block: list[str]  # overrides of the other swept factors (e.g. backbone=resnet18)
    base: list[str]  # every override a trial of this study gets before its sampled parameters
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]
    study: optuna.Study
    tuning_seed: int | None = None
    finished: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def params_list(self) -> str:
        return "[" + ",".join(self.distributions) + "]"

    @property
    def block_label(self) -> str:
        return ",".join(self.block)


class OptunaSweeperImpl(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | dict | None,
        arms: Any,
        final_seeds: Sequence[int] | None,
        prune: bool,
    ) -> None:
        self.sampler_factory = sampler
        self.pruner = pruner
        self.direction = {"max": "maximize", "min": "minimize"}.get(str(direction), str(direction))
        self.storage_spec = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.params = dict(params or {})
        self.arms_spec = arms
        self.final_seeds = [int(s) for s in (final_seeds or [])]
        self.prune = bool(prune) and pruner is not None
        if self.direction not in ("maximize", "minimize"):
            raise TransferlabError(
                f"hydra.sweeper.direction={self.direction} must be maximize or minimize (follows optimized_mode)."
            )
        if self.n_trials < 1:
            raise TransferlabError(f"hydra.sweeper.n_trials={self.n_trials} must be at least 1.")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        pruner = config.hydra.sweeper.get("pruner")
        self.pruner_config = pruner_record(OmegaConf.to_container(pruner, resolve=True) if pruner else None)

    # ------------------------------------------------------------------------------ the sweep
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / MULTIRUN_FILE)
        storage_spec = self.storage_spec or default_storage(self.sweep_dir)
        self.storage = open_storage(storage_spec)
        self.storage_arg = storage_spec if "://" in storage_spec else str(Path(storage_spec).resolve())
        studies = self._create_studies(arguments)
        log.info(
            "Optuna %s: %d stud%s x %d trials (%d at a time), storage %s",
            optuna.__version__,
            len(studies),
            "y" if len(studies) == 1 else "ies",
            self.n_trials,
            self.n_jobs,
            storage_spec,
        )
        returns = self._tune(studies)
        self._write_optimization_results(studies)
        finals = self._final_runs(studies)
        if finals:
            returns.append(self._launch(finals))
        soups = self._soup_runs(studies)
        if soups:
            returns.append(self._launch(soups))
        return returns

    def _create_studies(self, arguments: list[str]) -> list[ArmStudy]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        fixed: list[str] = []
        space: list[str] = []
        factors: list[list[str]] = []
        arms = self._configured_arms()
        for override in parser.parse_overrides(given):
            key = override.get_key_element()
            if not override.is_sweep_override():
                fixed.append(f"{key}={override.get_value_element_as_str()}")
            elif override.is_discrete_sweep() and arms is not None and key == ARM_GROUP:
                arms = {v: [f"{key}={v}"] for v in override.sweep_string_iterator()}
            elif override.is_discrete_sweep() and arms is not None:
                factors.append([f"{key}={v}" for v in override.sweep_string_iterator()])
            else:
                space.append(override.input_line)
        arms = arms or {None: []}
        base_name = self.study_name or str(self.config.get("experiment_name") or "study")
        studies = []
        for block in itertools.product(*factors):
            for arm, arm_overrides in arms.items():
                base = [*fixed, *block, *arm_overrides]
                composed = self.hydra_context.config_loader.load_sweep_config(self.config, base)
                distributions, fixed_values = parse_space([*declared_space(composed), *space])
                name = "/".join(part for part in (base_name, *block, arm) if part)
                studies.append(
                    ArmStudy(
                        arm=arm or str(composed.strategy.name),
                        block=list(block),
                        base=base,
                        distributions=distributions,
                        fixed=fixed_values,
                        study=self._study(name),
                        tuning_seed=composed.get("seed"),
                    )
                )
        self._check_final_seeds(studies)
        return studies

    def _configured_arms(self) -> dict[str | None, list[str]] | None:
        spec = self.arms_spec
        if spec is None or (isinstance(spec, Sequence | DictConfig) and len(spec) == 0):
            return None
        if OmegaConf.is_config(spec):
            spec = OmegaConf.to_container(spec, resolve=True)
        if isinstance(spec, dict):
            return {str(name): [str(o) for o in (ovs or [])] for name, ovs in spec.items()}
        return {str(name): [f"{ARM_GROUP}={name}"] for name in spec}

    def _study(self, name: str) -> optuna.Study:
        summaries = optuna.get_all_study_summaries(self.storage, include_best_trial=False)
        earlier = next((x.n_trials for x in summaries if x.study_name == name), 0)
        study = optuna.create_study(
            study_name=name,
            storage=self.storage,
            sampler=self._sampler(earlier),
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        if self.pruner_config:
            study.set_user_attr(PRUNER_ATTR, self.pruner_config)
        self._recover_stale_trials(study)
        return study

    def _sampler(self, earlier_trials: int) -> Any:
        """A fresh sampler per study; a resumed study's seed moves past its earlier draws."""
        factory = self.sampler_factory
        if not callable(factory):
            return factory
        seed = (getattr(factory, "keywords", None) or {}).get("seed")
        return factory(seed=seed + earlier_trials) if seed is not None and earlier_trials else factory()

    def _check_final_seeds(self, studies: list[ArmStudy]) -> None:
        used = {s.tuning_seed for s in studies}
        overlap = sorted(used & set(self.final_seeds))
        if overlap:
            raise TransferlabError(
                f"tuning.final_seeds {self.final_seeds} include the seed used while tuning ({overlap}); final runs "
                "must use fresh seeds: choose others, e.g. tuning.final_seeds=[100,101,102,103,104]."
            )

    @staticmethod
    def _recover_stale_trials(study: optuna.Study) -> None:
        """Trials left RUNNING by a killed sweep: mark them failed and queue their parameters again."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(trial._trial_id, STALE, True)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            log.warning("Study %s: trial %d was cut off; running it again.", study.study_name, trial.number)

    # ------------------------------------------------------------------------------ tuning
    def _tune(self, studies: list[ArmStudy]) -> list[Sequence[JobReturn]]:
        returns = []
        for s in studies:
            s.finished = finished_trials(s.study)
        round_ = 0
        while True:
            batch = []
            for s in studies:
                for _ in range(min(self.n_jobs, self.n_trials - s.finished)):
                    trial = s.study.ask(s.distributions)
                    batch.append((s, trial, self._trial_overrides(s, trial)))
            if not batch:
                return returns
            k = cv_folds(self.config)
            jobs = [j for _, _, o in batch for j in fold_jobs(o, k)] if k else [o for _, _, o in batch]
            results = self._launch(jobs)
            returns.append(results)
            outcomes = [outcome(ret) for ret in results]
            if k:  # a trial's objective: the mean over its folds
                outcomes = [fold_outcome(outcomes[i * k : (i + 1) * k]) for i in range(len(batch))]
            failed = 0
            for (s, trial, _), (state, value, error) in zip(batch, outcomes, strict=True):
                s.study.tell(trial, state=state, values=None if state != TrialState.COMPLETE else value)
                s.finished += 1
                if state == TrialState.FAIL:
                    failed += 1
                    s.failures.append(error)
            round_ += 1
            self._check_failures(batch, failed, round_)

    def _trial_overrides(self, s: ArmStudy, trial: optuna.Trial) -> list[str]:
        sampled = [f"{k}={format_value(v)}" for k, v in trial.params.items()]
        markers = {
            "test": "false",
            "tuning.phase": "trial",
            "tuning.arm": s.arm,
            "tuning.block": s.block_label,
            "tuning.study": s.name,
            "tuning.trial": str(trial.number),
            "tuning.params": s.params_list,
            "tuning.storage": self.storage_arg,
            "tuning.prune": str(self.prune).lower(),
        }
        fixed = [f"{k}={v}" for k, v in s.fixed.items()]
        return [*s.base, *fixed, *sampled, *overrides(markers)]

    def _check_failures(self, batch: list, failed: int, round_: int) -> None:
        if round_ == 1 and failed == len(batch):
            first = next(s.failures[-1] for s, _, _ in batch if s.failures)
            raise TransferlabError(
                f"Every trial of the first round failed, so the setup itself is wrong; the first error: {first}"
            )
        if failed / len(batch) > self.max_failure_rate:
            raise TransferlabError(
                f"{failed} of {len(batch)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate:g}; see the failed jobs' results.json."
            )

    # ------------------------------------------------------------------------------ final runs
    def _final_runs(self, studies: list[ArmStudy]) -> list[list[str]]:
        from transferlab.tuning.cv import final_overrides

        done = finished_finals(self.sweep_dir)
        jobs = []
        for s in studies:
            best = best_trial(s.study)
            if best is None:
                log.error("Study %s has no completed trial: no final runs for arm %s.", s.name, s.arm)
                continue
            for seed in self.final_seeds:
                if (s.name, seed) in done:
                    log.info("Final run %s seed %d already finished: skipped.", s.name, seed)
                    continue
                jobs.append(_best_job(s, best, {"seed": str(seed)}))
        return [[*job, *final_overrides(self.config)] for job in jobs]  # cv: the whole budget trains

    def _soup_runs(self, studies: list[ArmStudy]) -> list[list[str]]:
        """tuning.soup=greedy: per arm, one job averaging its trials (`evaluation/soup.py`) with the best
        trial's configuration and the trials' seed, tested once; its arm is `<arm>_soup`."""
        if (self.config.get("tuning") or {}).get("soup") != "greedy":
            return []
        from transferlab.evaluation.soup import ingredients  # torch: only when soups are asked for

        done, seed, jobs = finished_finals(self.sweep_dir), int(self.config.seed), []
        for s in studies:
            best = best_trial(s.study)
            if best is None or (s.name, seed) in done:
                continue
            if not ingredients(self.sweep_dir, s.name):  # e.g. closed-form probes: no checkpoints to average
                log.info("No soup for arm %s: its trials left no checkpoints.", s.arm)
                continue
            soup = {
                "tuning.arm": f"{s.arm}_soup",
                "soup.study": s.name,
                "soup.sweep_dir": str(self.sweep_dir),
            }
            jobs.append(_best_job(s, best, soup))
        return jobs

    def _launch(self, batch: list[list[str]]) -> Sequence[JobReturn]:
        self.validate_batch_is_legal(batch)
        return self.launcher.launch(batch, initial_job_idx=next_job_index(self.sweep_dir))

    def _write_optimization_results(self, studies: list[ArmStudy]) -> None:
        """Hydra's Optuna-sweeper format (`name`, `best_params`, `best_value`); with several arms, one
        such entry per arm under `arms`, with the trials used and the tuning time."""
        name = self.study_name or str(self.config.get("experiment_name"))
        data = optimization_results(studies, name)
        OmegaConf.save(OmegaConf.create(data), self.sweep_dir / OPTIMIZATION_RESULTS_FILE)


def _best_job(s: ArmStudy, best: optuna.trial.FrozenTrial, extra: dict[str, str]) -> list[str]:
    """A tested job with study `s`'s best trial's configuration (a final run or a soup)."""
    markers = {
        "test": "true",
        "tuning.phase": "final",
        "tuning.arm": s.arm,
        "tuning.block": s.block_label,
        "tuning.study": s.name,
        "tuning.trial": str(best.number),
        "tuning.params": s.params_list,
        "tuning.prune": "false",
    }
    params = [f"{k}={format_value(v)}" for k, v in best.params.items()]
    fixed = [f"{k}={v}" for k, v in s.fixed.items()]
    return [*s.base, *fixed, *params, *overrides({**markers, **extra})]
