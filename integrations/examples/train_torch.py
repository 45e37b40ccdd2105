"""Plain PyTorch retrain loop watched with ``@mon.watch``.

A self-training chain: generation 0 learns from human labels; every later generation learns
from the previous model's argmax pseudo-labels on fresh unlabelled data (``--synthetic-fraction``
of the training labels; the rest stay human). The rare class (2 %) overlaps class 0 (40 %), so
the teacher gives it only the part of the overlap where it wins, and a student trained with
weight decay (a smooth model) cannot follow that sharp border around a small region: it draws
the border a little further inside the rare class, and its own argmax labels hand that shrunken
region to the next student. The rare class's recall falls generation after generation (to 0
within about five) while overall accuracy barely moves: the classic early collapse. The monitor
checks each generation on a frozen, human-labelled probe set (10 000 items, about 200 of the
rare class, so its paired test has the power to see it) and logs it to MLflow.
``--synthetic-fraction 0`` is the control: the same retrains on human labels keep the rare class.

    python train_torch.py --generations 6                       # MLflow's default tracking URI
    python train_torch.py --config collapse.yaml --tracking-uri sqlite:///mlflow.db
    mlflow ui --backend-store-uri sqlite:///mlflow.db           # experiment collapse-monitor/<name>

Each retrain is usually its own process in production; the monitor's history (``--home``)
carries the generation count and the baseline from one to the next.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

import collapse_monitor as cm

PRIORS = np.array([0.40, 0.30, 0.20, 0.08, 0.02])
D = 8
RARE_GAP = 4.0  # distance between the centres of class 0 and the rare class 4 (unit-variance clouds)


def make_world(seed: int) -> np.ndarray:
    """Class centres: the head classes far apart; the rare class ``RARE_GAP`` from class 0, at
    right angles to the other head classes, so every seed gets the same overlap (the Bayes
    classifier gives the rare class about 90 % of its cloud, where it outweighs class 0's 20x
    larger prior)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.5, size=(len(PRIORS), D))
    u = rng.normal(size=D)
    basis, _ = np.linalg.qr((centres[1:4] - centres[0]).T)
    u -= basis @ (basis.T @ u)
    centres[4] = centres[0] + RARE_GAP * u / np.linalg.norm(u)
    return centres


def draw(centres: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice(len(PRIORS), size=n, p=PRIORS)
    x = centres[y] + rng.normal(size=(n, D))
    return x.astype(np.float32), y


def fit(x: np.ndarray, y: np.ndarray, *, epochs: int, weight_decay: float, seed: int) -> torch.nn.Module:
    """The same recipe every generation: Adam with weight decay and a one-cycle learning rate
    (which ends near 0, so two retrains on the same kind of labels land close together)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(PRIORS)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * math.ceil(len(x) / 128))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    return net


def predict(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)).argmax(1).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-probe", type=int, default=10000, help="frozen probe set (2 %% of it the rare class)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--synthetic-fraction", type=float, default=1.0, help="share of pseudo-labels from generation 1 on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="collapse.yaml (name, sinks, alerts, rules)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's default)")
    p.add_argument("--home", default=".collapse_monitor", help="monitor history (ignored with --config)")
    p.add_argument("--name", default="selftrain-torch")
    p.add_argument("--report-json", default=None, help="write the reports as JSON here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    centres = make_world(args.seed)
    x_probe, y_probe = draw(centres, args.n_probe, rng)  # frozen, human-labelled
    reference = cm.Reference(labels=y_probe, class_priors=dict(enumerate(PRIORS)))
    if args.config:
        if args.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri  # read by the config's mlflow sink
        mon = cm.CollapseMonitor.from_config(args.config, reference=reference)
    else:
        mon = cm.CollapseMonitor(
            args.name, reference=reference, sinks=[cm.MLflowSink(args.tracking_uri)], home=args.home
        )

    @mon.watch(
        evaluate=lambda net: cm.Observation(predictions=predict(net, x_probe)),
        generation=lambda gen, teacher: gen,
        provenance=lambda gen, teacher: cm.Provenance(
            synthetic_fraction=0.0 if teacher is None else args.synthetic_fraction,
            sources=["human:gaussian-mixture"]
            if teacher is None
            else ["human:gaussian-mixture", f"pseudo:gen{gen - 1}"],
        ),
    )
    def retrain(gen: int, teacher: torch.nn.Module | None) -> torch.nn.Module:
        x, y = draw(centres, args.n_train, rng)
        if teacher is not None:  # replace a share of the human labels with the teacher's argmax
            synth = rng.random(len(y)) < args.synthetic_fraction
            y = np.where(synth, predict(teacher, x), y)
        return fit(x, y, epochs=args.epochs, weight_decay=args.weight_decay, seed=args.seed + gen)

    reports = []
    model = None
    for gen in range(args.generations):
        model = retrain(gen, model)  # returned unchanged; the check ran after training
        rep = mon.last_report
        if rep is None:
            print(f"generation {gen}: check failed: {mon.last_error!r}")
            continue
        reports.append(rep.to_dict())
        print(
            f"generation {rep.generation}: {rep.stage.value:<15} rare_class_recall={rep.value('rare_class_recall', 0):.3f} "
            f"accuracy={rep.value('accuracy', 0):.3f} mlflow_run={rep.run_id}"
        )
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
