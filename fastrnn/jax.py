"""JAX functions on fastrnn's kernels: ``lstm``, ``gru``, ``rnn`` with ``jax.custom_vjp``.

    import fastrnn.jax
    y, (h_n, c_n) = fastrnn.jax.lstm(x, w_ih, w_hh, b_ih, b_hh)     # x (T, B, I) jax arrays -> y (T, B, H)
    grads = jax.grad(lambda w: fastrnn.jax.lstm(x, w_ih, w, b_ih, b_hh)[0].sum())(w_hh)

The arguments and results are the functional API's (fastrnn.lstm / gru / rnn): PyTorch's weight layout,
optional biases and initial states, ``lengths``, ``batch_first``, unbatched (T, I) input, ``w_hr``
(LSTM projections too). One layer and one direction per call; compose layers in JAX.
The forward and the backward each run on the host through ``jax.pure_callback`` (the CPU backends;
JAX arrays on a GPU are copied to the host by the callback). The forward's tape comes back as
arrays (fastrnn._flat) and is the custom_vjp's residual, so the backward reuses it and never
recomputes. ``jax.jit`` works (the backend, "auto" included, is fixed at trace time from the shapes);
``jax.vmap`` calls the kernels once per mapped element (``vmap_method="sequential"``: correct for any
mapped argument, weights included, though not batched into one kernel call). float64 needs
``jax.config.update("jax_enable_x64", True)``, as everywhere in JAX.
"""
from __future__ import annotations

from functools import partial

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:      # fastrnn itself never needs JAX: name the extra that brings it
    raise ImportError("fastrnn.jax needs JAX, which is not installed; install it with: "
                      "pip install fastrnn[jax]") from exc
import numpy as np

from . import _flat, api
from ._validation import check_variant

_VMAP = "sequential"
_ARGS = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "w_hr", "lengths")


def _shape(shape, like):
    return jax.ShapeDtypeStruct(tuple(shape), like.dtype)


def _outputs(form, name, args, save):
    """The ShapeDtypeStructs of forward's (y, h_n, c_n, saved) for these arguments."""
    x, w_hh, h0, c0, w_hr = args[0], args[2], args[5], args[6], args[7]
    T, B = x.shape[0], x.shape[1]
    P = w_hh.shape[1]
    H = P if w_hr is None else w_hr.shape[1]
    projection = P if w_hr is not None else None
    saved = tuple(_shape(s, x) for s in _flat.saved_shapes(name, form, T, B, H, projection)) if save else ()
    return (_shape((T, B, P), x), _shape((B, P), h0), None if c0 is None else _shape((B, H), x), saved)


def _host_forward(form, name, save, *args):
    y, h_n, c_n, saved = _flat.forward(form, name, *args, save=save)
    return y, h_n, c_n, tuple(saved)


def _forward(form, name, args, save):
    return jax.pure_callback(partial(_host_forward, form, name, save), _outputs(form, name, args, save), *args,
                             vmap_method=_VMAP)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _layer(form, name, *args):
    y, h_n, c_n, _ = _forward(form, name, args, save=False)
    return y, h_n, c_n


def _layer_fwd(form, name, *args):
    y, h_n, c_n, saved = _forward(form, name, args, save=True)
    return (y, h_n, c_n), (args, saved)


def _host_backward(form, name, args, saved, dy, dh_n, dc_n):
    grads = _flat.backward(form, name, *args, saved, dy, dh_n, dc_n)
    # in the order of the arguments: dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, dw_hr
    return tuple(grads[k] for k in (0, 3, 4, 5, 6, 1, 2, 7))


def _layer_bwd(form, name, residuals, cotangents):
    args, saved = residuals
    dy, dh_n, dc_n = cotangents
    differentiable = args[:8]
    shapes = tuple(None if a is None else _shape(a.shape, a) for a in differentiable)
    grads = jax.pure_callback(partial(_host_backward, form, name), shapes, args, saved, dy, dh_n, dc_n,
                              vmap_method=_VMAP)
    lengths = args[8]
    d_lengths = None if lengths is None else np.zeros(lengths.shape, jax.dtypes.float0)
    return (*grads, d_lengths)


