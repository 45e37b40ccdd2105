"""Edge inputs to the functional metric API give an InputError / ConfigError naming the
argument, not a RecursionError, LinAlgError, numpy ValueError or a silently wrong number."""

from __future__ import annotations

import numpy as np
import pytest

from collapse_monitor.errors import ConfigError, InputError
from collapse_monitor.metrics import classes as K
from collapse_monitor.metrics import coverage as C
from collapse_monitor.metrics import diversity as D
from collapse_monitor.metrics import stats as S
from collapse_monitor.metrics import text as T

X = np.random.default_rng(0).normal(size=(30, 4))


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda: T.distinct_n([["a", "b"]], 1000), ConfigError, "n"),
        (lambda: T.ngram_entropy([["a", "b"]], 1000), ConfigError, "n"),
        (lambda: T.distinct_n([[["a"]]], 1), InputError, "token_lists"),
        (lambda: D.effective_rank(X * 1e200), InputError, "X"),
        (lambda: D.vendi_score(X * 1e200), InputError, "X"),
        (lambda: D.frechet_distance(X * 1e200, X), InputError, "reference"),
        (lambda: C.prdc(X * 1e30, X * 1e30), InputError, "reference"),
        (lambda: K.macro_recall([1, 2], [1, 2], classes=None), InputError, "classes"),
        (lambda: K.macro_recall(["a", "b"], ["a", "a"], classes="ab"), InputError, "classes"),
        (lambda: C.cluster_mass([-1, 0], 2), InputError, "labels"),
        (lambda: C.cluster_mass([0, 5], 2), InputError, "labels"),
        (lambda: S.normal_quantile(0.0), InputError, "q"),
        (lambda: S.normal_quantile(1.0), InputError, "q"),
        (lambda: S.mcnemar_exact(0, 0, "bogus"), InputError, "alternative"),
        (lambda: D.hill_number([0.5, 0.5], q="x"), ConfigError, "q"),
        (lambda: D.hill_number([0.5, 0.5], q=-1), ConfigError, "q"),
    ],
)
def test_edge_inputs_name_the_argument(call, error, field) -> None:
    with pytest.raises(error) as err:
        call()
    assert (getattr(err.value, "field", None) or err.value.key) == field


def test_values_up_to_the_cap_still_work() -> None:
    assert D.vendi_score(X * 1e12) == pytest.approx(D.vendi_score(X), rel=1e-9)
    assert C.prdc(X * 1e12, X * 1e12)["coverage"] == 1.0
