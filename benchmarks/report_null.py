"""Do the report's statistics hold? Simulated sweeps through the report's own code.

Each simulated sweep has `--arms` arms x `--seeds` seeds; a run's score is
    base + seed effect (shared by every arm with that seed: pairing matters) + noise.
Under the null all arms share one distribution; under the alternative one arm is better by `--effect`.
Every sweep goes through `transferlab.report.stats.compare_arms` + `finish` (paired t-test, Holm over
all pairs) exactly as `python -m transferlab.report` does.

Prints JSON:
- `family_wise_error`: share of null sweeps with any Holm-significant pair (must be <= alpha, up to
  Monte-Carlo error `fwe_monte_carlo_se`);
- `power`: share of alternative sweeps in which the better arm is significantly better than the
  baseline arm; `winner_rate`: share in which it is named the single winner;
- the same under an unpaired analysis is not reported: pairing is what the seed effect demands.

    python -m benchmarks.report_null [--sweeps 1000] [--arms 8] [--seeds 5] [--effect 0.03]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from benchmarks.common import emit
from transferlab.report import stats


def simulate(
    rng: np.random.Generator, arms: int, seeds: int, effect: float, noise: float, seed_sd: float
) -> pd.DataFrame:
    seed_effect = rng.normal(0.0, seed_sd, size=seeds)
    rows = []
    for a in range(arms):
        shift = effect if a == 0 else 0.0
        for s in range(seeds):
            rows.append(
                {"arm": f"arm{a}", "seed": s, "value": 0.8 + shift + seed_effect[s] + rng.normal(0.0, noise)}
            )
    return pd.DataFrame(rows)


def analyse(frame: pd.DataFrame, baseline: str, alpha: float) -> stats.Comparison:
    comparison = stats.compare_arms(frame, baseline=baseline)
    stats.finish([comparison], alpha=alpha)
    return comparison


def run(
    sweeps: int, arms: int, seeds: int, effect: float, noise: float, seed_sd: float, alpha: float, seed: int
) -> dict:
    rng = np.random.default_rng(seed)
    baseline = f"arm{arms - 1}"
    started = time.perf_counter()
    false_positive = 0
    for _ in range(sweeps):
        result = analyse(simulate(rng, arms, seeds, 0.0, noise, seed_sd), baseline, alpha)
        false_positive += bool((result.pairs["p_holm"] < alpha).any())
    detected = winners = 0
    for _ in range(sweeps):
        result = analyse(simulate(rng, arms, seeds, effect, noise, seed_sd), baseline, alpha)
        row = result.table.set_index("arm").loc["arm0"]
        detected += bool(row["p_holm"] < alpha and row["diff_mean"] > 0)
        winners += result.winner == "arm0"
    fwe = false_positive / sweeps
    return {
        "sweeps": sweeps,
        "arms": arms,
        "seeds": seeds,
        "alpha": alpha,
        "noise_sd": noise,
        "seed_effect_sd": seed_sd,
        "effect": effect,
        "family_wise_error": fwe,
        "fwe_monte_carlo_se": math.sqrt(alpha * (1 - alpha) / sweeps),
        "fwe_bound_holds": fwe <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sweeps),
        "power": detected / sweeps,
        "winner_rate": winners / sweeps,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=1000)
    parser.add_argument("--arms", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--effect", type=float, default=0.03, help="advantage of the better arm (accuracy)")
    parser.add_argument("--noise", type=float, default=0.005, help="run-to-run sd within a seed")
    parser.add_argument("--seed-sd", type=float, default=0.03, help="sd of the effect shared by one seed")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    emit(
        run(args.sweeps, args.arms, args.seeds, args.effect, args.noise, args.seed_sd, args.alpha, args.seed)
    )


if __name__ == "__main__":
    main()
