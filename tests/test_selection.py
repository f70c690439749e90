"""transferlab.selection: the transferability scores against the authors' reference code, and their behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from transferlab import selection


def _inputs():
    rng = np.random.default_rng(23)
    tall = rng.normal(size=(60, 8))  # N > D: the reference's truncated-SVD branch
    y_tall = np.arange(60) % 4
    wide = rng.normal(size=(20, 30))  # N < D: the reference's direct-SVD branch
    y_wide = np.arange(20) % 5
    probs = softmax(rng.normal(size=(50, 7)) * 2, axis=1)
    y_probs = rng.integers(0, 3, 50)
    z = rng.integers(0, 6, 80)
    y_z = (z + rng.integers(0, 2, 80)) % 4
    return tall, y_tall, wide, y_wide, probs, y_probs, z, y_z


# Reference values: these exact inputs (same generator calls) run once through the authors' code,
# github.com/thuml/LogME at commit 56551ca94a3295bcc37e6a01b1291911af985f07, files LogME.py
# (`LogME().fit(f, y)`, default `_fit = _fit_fixed_point`, with numba 0.68.1), LEEP.py (`LEEP(probs, y)`)
# and NCE.py (`NCE(z, y)`), numpy 2.4.6. The reference code is not part of this repository.
REFERENCE = {
    "logme_tall": -0.7154128340045909,
    "logme_wide": 1.2230209960617575,
    "leep": -0.8856138200660001,
    "nce": -0.6576498950274665,
}


def test_scores_equal_the_reference_implementations():
    tall, y_tall, wide, y_wide, probs, y_probs, z, y_z = _inputs()
    got = {
        "logme_tall": selection.logme(tall, y_tall),
        "logme_wide": selection.logme(wide, y_wide),
        "leep": selection.leep(probs, y_probs),
        "nce": selection.nce(z, y_z),
    }
    for name, value in REFERENCE.items():
        assert isinstance(got[name], float)
        assert got[name] == pytest.approx(value, rel=1e-6), name


def test_hscore_is_the_between_class_share_of_the_variance():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    f = (y + rng.normal(scale=0.5, size=len(y))).reshape(-1, 1)
    means = np.array([f[y == c].mean() for c in range(3)])[y]
    expected = np.var(means, ddof=1) / np.var(f[:, 0], ddof=1)
    assert selection.hscore(f, y) == pytest.approx(expected, rel=1e-9)
    # invariant to an invertible linear map of the features
    f2 = np.hstack([f, rng.normal(size=(len(y), 2))])
    mixed = f2 @ rng.normal(size=(3, 3))
    assert selection.hscore(mixed, y) == pytest.approx(selection.hscore(f2, y), rel=1e-6)


def _separable(seed: int = 0, n_per_class: int = 30, classes: int = 4, dim: int = 16):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    return centers[y] + rng.normal(size=(len(y), dim)), y


@pytest.mark.parametrize(
    "score", ["logme", "hscore", "regularized_hscore", "knn_score", "linear_probe_score"]
)
def test_features_that_separate_the_classes_score_above_shuffled_labels(score):
    f, y = _separable()
    shuffled = np.random.default_rng(1).permutation(y)
    fn = getattr(selection, score)
    assert fn(f, y) > fn(f, shuffled) + 0.1


def test_knn_and_linear_probe_are_accuracies():
    f, y = _separable()
    assert selection.knn_score(f, y) == 1.0
    assert selection.linear_probe_score(f, y) == 1.0
    noise = np.random.default_rng(2).normal(size=f.shape)
    assert 0.0 <= selection.knn_score(noise, y) < 0.6
    assert 0.0 <= selection.linear_probe_score(noise, y) < 0.6


def test_leep_and_nce_say_when_the_candidate_has_no_head():
    y = np.arange(10) % 2
    with pytest.raises(
        selection.NoHeadError, match="source_probs is None: the candidate has no source classifier"
    ):
        selection.leep(None, y)
    with pytest.raises(selection.NoHeadError, match="source_labels is None") as info:
        selection.nce(None, y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: selection.logme(np.zeros(10), np.zeros(10, int)), "features must be 2-D"),
        (lambda: selection.logme(np.ones((10, 3)), np.arange(9) % 2), "labels has 9 entries but .* 10 rows"),
        (lambda: selection.hscore(np.ones((10, 3)), np.zeros((10, 1), int)), "labels must be 1-D"),
        (lambda: selection.logme(np.ones((4, 2)), np.array([0.5, 1, 0, 1])), "labels must hold integer"),
        (lambda: selection.logme(np.ones((4, 2)), np.array([0, 0, 0, 0])), "labels holds a single class"),
        (lambda: selection.leep(np.ones((4, 3)), np.arange(4) % 2), "source_probs must hold probabilities"),
        (lambda: selection.nce(np.arange(5), np.arange(4) % 2), "labels has 4 entries but .* 5 rows"),
        (lambda: selection.knn_score(np.full((4, 2), np.nan), np.arange(4) % 2), "features holds NaN"),
        (lambda: selection.knn_score(np.ones((4, 2)), np.arange(4) % 2, k=4), "k=4 must be between 1"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_the_scores_import_numpy_and_scipy_only():
    import subprocess
    import sys

    code = (
        "import sys, transferlab.selection; print(sorted({'torch', 'sklearn', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_regularized_hscore_uses_the_ledoit_wolf_covariance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(5)
    y = np.arange(40) % 4
    f = rng.normal(size=(40, 64)) + 2.0 * np.eye(4, 64)[y]  # more dimensions than samples
    centered = f - f.mean(axis=0)
    lw = LedoitWolf(assume_centered=False).fit(centered)
    means = np.stack([centered[y == c].mean(axis=0) for c in range(4)])[y]
    expected = np.trace(
        np.linalg.pinv(lw.covariance_, rcond=1e-15) @ ((1 - lw.shrinkage_) * np.cov(means, rowvar=False))
    )
    assert selection.regularized_hscore(f, y) == pytest.approx(expected, rel=1e-9)
    # the plain H-score saturates at C - 1 here; the regularized one still tells real labels from shuffled
    assert selection.hscore(f, y) == pytest.approx(3.0, rel=1e-6)
    shuffled = np.random.default_rng(1).permutation(y)
    assert selection.regularized_hscore(f, y) > selection.regularized_hscore(f, shuffled) + 0.1
