"""fastrnn: fused LSTM/GRU/RNN forward and backward kernels behind one NumPy API.

    y, (h_n, c_n) = fastrnn.lstm(x, w_ih, w_hh, b_ih, b_hh)              # inference
    y, (h_n, c_n), tape = fastrnn.lstm_forward(x, w_ih, w_hh, b_ih, b_hh)
    grads = fastrnn.lstm_backward(tape, dy)                              # grads.x, grads.w_hh, ...
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True)         # torch.nn-style layers
    weights = fastrnn.pack_weights("lstm", w_ih, w_hh, b_ih, b_hh)       # frozen, packed once
    y, (h_n, c_n) = fastrnn.lstm(x, weights, h0=h, c0=c)                 # for many short calls

Weights use PyTorch's layout and gate order; see the README.
"""
from ._arrays import release_memory
from ._packed import PackedWeights, pack_weights
from ._types import Grads, LSTMGrads, Tape
from .api import (gru, gru_backward, gru_forward, lstm, lstm_backward, lstm_forward, rnn,
                  rnn_backward, rnn_forward)
from .backends import available_backends
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = [
    "lstm", "lstm_forward", "lstm_backward",
    "gru", "gru_forward", "gru_backward",
    "rnn", "rnn_forward", "rnn_backward",
    "LSTM", "GRU", "RNN", "pack_weights", "PackedWeights",
    "available_backends", "release_memory", "Grads", "LSTMGrads", "Tape", "__version__",
]
