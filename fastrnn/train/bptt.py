"""Truncated backpropagation through time, and the training loop's progress bar.

A long sequence (or B parallel streams of one) is cut into chunks of k steps. Each chunk starts from the
state the previous chunk ended in (the state is carried forward), but no gradient flows back across a chunk
border (the gradient is cut, torch's ``hx.detach()``): the chunk's backward is called with dL/dh_n = 0.
Cost per chunk is O(k) memory; dependencies longer than k steps are seen in the forward state but never
trained through.

    streams = stream_batches(tokens, B)                  # (L, B): B contiguous slices of one long sequence
    for x, y in next_token_chunks(streams, k): ...       # x = streams[t:t+k], y = streams[t+1:t+k+1]
    for x, y in bptt_chunks(inputs, targets, k): ...     # any pair of (L, B, ...) arrays, cut along axis 0
    run = train_chunked(model, loss_fn, inputs, targets, k, optimizer=opt, clip_norm=1.0)
    run = evaluate_chunked(model, loss_fn, inputs, targets, k)     # forward only, the model in eval mode

``model`` is anything with ``model(x, hx) -> (out, hx_n)``, ``model.backward(d_out)``, ``train()`` and
``eval()`` (a ``fastrnn.train.RecurrentModel`` with readout "steps"; ``.modules`` too when it is to be clipped); ``loss_fn(out, y) -> (loss, d_out)`` (``cross_entropy``,
``mse``). ``run.loss`` is the mean of the chunk losses weighted by chunk length (each chunk loss being a mean
over its steps, this is the mean per step over the whole sequence); ``run.hx`` the state after the last
chunk, to carry into the next call.
"""
from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np

from .._arrays import is_gpu_array, module_of
from ..bench.progress import Progress
from .clip import clip_grad_norm


def progress_bar(total: int, quiet: bool = False, stream=None) -> Progress:
    """fastrnn's one-line bar (``advance(label)``, ``close()``) on stderr; silent if quiet or not a terminal."""
    stream = stream if stream is not None else sys.stderr
    return Progress(total, enabled=not quiet and hasattr(stream, "isatty") and stream.isatty(), stream=stream)


def _steps(steps) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (the truncation length k), got {steps!r}")
    return int(steps)


def stream_batches(tokens, batch_size: int):
    """(L, B) time-major: ``tokens`` (N,) cut into B contiguous streams of L = N // B (the tail is dropped)."""
    xp = module_of(tokens) if is_gpu_array(tokens) else np
    tokens = xp.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1 or tokens.shape[0] < 2 * batch_size:
        raise ValueError(f"batch_size must be an integer in [1, len(tokens) // 2] = [1, {tokens.shape[0] // 2}], "
                         f"got {batch_size!r}")
    L = tokens.shape[0] // batch_size
    return xp.ascontiguousarray(tokens[:L * batch_size].reshape(batch_size, L).T)


def bptt_chunks(inputs, targets, steps: int):
    """Yield (inputs[t:t+k], targets[t:t+k]) for t = 0, k, 2k, ...; the last chunk may be shorter."""
    k = _steps(steps)
    if len(inputs) != len(targets):
        raise ValueError(f"inputs and targets must have the same length along axis 0, "
                         f"got {len(inputs)} and {len(targets)}")
    for start in range(0, len(inputs), k):
        yield inputs[start:start + k], targets[start:start + k]


def next_token_chunks(streams, steps: int):
    """Language-model chunks of (L, B) ``streams``: inputs streams[t:t+k], targets one step ahead."""
    if getattr(streams, "ndim", 0) != 2 or streams.shape[0] < 2:
        raise ValueError(f"streams must be a (L, B) array with L >= 2, got shape {getattr(streams, 'shape', None)}")
    return bptt_chunks(streams[:-1], streams[1:], steps)


class ChunkedRun(NamedTuple):
    loss: float          # mean loss per step over all chunks
    hx: Any              # state after the last chunk
    chunks: int          # chunks run
    skipped: int         # optimiser steps skipped for a non-finite gradient norm


def _run(model, loss_fn, inputs, targets, steps, hx, train, optimizer, clip_norm, progress, label):
    chunks = list(bptt_chunks(inputs, targets, steps))
    bar = progress if isinstance(progress, Progress) else progress_bar(len(chunks), quiet=progress is False)
    total, weight, skipped = 0.0, 0, 0
    for x, y in chunks:
        out, hx = model(x, hx)
        loss, d_out = loss_fn(out, y)
        if train:
            model.backward(d_out)           # dL/dh_n = 0: the gradient stops at the chunk border
            if optimizer is not None:
                norm = clip_grad_norm(model.modules, clip_norm) if clip_norm else 0.0
                if math.isfinite(norm):
                    optimizer.step()
                else:
                    skipped += 1
                optimizer.zero_grad()
        total, weight = total + loss * len(x), weight + len(x)
        bar.advance(f"{label} {total / weight:.4f}")
    if not isinstance(progress, Progress):
        bar.close()
    return ChunkedRun(total / max(weight, 1), hx, len(chunks), skipped)


def train_chunked(model, loss_fn, inputs, targets, steps: int, *, hx=None, optimizer=None,
                  clip_norm: float | None = None, progress=True) -> ChunkedRun:
    """Forward and backward chunk by chunk, carrying hx and cutting the gradient at each border.

    With an ``optimizer``, each chunk's gradients are clipped to global norm ``clip_norm`` (if given), applied
    and zeroed (a non-finite norm skips that step and is counted in ``run.skipped``); without one they
    accumulate over all chunks, into the gradient of the sum of the chunk losses. ``progress``: True (a bar
    when stderr is a terminal), False, or a ``Progress`` to advance once per chunk (and not close).
    """
    if clip_norm is not None and optimizer is None:
        raise ValueError("clip_norm needs an optimizer: clipping happens before each optimiser step")
    if optimizer is not None and not hasattr(model, "modules"):
        raise TypeError("model must have .modules (the layers to clip) when an optimizer is given")
    model.train()
    return _run(model, loss_fn, inputs, targets, steps, hx, True, optimizer, clip_norm, progress, "train loss")


def evaluate_chunked(model, loss_fn, inputs, targets, steps: int, *, hx=None, progress=False) -> ChunkedRun:
    """The chunked forward pass only, in eval mode (no dropout); the model's mode is restored after."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        return _run(model, loss_fn, inputs, targets, steps, hx, False, None, None, progress, "eval loss")
    finally:
        model.train(was_training)


__all__ = ["progress_bar", "stream_batches", "bptt_chunks", "next_token_chunks", "ChunkedRun",
           "train_chunked", "evaluate_chunked"]
