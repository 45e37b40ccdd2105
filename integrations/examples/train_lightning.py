"""Lightning retrain loop watched with ``CollapseMonitorCallback``.

The same self-training chain as ``train_torch.py`` (generation 0 learns from human labels, each
later one from the previous model's argmax pseudo-labels; a student trained with weight decay
draws the border of the small rare class a little inside the teacher's, so the rare class
shrinks each generation while accuracy barely moves: early collapse), written the Lightning way:
one ``Trainer.fit`` per generation, and the callback checks the fitted module on the frozen probe
set (10 000 items, about 200 of the rare class) at the end of fit (global rank zero only; a
failing check never aborts fit). ``--synthetic-fraction 0`` is the control (human labels only).

    python train_lightning.py --generations 6 --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch

# the same world as train_torch.py (run from this folder, it is importable)
from train_torch import PRIORS, D, draw, make_world

import collapse_monitor as cm
from collapse_monitor.hooks.lightning import CollapseMonitorCallback


class Classifier(L.LightningModule):
    def __init__(self, lr: float = 1e-2, weight_decay: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.weight_decay = weight_decay
        self.net = torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(PRIORS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        # Adam with weight decay and a one-cycle learning rate that ends near 0 (two retrains on
        # the same kind of labels land close together)
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def predict(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).argmax(1).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-probe", type=int, default=10000, help="frozen probe set (2 %% of it the rare class)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--synthetic-fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's default)")
    p.add_argument("--home", default=".collapse_monitor")
    p.add_argument("--name", default="selftrain-lightning")
    p.add_argument("--report-json", default=None)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    centres = make_world(args.seed)
    x_probe, y_probe = draw(centres, args.n_probe, rng)
    mon = cm.CollapseMonitor(
        args.name,
        reference=cm.Reference(labels=y_probe, class_priors=dict(enumerate(PRIORS))),
        sinks=[cm.MLflowSink(args.tracking_uri)],
        home=args.home,
    )

    def evaluate(module: Classifier) -> cm.Observation:  # runs under eval() + no_grad()
        return cm.Observation(predictions=module(torch.from_numpy(x_probe)).argmax(1))

    reports = []
    teacher: Classifier | None = None
    for gen in range(args.generations):
        x, y = draw(centres, args.n_train, rng)
        if teacher is not None:
            synth = rng.random(len(y)) < args.synthetic_fraction
            y = np.where(synth, predict(teacher, x), y)
        callback = CollapseMonitorCallback(
            mon,
            evaluate,
            generation=gen,
            provenance=cm.Provenance(
                synthetic_fraction=0.0 if teacher is None else args.synthetic_fraction,
                sources=["human:gaussian-mixture"] + ([f"pseudo:gen{gen - 1}"] if gen else []),
            ),
        )
        L.seed_everything(args.seed + gen, verbose=False)
        trainer = L.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            devices=1,
            callbacks=[callback],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long())
        model = Classifier(weight_decay=args.weight_decay)
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=128, shuffle=True))
        teacher = model
        rep = callback.last_report
        if rep is None:
            print(f"generation {gen}: check failed: {callback.last_error!r}")
            continue
        reports.append(rep.to_dict())
        print(
            f"generation {rep.generation}: {rep.stage.value:<15} "
            f"rare_class_recall={rep.value('rare_class_recall', 0):.3f} accuracy={rep.value('accuracy', 0):.3f} "
            f"mlflow_run={rep.run_id}"
        )
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
