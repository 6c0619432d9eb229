"""fastrnn.train: what a training loop needs around fastrnn's layers, on NumPy or CuPy arrays.

    from fastrnn.train import (Adam, Embedding, Linear, RecurrentModel, clip_grad_norm, cross_entropy,
                               init_recurrent, next_token_chunks, stream_batches, train_chunked)
    model = RecurrentModel(init_recurrent(fastrnn.LSTM(E, H)), Linear(H, V), Embedding(V, E))
    opt = Adam(model.modules, lr=2e-3)
    run = train_chunked(model, cross_entropy, x, y, steps=64, hx=run.hx, optimizer=opt, clip_norm=1.0)

Modules: ``clip`` (clip_grad_norm, clip_grad_value), ``init`` (uniform_, xavier_uniform_, orthogonal_,
init_recurrent), ``optim`` (SGD, Adam, AdamW), ``modules`` (Linear, Embedding, RecurrentModel), ``losses``
(cross_entropy, mse, log_softmax, softmax), ``bptt`` (truncated BPTT: stream_batches, bptt_chunks,
next_token_chunks, train_chunked, evaluate_chunked; progress_bar). Each module's docstring has its equations.
Imports NumPy and fastrnn only (CuPy when CuPy arrays are used); ``import fastrnn`` does not import this.
"""
from .bptt import (ChunkedRun, bptt_chunks, evaluate_chunked, next_token_chunks, progress_bar, stream_batches,
                   train_chunked)
from .clip import clip_grad_norm, clip_grad_value
from .init import init_recurrent, orthogonal_, uniform_, xavier_uniform_
from .losses import cross_entropy, log_softmax, mse, softmax
from .modules import Embedding, Linear, Module, RecurrentModel
from .optim import SGD, Adam, AdamW, Optimizer

__all__ = [
    "clip_grad_norm", "clip_grad_value",
    "uniform_", "xavier_uniform_", "orthogonal_", "init_recurrent",
    "Optimizer", "SGD", "Adam", "AdamW",
    "Module", "Linear", "Embedding", "RecurrentModel",
    "cross_entropy", "mse", "log_softmax", "softmax",
    "ChunkedRun", "stream_batches", "bptt_chunks", "next_token_chunks", "train_chunked", "evaluate_chunked",
    "progress_bar",
]