_layer.defvjp(_layer_fwd, _layer_bwd)


def _check(form, args):
    """The functional API's checks at trace time, so errors are raised here and name the argument: on
    stand-ins of the same shapes and dtypes (np.empty touches no memory; nothing is computed)."""
    cell, variant = _flat.cell_form(form)
    stand_ins = [None if a is None else np.empty(a.shape, a.dtype) for a in args[:8]]
    lengths = args[8]
    if isinstance(lengths, jax.core.Tracer):        # values unknown until run time: the kernels' call checks them
        lengths = np.ones(lengths.shape, lengths.dtype)
    api.prepare(cell, stand_ins[:7], variant, False, None if lengths is None else np.asarray(lengths), stand_ins[7])


def _run(form, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, batch_first, backend):
    """Layout (batch_first, unbatched) and default states in JAX around the time-major op."""
    x = jnp.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be 3-D {'(B, T, I)' if batch_first else '(T, B, I)'} or 2-D (T, I) for one "
                         f"unbatched sequence, got shape {x.shape}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    unbatched = x.ndim == 2
    if unbatched and lengths is not None:
        raise ValueError("lengths applies to batched input only; x is 2-D (one unbatched sequence)")
    x = x[:, None, :] if unbatched else (jnp.swapaxes(x, 0, 1) if batch_first else x)
    w_hh = jnp.asarray(w_hh)
    if w_hh.ndim != 2:
        raise ValueError(f"w_hh must be 2-D (G*H, H), got shape {w_hh.shape}")
    T, B = x.shape[0], x.shape[1]
    P = w_hh.shape[1]
    H = P if w_hr is None else jnp.shape(w_hr)[1]

    def state(value, size):
        if value is None:
            return jnp.zeros((B, size), x.dtype)
        value = jnp.asarray(value)
        return value[None, :] if unbatched and value.ndim == 1 else value

    h0 = state(h0, P)
    c0 = state(c0, H) if form == "lstm" else None
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths must be an array of integers, got dtype {lengths.dtype}")
    name = _flat.resolve_backend(form, backend, T, B, H, projections=w_hr is not None, training=True)
    args = tuple(None if a is None else jnp.asarray(a) for a in (x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths))
    _check(form, args)
    y, h_n, c_n = _layer(form, name, *args)
    if unbatched:
        return y[:, 0, :], h_n[0], (None if c_n is None else c_n[0])
    return (jnp.swapaxes(y, 0, 1) if batch_first else y), h_n, c_n


def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, *, batch_first=False, lengths=None,
         backend="auto", w_hr=None):
    """fastrnn.lstm on JAX arrays, differentiable: returns ``(y, (h_n, c_n))``."""
    y, h_n, c_n = _run("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, batch_first, backend)
    return y, (h_n, c_n)


def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, linear_before_reset=True, batch_first=False,
        lengths=None, backend="auto"):
    """fastrnn.gru on JAX arrays, differentiable: returns ``(y, h_n)``."""
    form = "gru" if check_variant("gru", linear_before_reset) else "gru_cho"
    y, h_n, _ = _run(form, x, w_ih, w_hh, b_ih, b_hh, h0, None, None, lengths, batch_first, backend)
    return y, h_n


def rnn(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, *, nonlinearity="tanh", batch_first=False, lengths=None,
        backend="auto"):
    """fastrnn.rnn on JAX arrays, differentiable: returns ``(y, h_n)``."""
    form = f"rnn_{check_variant('rnn', nonlinearity)}"
    y, h_n, _ = _run(form, x, w_ih, w_hh, b_ih, b_hh, h0, None, None, lengths, batch_first, backend)
    return y, h_n


__all__ = ["lstm", "gru", "rnn"]
