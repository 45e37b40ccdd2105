"""Hugging Face ``Trainer`` loop watched with ``CollapseMonitorCallback``: a language model
trained, generation after generation, on its predecessor's samples.

The model is a tiny GPT-2 built from a config (2 layers, hidden size 32; nothing is downloaded,
no tokenizer: integer token ids, rendered as ``w<id>`` words for the text metrics). Generation 0
learns a Zipf-distributed "human" corpus; every later generation learns only from text its
predecessor produced with top-k decoding, which drops the vocabulary's tail from the training
data (Dohmatob et al. 2024). At the end of ``train()`` the callback samples each model without
truncation (what the model still knows) and checks those texts against the frozen human
reference: ``rare_ngram_recall`` and ``vocab_ratio`` fall from generation 1 on, while the
frequent words stay.

    python train_hf.py --generations 5 --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

import collapse_monitor as cm
from collapse_monitor.hooks.transformers import CollapseMonitorCallback

BOS = 0


def human_corpus(n: int, length: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Sequences of Zipf(1.1)-distributed word ids 1..vocab-1 after a BOS token."""
    ranks = np.arange(1, vocab)
    p = ranks**-1.1
    ids = rng.choice(ranks, size=(n, length - 1), p=p / p.sum())
    return np.concatenate([np.full((n, 1), BOS), ids], axis=1)


def to_texts(ids: np.ndarray) -> list[str]:
    return [" ".join(f"w{t}" for t in row[1:]) for row in ids]


def tiny_gpt2(vocab: int, length: int, seed: int) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=length,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=BOS,
        eos_token_id=BOS,
        pad_token_id=BOS,
    )
    return transformers.GPT2LMHeadModel(cfg)


def sample(model: transformers.GPT2LMHeadModel, n: int, length: int, top_k: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    start = torch.full((n, 1), BOS, dtype=torch.long)
    out = model.generate(
        start,
        attention_mask=torch.ones_like(start),
        do_sample=True,
        top_k=top_k,
        max_new_tokens=length - 1,
        min_new_tokens=length - 1,
        bad_words_ids=[[BOS]],
        pad_token_id=BOS,
    )
    return out.numpy()


class Corpus(torch.utils.data.Dataset):
    def __init__(self, ids: np.ndarray) -> None:
        self.ids = torch.from_numpy(np.ascontiguousarray(ids)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-samples", type=int, default=300, help="texts sampled per generation for the check")
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--vocab", type=int, default=200)
    p.add_argument("--top-k", type=int, default=20, help="decoding of the synthetic training data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's default)")
    p.add_argument("--home", default=".collapse_monitor")
    p.add_argument("--name", default="gpt2-recursive")
    p.add_argument("--report-json", default=None)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    reference = human_corpus(args.n_samples, args.length, args.vocab, rng)  # frozen, held out
    mon = cm.CollapseMonitor(
        args.name,
        reference=cm.Reference(texts=to_texts(reference)),
        sinks=[cm.MLflowSink(args.tracking_uri)],
        home=args.home,
    )
    train_ids = human_corpus(args.n_train, args.length, args.vocab, rng)

    reports = []
    with tempfile.TemporaryDirectory() as out_dir:
        for gen in range(args.generations):

            def evaluate(model, gen=gen):  # runs under eval() + no_grad()
                ids = sample(model, args.n_samples, args.length, top_k=0, seed=10_000 + gen)  # no truncation
                return cm.Observation(texts=to_texts(ids))

            callback = CollapseMonitorCallback(
                mon,
                evaluate,
                generation=gen,
                provenance=cm.Provenance(
                    synthetic_fraction=0.0 if gen == 0 else 1.0,
                    sources=["human:zipf"] if gen == 0 else [f"samples:gen{gen - 1}"],
                ),
            )
            targs = transformers.TrainingArguments(
                output_dir=out_dir,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=32,
                learning_rate=5e-3,
                report_to="none",
                save_strategy="no",
                logging_strategy="no",
                use_cpu=True,
                disable_tqdm=True,
                seed=args.seed + gen,
            )
            model = tiny_gpt2(args.vocab, args.length, seed=args.seed + gen)
            transformers.Trainer(model=model, args=targs, train_dataset=Corpus(train_ids), callbacks=[callback]).train()
            # the next generation's training data: top-k decoded, as synthetic corpora usually are
            train_ids = sample(model.eval(), args.n_train, args.length, args.top_k, seed=gen)
            rep = callback.last_report
            if rep is None:
                print(f"generation {gen}: check failed: {callback.last_error!r}")
                continue
            reports.append(rep.to_dict())
            print(
                f"generation {rep.generation}: {rep.stage.value:<15} "
                f"rare_ngram_recall={rep.value('rare_ngram_recall', 0):.3f} "
                f"vocab_ratio={rep.value('vocab_ratio', 0):.3f} distinct_2={rep.value('distinct_2', 0):.3f} "
                f"mlflow_run={rep.run_id}"
            )
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
