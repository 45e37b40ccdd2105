"""Self-training on pseudo-labels: a classifier relabels a fresh unlabelled pool each
generation and is retrained on its own labels (the classic self-training loop; its bias
against minority classes is the "early collapse" of a classifier).

World: five Gaussian classes in 5-D (identity covariance) with priors .40/.30/.20/.09/.01;
the 9 % class sits between the two largest, the 1 % class overlaps the largest. Generation 0
is trained on ``n_train`` labelled human examples; generation ``t >= 1`` on a fresh pool of
``n_train`` real inputs whose labels the loop prescribes:

``replace`` (alias ``argmax``)
    argmax pseudo-labels of generation ``t-1``. Argmax under-predicts minority classes in
    overlap regions, and a classifier that re-estimates class priors from label counts
    carries the bias into the next round: at ``n_train=2000`` rare-class recall falls from
    about .27 to about .05 within 5 generations while accuracy moves about one point (.910 ->
    .899; mean of 10 chains; FACTS.md's reference figures are .29 -> .04 and .916 -> .898).
    At the default ``n_train=10000`` (less sampling noise in each refit) it falls more slowly:
    .26 -> .11 in 5 generations (mean of 10 chains).
``sampled``
    labels sampled from generation ``t-1``'s predicted probabilities (calibrated): for the
    well-specified model this is the MLE of the same model again; flat (control).
``stable`` (aliases ``true_labels``, ``real``)
    the true labels of the fresh pool: the supervised control.
``accumulate``
    the original labelled set plus every argmax-labelled pool so far (Gerstgrasser et al.
    2024). Not a control here: the human labels' share falls to ``1/(t+1)``, so the argmax
    bias still builds up, only more slowly than under ``replace`` (true rare-class recall .261
    -> .180 by generation 10 and .161 by 19, mean of 8 chains; ``stable`` stays at .26).
``fresh``
    a share ``fresh_share`` of the new pool carries true labels, the rest argmax labels. It
    drifts down too, more slowly (about -.03 in rare-class recall by generation 19).

Pseudo-labelled items count as synthetic in the provenance (their labels are model-made).

The classifier is linear discriminant analysis by default (``classifier="lda"``: shared
covariance, class priors from label counts; its posterior is a softmax-linear model, the
Bayes rule of this world). ``classifier="logistic"`` uses scikit-learn's
``LogisticRegression(C=C)``: its fit on argmax labels becomes nearly hard after one round,
so argmax collapse there comes mostly from the L2 penalty, and the same penalty makes the
``sampled`` control drift too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..types import Reference
from .base import GenerationResult, Scenario, TrainingSet, check_float, check_positive_int, digest

__all__ = ["DEFAULT_PRIORS", "SelfTrainScenario", "selftrain_means"]

DEFAULT_PRIORS: tuple[float, ...] = (0.40, 0.30, 0.20, 0.09, 0.01)


def selftrain_means(separation: float = 4.85) -> np.ndarray:
    """Class means of the default world (5 classes in 5-D, rows in prior order).

    Start from a regular simplex with pairwise distance ``separation``; the 9 % class is
    moved between class 0 and class 1 (0.41 of the way to class 1, 0.24 towards its own
    vertex), the 1 % class to 0.56 of the way from class 0 to its vertex (shifted 0.15 away
    from class 1), the 20 % class to 0.83 of the way. Tuned (mean of 10 chains) so the argmax
    loop reproduces the figures in the module docstring.
    """
    k = 5
    e = (np.eye(k) - 1.0 / k) * separation / np.sqrt(2.0)
    out = e.copy()
    out[2] = e[0] + 0.833 * (e[2] - e[0])
    out[3] = e[0] + 0.41 * (e[1] - e[0]) + 0.24 * (e[3] - e[0])
    out[4] = e[0] + 0.56 * (e[4] - e[0]) - 0.15 * (e[1] - e[0])
    return out


class SelfTrainScenario(Scenario):
    """Classifier retrained on its own pseudo-labels of fresh unlabelled pools.

    Options: ``n_train=10000`` (labelled set at generation 0, pool size after; with 2000 the 1 %
    class has ~20 training items and one retrain moves its recall by +-0.15 even on true labels),
    ``n_probe=2000`` (probe items at the true priors, but at least ``min_probe_per_class=100``
    per class: the rare class is oversampled; ``Reference.class_priors`` keeps the true
    priors), ``n_eval=20000`` (population figures in ``truth``), ``separation=4.85``,
    ``classifier="lda"`` or ``"logistic"`` with ``C=1.0``, ``fresh_share=0.5``.

    Observation: ``predictions`` on the fixed probe set. Aggregate: ``accuracy``
    (prior-weighted probe accuracy = accuracy at the deployment priors) and
    ``probe_accuracy`` (plain). Truth (on ``n_eval`` fresh items): ``accuracy``,
    ``rare_recall``, ``class_recall.<k>``, ``rare_prediction_share``.
    """

    name = "selftrain"
    loops: ClassVar[tuple[str, ...]] = ("replace", "sampled", "accumulate", "fresh", "stable")
    aliases: ClassVar[dict[str, str]] = {"argmax": "replace", "true_labels": "stable"}

    def __init__(
        self,
        loop: str = "replace",
        seed: int = 0,
        *,
        n_train: int = 10_000,
        n_probe: int = 2000,
        min_probe_per_class: int = 100,
        n_eval: int = 20000,
        separation: float = 4.85,
        priors: Sequence[float] = DEFAULT_PRIORS,
        classifier: str = "lda",
        C: float = 1.0,
        world_seed: int = 0,
        fresh_share: float = 0.5,
    ) -> None:
        super().__init__(loop, seed, world_seed=world_seed, fresh_share=fresh_share)
        self.n_train = check_positive_int("n_train", n_train, 10)
        self.n_probe = check_positive_int("n_probe", n_probe, 10)
        # at least one probe item per class: a class without any has no recall (NaN accuracy)
        self.min_probe_per_class = check_positive_int("min_probe_per_class", min_probe_per_class, 1)
        self.n_eval = check_positive_int("n_eval", n_eval, 100)
        self.separation = check_float("separation", separation, 0.0, 100.0, low_open=True)
        p = np.asarray(priors, dtype=float)
        if p.shape != (5,) or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ConfigError("priors", f"expected 5 positive priors (one per class), got {priors!r}")
        self.priors = p / p.sum()
        need = math.ceil(20 / float(self.priors.min()))
        if self.n_eval < need:
            # n_eval=100 held no item of the 1 % class on some worlds: its true recall was NaN
            raise ConfigError(
                "n_eval",
                f"expected at least {need} items: the rarest class (prior {float(self.priors.min()):.3g}) needs about "
                f"20 for its true recall, got {self.n_eval}",
            )
        if classifier not in ("lda", "logistic"):
            raise ConfigError("classifier", f"expected 'lda' or 'logistic', got {classifier!r}")
        self.classifier = classifier
        self.C = check_float("C", C, 0.0, 1e6, low_open=True)
        self.means = selftrain_means(self.separation)
        self._opts = {
            "n_train": self.n_train,
            "n_probe": self.n_probe,
            "min_probe_per_class": self.min_probe_per_class,
            "n_eval": self.n_eval,
            "separation": self.separation,
            "priors": tuple(float(x) for x in self.priors),
            "classifier": self.classifier,
            "C": self.C,
        }
        self._probe: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def rare_class(self) -> int:
        return int(np.argmin(self.priors))

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(len(self.priors), size=n, p=self.priors)
        return self.means[y] + rng.standard_normal((n, self.means.shape[1])), y

    def _probe_set(self) -> tuple[np.ndarray, np.ndarray]:
        if self._probe is None:
            rng = self._rng("probe")
            counts = np.maximum(np.round(self.priors * self.n_probe).astype(int), self.min_probe_per_class)
            y = np.repeat(np.arange(len(self.priors)), counts)
            x = self.means[y] + rng.standard_normal((len(y), self.means.shape[1]))
            self._probe = (x, y)
        return self._probe

    def _build_reference(self) -> Reference:
        _, y = self._probe_set()
        return Reference(
            labels=y, class_priors={k: float(p) for k, p in enumerate(self.priors)}, name="selftrain:probe"
        )

    def _fit(self, x: np.ndarray, y: np.ndarray) -> Any:
        if np.unique(y).size == 1:
            # every label one class (a small sampled chain drifts there): LDA's predict_proba and
            # logistic regression's fit fail on it; the model that learned it predicts it
            return _OneClass(y[0])
        if self.classifier == "lda":
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            return LinearDiscriminantAnalysis().fit(x, y)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=500).fit(x, y)

    def _sampled_labels(self, rng: np.random.Generator, clf: Any, x: np.ndarray) -> np.ndarray:
        proba = clf.predict_proba(x)
        u = rng.random(len(x))[:, None]
        idx = np.minimum((np.cumsum(proba, axis=1) < u).sum(1), proba.shape[1] - 1)
        return clf.classes_[idx]

    def _chain(self) -> Iterator[GenerationResult]:
        x_probe, y_probe = self._probe_set()
        k = len(self.priors)
        rare = self.rare_class
        eval_rng = np.random.default_rng(np.random.SeedSequence([self.world_seed, 0, 99]))
        x_eval, y_eval = self._draw(eval_rng, self.n_eval)
        rng = self._rng("chain")
        human0 = self._draw(self._rng("human0"), self.n_train)
        train = TrainingSet()
        clf: Any = None
        t = 0
        while True:
            new = TrainingSet()
            if t == 0:
                new.add(human0, self.n_train, False, self._human_source(0))
            else:
                x, y_true = self._draw(rng, self.n_train)
                if self.loop == "stable":
                    new.add((x, y_true), self.n_train, False, self._human_source(t))
                elif self.loop == "sampled":
                    new.add((x, self._sampled_labels(rng, clf, x)), self.n_train, True, self._source(t - 1))
                elif self.loop == "fresh":
                    h = round(self.fresh_share * self.n_train)
                    new.add((x[:h], y_true[:h]), h, False, self._human_source(t))
                    if h < self.n_train:  # fresh_share=1: no pseudo-labelled part to predict
                        new.add((x[h:], clf.predict(x[h:])), self.n_train - h, True, self._source(t - 1))
                else:  # replace / accumulate: argmax pseudo-labels
                    new.add((x, clf.predict(x)), self.n_train, True, self._source(t - 1))
            train = train if (self.loop == "accumulate" and t > 0) else TrainingSet()
            train.extend(new)
            x_tr = np.concatenate([p[0] for p in train.parts()])
            y_tr = np.concatenate([p[1] for p in train.parts()])
            clf = self._fit(x_tr, y_tr)
            pred = clf.predict(x_probe)
            pred_eval = clf.predict(x_eval)
            rec_probe = np.array([(pred[y_probe == c] == c).mean() for c in range(k)])
            rec_eval = np.array([(pred_eval[y_eval == c] == c).mean() for c in range(k)])
            truth = {f"class_recall.{c}": float(r) for c, r in enumerate(rec_eval)}
            truth |= {
                "accuracy": float((pred_eval == y_eval).mean()),
                "rare_recall": float(rec_eval[rare]),
                "rare_prediction_share": float((pred_eval == rare).mean()),
            }
            yield GenerationResult(
                generation=t,
                observation=self._observation(t, train, digest(x_tr, y_tr), predictions=pred),
                aggregate={
                    "accuracy": float((self.priors * rec_probe).sum()),
                    "probe_accuracy": float((pred == y_probe).mean()),
                },
                truth=truth,
                train_size=train.size,
            )
            t += 1


class _OneClass:
    """The classifier of a training set whose labels are all one class: it predicts that class."""

    def __init__(self, label: Any) -> None:
        self.classes_ = np.array([label])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.classes_[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))
