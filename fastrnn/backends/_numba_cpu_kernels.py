r"""Persistent fused sequence kernels for the CPU (Numba): one parallel region per call.

Forward, for each step t (x-projection xp = x W_ih^T + b_ih computed ahead by chunks of steps):
    gh = h_{t-1} W_hh^T + b_hh            (packed panels, by chunks of hidden units; _numba_tiles.py)
    h_t, c_t = cell pointwise(xp_t, gh, h_{t-1}, c_{t-1})      (cells/: lstm, gru, rnn)
Backward, for each step t from T-1 down to 0, carrying dh (and dc):
    dh_t = dgh_{t+1} W_hh + dh_direct_{t+1} + dy_t
    dgi_t, dgh_t, dh_direct_t, dc_{t-1} = cell pointwise backward(dh_t, saved activations)
with dx, dW_ih, dW_hh and the biases' sums after each chunk of steps (or all T: numba_cpu.py).
LSTM with projections (w_hr (P, H), w_hh (4H, P), h of size P), two phases a step (forward_lstm_projected):
    m_t, c_t = cell(xp_t + h_{t-1} W_hh^T + b_hh, c_{t-1})  (m_t = o tanh(c_t));   h_t = m_t W_hr^T
and back (backward_lstm_projected): dh_t = dG_{t+1} W_hh + dy_t;  dm_t = dh_t W_hr;  dG_t, dc_{t-1} = cell
backward(dm_t, dc_t); then dW_hr = sum_t dh_t^T m_t with the other whole-sequence GEMMs.

Shapes: xp (SX, B, G*H), step t in slot t % SX (SX = T, a chunk of steps, or 1 when fused);
w_hh (G*H, H), gate-major as in PyTorch; panels (count, K, L): W_hh packed by tiles of L units
(L = one vector: 16 float32 and 8 float64 with AVX-512, else 8 and 4), its rows (forward, K = H)
or its columns (backward, K = G*H);
h_states, c_states (S, B, H) where S = T + 1 when saving for backward (entry t = state entering
step t) and S = 2 otherwise (ping-pong); gates (T, B, G*H) the saved activations; dgi, dgh (T, B, G*H)
gradients w.r.t. the x- and h-side pre-activations (one array for LSTM and RNN).

Work split: hidden units are cut into chunks; the workers of one parallel region claim chunks
step by step (see _numba_sync.py): one region per call instead of a fork/join per step. The forward
and backward may split the batch instead (FASTRNN_BATCH_SPLIT): each worker then runs its sequences'
steps alone.
Versions: v1: PyTorch-layout weights read in place, recurrent products on 4x3 register tiles in
reduction form (35-64 GFLOP/s one thread), pointwise loops left to LLVM's vectoriser (~20 ns a
unit). v2 (this): W_hh packed per call (or once per fastrnn.pack_weights snapshot) into panels,
recurrent products in outer-product form on 4 rows x 2 panels of vector accumulators (80-95
GFLOP/s one thread at B >= 8, ~98 peak), the cells' math on vectors of units (_numba_simd.py),
whole-sequence GEMMs on a 6x16 outer-product micro-kernel over packed panels; all in Numba (no
second thread pool).
Check: pytest tests/test_backends.py tests/test_numba_simd.py; time: fastrnn bench (see the README).
"""
import numpy as np
from numba import njit, prange

from ..cells import gru as gru_cell
from ..cells import lstm as lstm_cell
from ..cells import rnn as rnn_cell
from ._numba_simd import vlanes, vload, vload_f64, vstore, vstore_add
from ._numba_sync import claim_in_order, finish, wait_all
from ._numba_tiles import (gemm_a_buffer, gemm_chunk, gemm_chunks, pack_columns, pack_gemm_panels, pack_rows,
                            panel_product)

LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3   # GRU: linear_before_reset=True; GRU of Cho et al.: own kernels
# how forward gets the input projection xp = x W_ih^T + b_ih: computed before the call (all T steps),
# by the kernel a chunk of steps at a time (a ring), or inside each step by each chunk of units
PROJECTED, PROJECT_CHUNKS, PROJECT_FUSED = 0, 1, 2


# ----------------------------------------------------------------------------- whole-sequence GEMMs

PANELS_PER_ITEM = 4       # GEMM panels packed per claimed item


@njit(cache=True, error_model="numpy")
def pack_items(n_panels):
    """Claimed items of packing for ``n_panels`` GEMM panels (also called from Python, by numba_cpu's plans)."""
    return (n_panels + PANELS_PER_ITEM - 1) // PANELS_PER_ITEM


@njit(cache=True, error_model="numpy")
def _claim_packing(Bm, b_transposed, panels, claims, done, phase, w, n_workers):
    """Worker w packs the items of op(Bm)'s GEMM panels it claims (claims: a counter per item), each
    counted in done[phase] when packed."""
    n = pack_items(panels.shape[0])
    for i in range(n):
        c = claim_in_order(claims, 0, n, w, n_workers, i)
        if c >= 0:
            pack_gemm_panels(Bm, b_transposed, panels, c * PANELS_PER_ITEM,
                             min(panels.shape[0], (c + 1) * PANELS_PER_ITEM))
            finish(done, phase)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def gemm(A, a_transposed, Bm, b_transposed, C, bias, panels, panels_ready, pack_claims, chunk_claims, done,
         n_workers):
    """C = op(A) op(Bm) (op: transposed where asked) (+ bias on every row unless it is empty).
    First op(Bm) is packed into ``panels`` (_numba_tiles.pack_gemm_panels; not when
    ``panels_ready``: packed by an earlier call) by items of PANELS_PER_ITEM panels, then C's blocks
    are computed; workers claim both kinds of items."""
    n_chunks = gemm_chunks(C.shape[0], C.shape[1], a_transposed)
    for w in prange(n_workers):
        packed_a = gemm_a_buffer(C)
        if not panels_ready:
            _claim_packing(Bm, b_transposed, panels, pack_claims, done, 0, w, n_workers)
            wait_all(done, 0, pack_items(panels.shape[0]))
        for i in range(n_chunks):
            c = claim_in_order(chunk_claims, 0, n_chunks, w, n_workers, i)
            if c >= 0:
                gemm_chunk(A, a_transposed, C, bias, c, panels, packed_a, False)


@njit(inline="always", error_model="numpy")
def _unit_span(chunk, chunk_units, H):
    """(first hidden unit, number of units) of a chunk; the last chunk may be short."""
    u0 = chunk * chunk_units
    return u0, min(H - u0, chunk_units)


# ----------------------------------------------------------------------------- forward pointwise
# One function per cell and chunk of units u0..u0+n-1. The cell's math (cells/) runs on vectors of
# consecutive units (_numba_simd.py: one native register of float32), then one unit at a time for
# the rest of the chunk: the same code with scalar loads and stores (_units_* below take the pair
# as arguments). (Left to LLVM's loop vectoriser, the loops over n units of ~10 arrays stayed
# scalar: ~20 ns a unit, against ~1 with vectors.) gh holds the chunk's recurrent products
# gate-major (_numba_tiles.product); saved activations go to gates[t % len(gates)]: a single scratch
# slot when nothing is saved.
# What a step calls (the pointwise chunks, _step_rows, _incoming_dh, _step_back_rows, _project_steps,
# the claims of _numba_sync) compiles without Numba's reference counting (_nrt=False, as the products in
# _numba_tiles.py: none allocates): each step's array views had cost 10-40 atomic updates of counts
# both workers share. Gain (T = 128, one process): B = 1 forward 0.95-1.20x (9 of 12 above 1), elsewhere 0.98-1.08x.

@njit(inline="always", error_model="numpy")
def _load_vector(arr, i, j):
    return vload(arr, i, j)


@njit(inline="always", error_model="numpy")
def _store_vector(arr, i, j, value):
    vstore(arr, i, j, value)


@njit(inline="always", error_model="numpy")
def _load_one(arr, i, j):
    return arr[i, j]


@njit(inline="always", error_model="numpy")
def _store_one(arr, i, j, value):
    arr[i, j] = value


@njit(inline="always", error_model="numpy")
def _lstm_gate_units(load, store, b, gate, u, k, gs, H, x_t, gh, bias, g_t):
    j = gate * H + u
    store(g_t, b, j, lstm_cell.gate(gate, load(x_t, b, j) + load(gh, b, gate * gs + k) + load(bias, 0, j)))


@njit(inline="always", error_model="numpy")
def _lstm_state_units(load, store, b, u, H, g_t, c_in, c_out, h_out, y_t):
    h, c = lstm_cell.state(load(g_t, b, u), load(g_t, b, H + u), load(g_t, b, 2 * H + u), load(g_t, b, 3 * H + u),
                           load(c_in, b, u))
    store(h_out, b, u, h)
    store(c_out, b, u, c)
    store(y_t, b, u, h)


@njit(cache=True, error_model="numpy", _nrt=False)
def _lstm_chunk(t, u0, n, gs, x_t, gh, b_hh, h_in, h_out, c_in, c_out, lengths, y_t, g_t):
    # (y_t: the step's outputs, or with projections m_t = o tanh(c_t), then also h_in and h_out)
    H = h_in.shape[1]
    bias = b_hh.reshape((1, b_hh.shape[0]))
    L = vlanes(h_in)
    n_vec = n - n % L
    for b in range(h_in.shape[0]):
        if t < lengths[b]:
            # one gate at a time into g_t, then the states from it: the five activations of a unit
            # in one loop body (the cell's forward as one call) ran the pointwise ~1.15x slower, the
            # whole forward 1.01-1.05x (register pressure, presumably: each loop here holds one
            # activation's constants). The C++ kernels' unit tiles lost 5-15% split so (GCC): not there.
            for gate in range(4):
                for k in range(0, n_vec, L):
                    _lstm_gate_units(_load_vector, _store_vector, b, gate, u0 + k, k, gs, H, x_t, gh, bias, g_t)
                for k in range(n_vec, n):
                    _lstm_gate_units(_load_one, _store_one, b, gate, u0 + k, k, gs, H, x_t, gh, bias, g_t)
            for u in range(u0, u0 + n_vec, L):
                _lstm_state_units(_load_vector, _store_vector, b, u, H, g_t, c_in, c_out, h_out, y_t)
            for u in range(u0 + n_vec, u0 + n):
                _lstm_state_units(_load_one, _store_one, b, u, H, g_t, c_in, c_out, h_out, y_t)
        else:
            for u in range(u0, u0 + n):
                h_out[b, u], c_out[b, u], y_t[b, u] = h_in[b, u], c_in[b, u], 0
                g_t[b, u] = g_t[b, H + u] = g_t[b, 2 * H + u] = g_t[b, 3 * H + u] = 0


@njit(inline="always", error_model="numpy")
def _gru_units(load, store, b, u, k, gs, H, x_t, gh, bias, h_in, h_out, y_t, g_t, ghn_t):
    gh_n = load(gh, b, 2 * gs + k) + load(bias, 0, 2 * H + u)
    h, r, z, nn = gru_cell.forward(load(x_t, b, u), load(x_t, b, H + u), load(x_t, b, 2 * H + u),
                                   load(gh, b, k) + load(bias, 0, u), load(gh, b, gs + k) + load(bias, 0, H + u),
                                   gh_n, load(h_in, b, u))
    store(g_t, b, u, r)
    store(g_t, b, H + u, z)
    store(g_t, b, 2 * H + u, nn)
    store(ghn_t, b, u, gh_n)
    store(h_out, b, u, h)
    store(y_t, b, u, h)


@njit(cache=True, error_model="numpy", _nrt=False)
def _gru_chunk(t, u0, n, gs, x_t, gh, b_hh, h_in, h_out, lengths, y_t, g_t, ghn_t):
    H = h_in.shape[1]
    bias = b_hh.reshape((1, b_hh.shape[0]))
    L = vlanes(h_in)
    n_vec = n - n % L
    for b in range(h_in.shape[0]):
        if t < lengths[b]:
            for k in range(0, n_vec, L):
                _gru_units(_load_vector, _store_vector, b, u0 + k, k, gs, H, x_t, gh, bias, h_in, h_out, y_t, g_t,
                           ghn_t)
            for k in range(n_vec, n):
                _gru_units(_load_one, _store_one, b, u0 + k, k, gs, H, x_t, gh, bias, h_in, h_out, y_t, g_t, ghn_t)
        else:
            for u in range(u0, u0 + n):
                h_out[b, u], y_t[b, u] = h_in[b, u], 0
                g_t[b, u] = g_t[b, H + u] = g_t[b, 2 * H + u] = ghn_t[b, u] = 0


@njit(cache=True, error_model="numpy", _nrt=False)
def _rnn_chunk(t, u0, n, x_t, gh, b_hh, h_in, h_out, lengths, y_t, relu):
    bias = b_hh[u0:u0 + n]
    for b in range(h_in.shape[0]):
        hi, ho, yb = h_in[b, u0:u0 + n], h_out[b, u0:u0 + n], y_t[b, u0:u0 + n]
        if t < lengths[b]:
            x, r = x_t[b, u0:u0 + n], gh[b]
            for k in range(n):
                h = rnn_cell.forward(x[k] + r[k] + bias[k], relu)
                ho[k], yb[k] = h, h
        else:
            for k in range(n):
                ho[k], yb[k] = hi[k], 0


@njit(cache=True, error_model="numpy", _nrt=False)
def _input_projection(t, u0, n, x, panels_ih, b_ih, G, H, gx, gs, xp):
    """xp[0, b, g*H + u] = x_t W_ih^T + b_ih for the chunk's units (the fused forward's input product;
    panels_ih: W_ih's rows packed like W_hh's)."""
    t0, n_tiles = _tile_span(u0, n, panels_ih.shape[2])
    panel_product(panels_ih, G, panels_ih.shape[0] // G, t0, n_tiles, x[t], x.shape[1], gx, gs, t)
    for b in range(x.shape[1]):
        for g in range(G):
            for k in range(n):
                xp[0, b, g * H + u0 + k] = gx[b, g * gs + k] + b_ih[g * H + u0 + k]


@njit(cache=True, error_model="numpy", _nrt=False)
def _tile_span(u0, n, L):
    """(first unit tile, number of tiles) of the units u0..u0+n-1 (u0 a multiple of L)."""
    return u0 // L, (n + L - 1) // L


@njit(cache=True, error_model="numpy", _nrt=False)
def _project_steps(j, t_first, t_last, B, x_rows, b_ih, gemm_ih, xp_rows, proj_claims, proj_done, items_max,
                   packed_a, w, n_workers):
    """The input projection of steps t_first..t_last-1 (chunk j of the ring) into the ring xp_rows, as
    GEMM items the workers claim; returns when all are done."""
    rows = (t_last - t_first) * B
    n_items = gemm_chunks(rows, xp_rows.shape[1], False)
    for i in range(n_items):
        c = claim_in_order(proj_claims[j * items_max:], 0, n_items, w, n_workers, i)
        if c >= 0:
            gemm_chunk(x_rows[t_first * B:t_first * B + rows], False, xp_rows[:rows], b_ih, c, gemm_ih, packed_a, False)
            finish(proj_done, j)
    wait_all(proj_done, j, n_items)


@njit(cache=True, error_model="numpy", _nrt=False)
def _step_rows(kind, t, u0, n, t0, n_tiles, b0, b1, xp, panels, gh, gs, b_hh, h_states, c_states, lengths, y, gates,
               ghn):
    """Step t of the sequences b0..b1-1 for the units u0..u0+n-1 (unit tiles t0..t0+n_tiles-1): their
    recurrent product, then the cell's pointwise math."""
    G = gh.shape[1] // gs
    S = h_states.shape[0]
    h_in, h_out = h_states[t % S][b0:b1], h_states[(t + 1) % S][b0:b1]
    panel_product(panels, G, panels.shape[0] // G, t0, n_tiles, h_in, b1 - b0, gh, gs, t)
    x_t, y_t, g_t, rows = xp[t % xp.shape[0]][b0:b1], y[t][b0:b1], gates[t % gates.shape[0]][b0:b1], lengths[b0:b1]
    if kind == LSTM:
        _lstm_chunk(t, u0, n, gs, x_t, gh, b_hh, h_in, h_out, c_states[t % S][b0:b1], c_states[(t + 1) % S][b0:b1],
                    rows, y_t, g_t)
    elif kind == GRU:
        _gru_chunk(t, u0, n, gs, x_t, gh, b_hh, h_in, h_out, rows, y_t, g_t, ghn[t % ghn.shape[0]][b0:b1])
    else:
        _rnn_chunk(t, u0, n, x_t, gh, b_hh, h_in, h_out, rows, y_t, kind == RNN_RELU)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def forward(kind, x, w_ih, panels_ih, gemm_ih, ih_ready, b_ih, projection, xp, w_hh, panels, hh_ready, b_hh,
            h_states, c_states, lengths, y, gates, ghn, chunk_units, batch_rows, claims, done, proj_claims,
            proj_done, n_workers):
    """LSTM, GRU (linear before reset) and RNN forward over all T steps. States enter in [0].

    Phase 0 packs: ``panels`` (G*NT, H, L) receives W_hh's rows by unit tiles of L, each chunk of
    units its own (not when ``hh_ready``: packed by an earlier call). Then, step by step, the chunks
    of units claim their recurrent product and pointwise math (claims, done: phase t + 1 is step t);
    or, when ``batch_rows`` > 0 (FASTRNN_BATCH_SPLIT), slices of batch_rows sequences (at most as many
    as unit chunks) are claimed instead, each for all the steps of a chunk of the input projection's
    ring (all T steps without a ring), all units: phase j + 1 is chunk j, and only the ring's next
    chunk waits for every slice.

    The input projection xp_t = x_t W_ih^T + b_ih (``projection``): PROJECTED, xp holds all T steps,
    computed before; or by the kernel, two ways:
    - PROJECT_FUSED (small problems): xp is one scratch step that each chunk fills with its own units'
      x_t W_ih^T + b_ih before its recurrent product (no GEMM); W_ih's rows are packed into
      ``panels_ih`` (G*NT, I, L) in phase 0 as W_hh's are, unless ``ih_ready``;
    - PROJECT_CHUNKS: xp is a ring of SX steps, and before steps t..t+SX-1 the workers
      compute their projection as one GEMM (items of _numba_tiles.gemm_chunk; proj_claims holds
      items_max counters per chunk of steps, proj_done one), so it is read from the last level
      cache, not from a T-long array (whose fresh pages faulted in on every call). ``gemm_ih``:
      W_ih^T packed into GEMM panels in phase 0 (items of PANELS_PER_ITEM, claimed past the steps'
      claims, counted in done[0] after the chunks), unless ``ih_ready``.
    """
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    L = panels.shape[2]
    NT = panels.shape[0] // G
    n_chunks = (H + chunk_units - 1) // chunk_units
    gs = (chunk_units + L - 1) // L * L          # gh columns per gate: whole tiles
    SX = xp.shape[0]
    fused, chunked = projection == PROJECT_FUSED, projection == PROJECT_CHUNKS
    n_pack = 0 if not chunked or ih_ready else pack_items(gemm_ih.shape[0])
    items_max = proj_claims.shape[0] // ((T + SX - 1) // SX)
    x_rows, xp_rows = x.reshape((T * B, x.shape[2])), xp.reshape((SX * B, G * H))
    for w in prange(n_workers):
        gh = np.empty((B, G * gs), xp.dtype)
        gx = np.empty((B, G * gs), xp.dtype) if fused else gh
        packed_a = np.empty((0, 0), xp.dtype)           # (the GEMM reads x in place)
        for i in range(n_chunks):
            c = claim_in_order(claims, 0, n_chunks, w, n_workers, i)
            if c >= 0:
                t0, n_tiles = _tile_span(*_unit_span(c, chunk_units, H), L)
                for g in range(G):
                    if not hh_ready:
                        pack_rows(w_hh, G, H, panels, g * NT + t0, g * NT + t0 + n_tiles)
                    if fused and not ih_ready:
                        pack_rows(w_ih, G, H, panels_ih, g * NT + t0, g * NT + t0 + n_tiles)
                finish(done, 0)
        if n_pack > 0:
            _claim_packing(w_ih, True, gemm_ih, claims[(T + 1) * n_chunks:], done, 0, w, n_workers)
        wait_all(done, 0, n_chunks + n_pack)
        if batch_rows > 0:
            # each slice of batch_rows sequences runs a whole chunk of SX steps (all T when xp holds
            # them all) on the worker that claims it: no sync a step; the slices meet only before the
            # ring's next chunk (phase j + 1: chunk j done)
            n_slices = (B + batch_rows - 1) // batch_rows
            gh_all = np.empty((B, G * NT * L), xp.dtype)
            for j in range((T + SX - 1) // SX):
                t_first, t_last = j * SX, min(T, j * SX + SX)
                if chunked:
                    if j > 0:
                        wait_all(done, j, n_slices)
                    _project_steps(j, t_first, t_last, B, x_rows, b_ih, gemm_ih, xp_rows, proj_claims, proj_done,
                                   items_max, packed_a, w, n_workers)
                for i in range(n_slices):
                    c = claim_in_order(claims[(j + 1) * n_chunks:], 0, n_slices, w, n_workers, i)
                    if c >= 0:
                        b0 = c * batch_rows
                        for t in range(t_first, t_last):
                            _step_rows(kind, t, 0, H, 0, NT, b0, min(B, b0 + batch_rows), xp, panels, gh_all, NT * L,
                                       b_hh, h_states, c_states, lengths, y, gates, ghn)
                        finish(done, j + 1)
        else:
            for t in range(T):
                if chunked and t % SX == 0:
                    _project_steps(t // SX, t, min(T, t + SX), B, x_rows, b_ih, gemm_ih, xp_rows, proj_claims,
                                   proj_done, items_max, packed_a, w, n_workers)
                p = t + 1
                for i in range(n_chunks):
                    c = claim_in_order(claims, p, n_chunks, w, n_workers, i)
                    if c < 0:
                        continue
                    u0, n = _unit_span(c, chunk_units, H)
                    t0, n_tiles = _tile_span(u0, n, L)
                    if fused:
                        _input_projection(t, u0, n, x, panels_ih, b_ih, G, H, gx, gs, xp)
                    _step_rows(kind, t, u0, n, t0, n_tiles, 0, B, xp, panels, gh, gs, b_hh, h_states, c_states, lengths,
                               y, gates, ghn)
                    finish(done, p)
                wait_all(done, p, n_chunks)


# ----------------------------------------------------------------------------- backward pointwise
# dh_carry holds dL/dh_t of the chunk's units before dy_t; dy has T slots, or one of zeros; dG's
# arrays (dg, dgi, dgh) are rings: step t in slot t % their length.

@njit(inline="always", error_model="numpy")
def _lstm_units_backward(load, store, b, u, k, H, dh_carry, dy_t, dc, g_t, c_prev, c_t, dg_t):
    da_i, da_f, da_g, da_o, dc_prev = lstm_cell.backward(
        load(dh_carry, b, k) + load(dy_t, b, u), load(dc, b, u), load(g_t, b, u), load(g_t, b, H + u),
        load(g_t, b, 2 * H + u), load(g_t, b, 3 * H + u), load(c_prev, b, u), load(c_t, b, u))
    store(dg_t, b, u, da_i)
    store(dg_t, b, H + u, da_f)
    store(dg_t, b, 2 * H + u, da_g)
    store(dg_t, b, 3 * H + u, da_o)
    store(dc, b, u, dc_prev)


@njit(cache=True, error_model="numpy", _nrt=False)
def _lstm_chunk_backward(t, u0, n, dh_carry, dy_t, lengths, g_t, c_prev, c_t, dg_t, dh_direct, dc):
    H = dh_direct.shape[1]
    L = vlanes(dc)
    n_vec = n - n % L
    for b in range(dh_direct.shape[0]):
        if t < lengths[b]:
            for k in range(0, n_vec, L):
                _lstm_units_backward(_load_vector, _store_vector, b, u0 + k, k, H, dh_carry, dy_t, dc, g_t, c_prev,
                                     c_t, dg_t)
            for k in range(n_vec, n):
                _lstm_units_backward(_load_one, _store_one, b, u0 + k, k, H, dh_carry, dy_t, dc, g_t, c_prev, c_t,
                                     dg_t)
            dh_direct[b, u0:u0 + n] = 0
        else:
            for k in range(n):
                u = u0 + k
                dg_t[b, u] = dg_t[b, H + u] = dg_t[b, 2 * H + u] = dg_t[b, 3 * H + u] = 0
                dh_direct[b, u] = dh_carry[b, k]


@njit(inline="always", error_model="numpy")
def _gru_units_backward(load, store, b, u, k, H, dh_carry, dy_t, g_t, ghn_t, h_prev, dgi_t, dgh_t, dh_direct):
    da_r, da_z, da_n, dgh_n, dh_dir = gru_cell.backward(
        load(dh_carry, b, k) + load(dy_t, b, u), load(g_t, b, u), load(g_t, b, H + u), load(g_t, b, 2 * H + u),
        load(ghn_t, b, u), load(h_prev, b, u))
    store(dgi_t, b, u, da_r)
    store(dgi_t, b, H + u, da_z)
    store(dgi_t, b, 2 * H + u, da_n)
    store(dgh_t, b, u, da_r)
    store(dgh_t, b, H + u, da_z)
    store(dgh_t, b, 2 * H + u, dgh_n)
    store(dh_direct, b, u, dh_dir)


@njit(cache=True, error_model="numpy", _nrt=False)
def _gru_chunk_backward(t, u0, n, dh_carry, dy_t, lengths, g_t, ghn_t, h_prev, dgi_t, dgh_t, dh_direct):
    H = dh_direct.shape[1]
    L = vlanes(dh_direct)
    n_vec = n - n % L
    for b in range(dh_direct.shape[0]):
        if t < lengths[b]:
            for k in range(0, n_vec, L):
                _gru_units_backward(_load_vector, _store_vector, b, u0 + k, k, H, dh_carry, dy_t, g_t, ghn_t, h_prev,
                                    dgi_t, dgh_t, dh_direct)
            for k in range(n_vec, n):
                _gru_units_backward(_load_one, _store_one, b, u0 + k, k, H, dh_carry, dy_t, g_t, ghn_t, h_prev,
                                    dgi_t, dgh_t, dh_direct)
        else:
            for k in range(n):
                u = u0 + k
                dgi_t[b, u] = dgi_t[b, H + u] = dgi_t[b, 2 * H + u] = 0
                dgh_t[b, u] = dgh_t[b, H + u] = dgh_t[b, 2 * H + u] = 0
                dh_direct[b, u] = dh_carry[b, k]


@njit(cache=True, error_model="numpy", _nrt=False)
def _rnn_chunk_backward(t, u0, n, dh_carry, dy_t, lengths, h_t, dg_t, dh_direct, relu):
    for b in range(dh_direct.shape[0]):
        carry, direct, da = dh_carry[b, :n], dh_direct[b, u0:u0 + n], dg_t[b, u0:u0 + n]
        if t < lengths[b]:
            dyb, h = dy_t[b, u0:u0 + n], h_t[b, u0:u0 + n]
            for k in range(n):
                da[k] = rnn_cell.backward(carry[k] + dyb[k], h[k], relu)
                direct[k] = 0
        else:
            for k in range(n):
                da[k] = 0
                direct[k] = carry[k]


@njit(inline="always", error_model="numpy")
def _copy_columns(src, s0, dst, d0, n):
    """dst[:, d0:d0+n] = src[:, s0:s0+n] as a loop (a slice assignment needs Numba's reference counting,
    which the step kernels compile without: see _numba_tiles.py)."""
    for b in range(dst.shape[0]):
        for k in range(n):
            dst[b, d0 + k] = src[b, s0 + k]


@njit(cache=True, error_model="numpy", _nrt=False)
def _incoming_dh(last_step, panels, dg_next, dh_n, dh_direct, u0, n, out, t):
    """out[:, :n] = dL/dh_t of units u0..u0+n-1 before dy_t: dh_n at the last step, else
    dg_{t+1} W (the recurrent part; panels: W's columns packed by unit tiles) plus the direct part
    carried from step t+1."""
    B = dh_n.shape[0]
    if last_step:
        _copy_columns(dh_n, u0, out, 0, n)
        return
    t0, n_tiles = _tile_span(u0, n, panels.shape[2])
    panel_product(panels, 1, panels.shape[0], t0, n_tiles, dg_next, B, out, 0, t)
    for b in range(B):
        for uu in range(n):
            out[b, uu] += dh_direct[b, u0 + uu]


@njit(cache=True, error_model="numpy", _nrt=False)
def _step_back_rows(kind, p, u0, n, b0, b1, panels, dh_n, dh_direct, dh_carry, dy, lengths, gates, c_states, h_states,
                    ghn, dgi, dgh, dc, dh0):
    """Phase p of the reverse loop (step t = T-1-p; p = T: dh0) for the sequences b0..b1-1 and the units
    u0..u0+n-1: dh_t, then the cell's pointwise backward."""
    T = h_states.shape[0] - 1
    t = T - 1 - p
    SX = dgi.shape[0]
    carry, direct, rows = dh_carry[:b1 - b0], dh_direct[b0:b1], lengths[b0:b1]
    _incoming_dh(p == 0, panels, dgh[(t + 1) % SX][b0:b1], dh_n[b0:b1], direct, u0, n, carry, t)
    if p == T:
        _copy_columns(carry, 0, dh0[b0:b1], u0, n)
        return
    dy_t, g_t, dgi_t = dy[t % dy.shape[0]][b0:b1], gates[t][b0:b1], dgi[t % SX][b0:b1]
    if kind == LSTM:
        _lstm_chunk_backward(t, u0, n, carry, dy_t, rows, g_t, c_states[t][b0:b1], c_states[t + 1][b0:b1], dgi_t,
                             direct, dc[b0:b1])
    elif kind == GRU:
        _gru_chunk_backward(t, u0, n, carry, dy_t, rows, g_t, ghn[t][b0:b1], h_states[t][b0:b1], dgi_t,
                            dgh[t % SX][b0:b1], direct)
    else:
        _rnn_chunk_backward(t, u0, n, carry, dy_t, rows, h_states[t + 1][b0:b1], dgi_t, direct, kind == RNN_RELU)


BIAS_COLUMNS = 128        # columns of dG per claimed item of the bias gradients' sums


@njit(cache=True, error_model="numpy", _nrt=False)
def _column_sums(dg, rows, first, last, sums):
    """sums[c] += sum over r < rows of dg[r, c] for c in [first, last), in float64 (sums' type), a
    float64 vector of columns at a time (left to LLVM, the widening loop stayed scalar: 6% of a GRU
    forward+backward at B = 8, H = 128)."""
    row = sums.reshape((1, sums.shape[0]))
    L = vlanes(row)
    n_vec = first + (last - first) // L * L
    for r in range(rows):
        for c in range(first, n_vec, L):
            vstore_add(row, 0, c, vload_f64(dg, r, c))
        for c in range(n_vec, last):
            sums[c] += dg[r, c]


@njit(cache=True, error_model="numpy", _nrt=False)
def _chunk_products(item, rows, t0, x, panels_ih, panels_x, h_states, panels_h, dgi, dgh, dx, dw_ih, dw_hh,
                    db, n_sums, packed_a, first):
    """Work item ``item`` of a chunk's whole-sequence products (steps t0.., ``rows`` = its steps * B rows
    of dG, first in the rings dgi/dgh): dx's rows = dG_i W_ih, dW_ih += dG_i^T x, dW_hh += dG_h^T h_prev
    (= for the ``first`` chunk: no zeroing of dW first, which cost a pass over it), db[0] += dG_i's column
    sums (db[1] += dG_h's when ``n_sums`` = 2; none when 0), in this order of items."""
    B, I = x.shape[1], x.shape[2]
    GH, H = dgi.shape[2], h_states.shape[2]
    rows_i, rows_h = dgi.reshape((-1, GH))[:rows], dgh.reshape((-1, GH))[:rows]
    n_dx, n_wi, n_wh = gemm_chunks(rows, I, False), gemm_chunks(GH, I, True), gemm_chunks(GH, H, True)
    if item < n_dx:
        gemm_chunk(rows_i, False, dx.reshape((-1, I))[t0 * B:t0 * B + rows], rows_i[0, :0], item, panels_ih, packed_a,
                   False)
        return
    item -= n_dx
    if item < n_wi:
        gemm_chunk(rows_i, True, dw_ih, rows_i[0, :0], item, panels_x, packed_a, not first)
        return
    item -= n_wi
    if item < n_wh:
        gemm_chunk(rows_h, True, dw_hh, rows_i[0, :0], item, panels_h, packed_a, not first)
        return
    item -= n_wh
    n_cols = (GH + BIAS_COLUMNS - 1) // BIAS_COLUMNS
    first, which = (item % n_cols) * BIAS_COLUMNS, item // n_cols
    _column_sums(rows_i if which == 0 else rows_h, rows, first, min(GH, first + BIAS_COLUMNS), db[which])


@njit(cache=True, error_model="numpy")
def chunk_product_items(rows, I, GH, H, n_sums):
    """How many work items _chunk_products has for a chunk of ``rows`` rows."""
    return (gemm_chunks(rows, I, False) + gemm_chunks(GH, I, True) + gemm_chunks(GH, H, True)
            + n_sums * ((GH + BIAS_COLUMNS - 1) // BIAS_COLUMNS))


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def backward(kind, w_hh, panels, dy, dh_n, lengths, gates, h_states, c_states, ghn, dgi, dgh, dh_direct, dc, dh0,
             chunked, x, w_ih, panels_ih, panels_x, panels_h, dx, dw_ih, dw_hh, db, n_sums,
             chunk_units, batch_rows, claims, done, product_claims, product_done, n_workers):
    """Reverse loop of LSTM, GRU (linear before reset) and RNN. ``dc`` enters holding dc_n and
    leaves holding dc0; ``dh0`` receives dL/dh0. Phase 0 packs W_hh's columns into ``panels``
    (NT, G*H, L), each chunk of units its own unit tiles; phase p + 1 handles step T-1-p; phase T + 1
    forms dh0. dgi, dgh: step t's gradients in slot t % SX (SX = their length: T, or a chunk of >= 2 steps).

    ``chunked``: after the steps of each chunk of SX steps (t0 = a multiple of SX, down to 0), the
    workers compute its rows of dx, its share of dW_ih, dW_hh (set by the first chunk, the last steps, then
    accumulated) and of the bias gradients' sums db (float64, (n_sums, G*H): dG_i's, and dG_h's when
    n_sums = 2) before the next chunk's steps overwrite the rings, so dG is O(chunk), not O(T): a
    chunk's x and h rows are first packed
    (panels_x, panels_h: GEMM panels with room for SX*B rows; W_ih into panels_ih in phase 0, items
    claimed past the steps' claims), then _chunk_products' items. product_claims: 2 blocks of
    counters per chunk (packing, products), product_done 2 counters per chunk. Else the caller runs
    the whole-sequence products after the call.

    ``batch_rows`` > 0 (FASTRNN_BATCH_SPLIT, as forward): slices of batch_rows sequences (at most as many
    as unit chunks) are claimed instead of the steps' unit chunks, each for all the steps of a chunk of
    SX steps (and dh0 after the first chunk), all units: phase j + 1 is chunk j; its products wait for
    every slice."""
    T = h_states.shape[0] - 1
    B, H = dh_n.shape
    L = panels.shape[2]
    SX = dgi.shape[0]
    GH = dgi.shape[2]
    I = x.shape[2]
    n_chunks = (H + chunk_units - 1) // chunk_units
    n_pack_ih = pack_items(panels_ih.shape[0]) if chunked else 0
    n_step_chunks = (T + SX - 1) // SX
    block = product_claims.shape[0] // max(1, 2 * n_step_chunks)
    for w in prange(n_workers):
        dh_carry = np.empty((B, (chunk_units + L - 1) // L * L), dh_n.dtype)
        packed_a = gemm_a_buffer(dgi[0])
        for i in range(n_chunks):
            c = claim_in_order(claims, 0, n_chunks, w, n_workers, i)
            if c >= 0:
                t0, n_tiles = _tile_span(*_unit_span(c, chunk_units, H), L)
                pack_columns(w_hh, panels, t0, t0 + n_tiles)
                finish(done, 0)
        if n_pack_ih > 0:
            _claim_packing(w_ih, False, panels_ih, claims[(T + 2) * n_chunks:], done, 0, w, n_workers)
        wait_all(done, 0, n_chunks + n_pack_ih)
        n_slices = (B + batch_rows - 1) // batch_rows if batch_rows > 0 else 0
        dh_rows = np.empty((B, (H + L - 1) // L * L), dh_n.dtype) if batch_rows > 0 else dh_carry
        for phase in range(1, T + 2):
            p = phase - 1
            t = T - 1 - p
            if batch_rows > 0:
                if t < 0 or t % SX != 0:
                    continue
                j = t // SX                 # the chunk of steps t..: each slice's steps (and dh0 after chunk 0)
                for i in range(n_slices):
                    c = claim_in_order(claims[(j + 1) * n_chunks:], 0, n_slices, w, n_workers, i)
                    if c >= 0:
                        b0 = c * batch_rows
                        for q in range(T - min(T, t + SX), T - t + (1 if t == 0 else 0)):
                            _step_back_rows(kind, q, 0, H, b0, min(B, b0 + batch_rows), panels, dh_n, dh_direct,
                                            dh_rows, dy, lengths, gates, c_states, h_states, ghn, dgi, dgh, dc, dh0)
                        finish(done, j + 1)
                wait_all(done, j + 1, n_slices)
            else:
                for i in range(n_chunks):
                    c = claim_in_order(claims, phase, n_chunks, w, n_workers, i)
                    if c >= 0:
                        u0, n = _unit_span(c, chunk_units, H)
                        _step_back_rows(kind, p, u0, n, 0, B, panels, dh_n, dh_direct, dh_carry, dy, lengths, gates,
                                        c_states, h_states, ghn, dgi, dgh, dc, dh0)
                        finish(done, phase)
                wait_all(done, phase, n_chunks)
            if chunked and t >= 0 and t % SX == 0:       # the chunk of steps t.. is done: its products
                j = t // SX
                rows = (min(T, t + SX) - t) * B
                x_rows, h_rows = x.reshape((-1, I))[t * B:t * B + rows], h_states.reshape((-1, H))[t * B:t * B + rows]
                n_px = pack_items(panels_x.shape[0])
                _claim_packing(x_rows, False, panels_x, product_claims[2 * j * block:], product_done, 2 * j, w,
                               n_workers)
                _claim_packing(h_rows, False, panels_h, product_claims[2 * j * block + n_px:], product_done, 2 * j,
                               w, n_workers)
                wait_all(product_done, 2 * j, n_px + pack_items(panels_h.shape[0]))
                n_items = chunk_product_items(rows, I, GH, H, n_sums)
                for i in range(n_items):
                    c = claim_in_order(product_claims[(2 * j + 1) * block:], 0, n_items, w, n_workers, i)
                    if c >= 0:
                        _chunk_products(c, rows, t, x, panels_ih, panels_x, h_states, panels_h, dgi, dgh,
                                        dx, dw_ih, dw_hh, db, n_sums, packed_a, j == n_step_chunks - 1)
                        finish(product_done, 2 * j + 1)
                wait_all(product_done, 2 * j + 1, n_items)


# ----------------------------------------------------------------------------- GRU of Cho et al.
# n = tanh(xp_n + (r h) W_hn^T + b_hn) needs r of every unit before the product of gate n,
# so each step has two phases (two syncs): r, z and r*h; then n and h'.

@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def forward_gru_cho(xp, w_hh, panels, hh_ready, b_hh, h_states, lengths, y, gates, rh, chunk_units, claims, done,
                    n_workers):
    """``gates`` holds r, z, n of each step: (T, B, 3H) when saving, (1, B, 3H) otherwise. Phase 0
    packs W_hh into ``panels`` (3*NT, H, L) as forward does (unless ``hh_ready``); phases 2t + 1
    and 2t + 2 are step t."""
    T, B = xp.shape[0], xp.shape[1]
    H = w_hh.shape[1]
    S, SG = h_states.shape[0], gates.shape[0]
    L = panels.shape[2]
    NT = panels.shape[0] // 3
    n_chunks = (H + chunk_units - 1) // chunk_units
    gs = (chunk_units + L - 1) // L * L
    for w in prange(n_workers):
        gh = np.empty((B, 2 * gs), xp.dtype)
        for phase in range(2 * T + 1):
            p = phase - 1
            t = max(p, 0) // 2
            h_in, h_out, g = h_states[t % S], h_states[(t + 1) % S], gates[t % SG]
            for i in range(n_chunks):
                c = claim_in_order(claims, phase, n_chunks, w, n_workers, i)
                if c < 0:
                    continue
                u0, n = _unit_span(c, chunk_units, H)
                t0, n_tiles = _tile_span(u0, n, L)
                if phase == 0:
                    for gate in range(3 if not hh_ready else 0):
                        pack_rows(w_hh, 3, H, panels, gate * NT + t0, gate * NT + t0 + n_tiles)
                elif p % 2 == 0:    # r, z and r*h
                    panel_product(panels, 2, NT, t0, n_tiles, h_in, B, gh, gs, t)
                    for b in range(B):
                        for uu in range(n):
                            u = u0 + uu
                            r, z = gru_cell.gates_rz(xp[t, b, u] + gh[b, uu] + b_hh[u],
                                                     xp[t, b, H + u] + gh[b, gs + uu] + b_hh[H + u])
                            g[b, u], g[b, H + u] = r, z
                            rh[b, u] = r * h_in[b, u]
                else:               # n from (r h) W_hn^T, then h'
                    panel_product(panels[2 * NT:], 1, NT, t0, n_tiles, rh, B, gh, gs, t)
                    for b in range(B):
                        active = t < lengths[b]
                        for uu in range(n):
                            u = u0 + uu
                            if active:
                                nn = gru_cell.candidate(xp[t, b, 2 * H + u] + gh[b, uu] + b_hh[2 * H + u])
                                h = gru_cell.update(g[b, H + u], nn, h_in[b, u])
                                g[b, 2 * H + u] = nn
                                h_out[b, u], y[t, b, u] = h, h
                            else:
                                g[b, u] = g[b, H + u] = g[b, 2 * H + u] = 0
                                h_out[b, u], y[t, b, u] = h_in[b, u], 0
                finish(done, phase)
            wait_all(done, phase, n_chunks)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def backward_gru_cho(panels_rz, panels_n, dy, dh_n, lengths, gates, h_states, dg_rz, da_n, dh_direct, dh0,
                     chunk_units, claims, done, n_workers):
    """panels_rz, panels_n: the columns of W_h{r,z} (2H, H) and W_hn (H, H) packed by unit tiles
    (pack_columns); dg_rz (T, B, 2H) and da_n (T, B, H) receive the pre-activation gradients (for
    gate n the h-side one equals the x-side one)."""
    T = h_states.shape[0] - 1
    B, H = dh_n.shape
    L = panels_n.shape[2]
    n_chunks = (H + chunk_units - 1) // chunk_units
    for w in prange(n_workers):
        acc = np.empty((B, (chunk_units + L - 1) // L * L), dh_n.dtype)
        for p in range(2 * T + 1):
            t = T - 1 - p // 2
            for i in range(n_chunks):
                c = claim_in_order(claims, p, n_chunks, w, n_workers, i)
                if c < 0:
                    continue
                u0, n = _unit_span(c, chunk_units, H)
                if p % 2 == 0:      # dh_t, then da_z, da_n and the direct part of dh_{t-1}
                    _incoming_dh(p == 0, panels_rz, dg_rz[t + 1 if p > 0 else 0], dh_n, dh_direct, u0, n, acc, t)
                    if p == 2 * T:
                        _copy_columns(acc, 0, dh0, u0, n)
                    else:
                        dy_t = dy[t % dy.shape[0]]
                        for b in range(B):
                            active = t < lengths[b]
                            for uu in range(n):
                                u = u0 + uu
                                if active:
                                    dh = acc[b, uu] + dy_t[b, u]
                                    da_z, dan, dh_dir = gru_cell.backward_zn(
                                        dh, gates[t, b, H + u], gates[t, b, 2 * H + u], h_states[t, b, u])
                                    dg_rz[t, b, H + u], da_n[t, b, u], dh_direct[b, u] = da_z, dan, dh_dir
                                else:
                                    dg_rz[t, b, u] = dg_rz[t, b, H + u] = da_n[t, b, u] = 0
                                    dh_direct[b, u] = acc[b, uu]
                else:               # d(r h) = da_n W_hn, then da_r and the rest of dh_{t-1}
                    t0, n_tiles = _tile_span(u0, n, L)
                    panel_product(panels_n, 1, panels_n.shape[0], t0, n_tiles, da_n[t], B, acc, 0, t)
                    for b in range(B):
                        if t < lengths[b]:
                            for uu in range(n):
                                u = u0 + uu
                                da_r, dh_r = gru_cell.backward_reset(acc[b, uu], gates[t, b, u], h_states[t, b, u])
                                dg_rz[t, b, u] = da_r
                                dh_direct[b, u] += dh_r
                finish(done, p)
            wait_all(done, p, n_chunks)


# ----------------------------------------------------------------------------- LSTM with projections
# h_t = m_t W_hr^T (P < H outputs, torch's proj_size) needs m_t = o tanh(c_t) of every unit before the
# projection, so each step has two phases, as Cho's GRU: over chunks of the H units the recurrent
# product h_{t-1} W_hh^T (K = P) and the cell, then over chunks of the P outputs the projection.
# Backward mirrors it: over chunks of P, dL/dh_t = dG_{t+1} W_hh + dy_t; over chunks of H,
# dL/dm_t = dL/dh_t W_hr and the cell's backward.

@njit(cache=True, error_model="numpy", _nrt=False)
def _claim(claims, stride, phase, n_items, w, n_workers, i):
    """claim_in_order for phases of different chunk counts: ``stride`` counters a phase."""
    return claim_in_order(claims[phase * stride:], 0, n_items, w, n_workers, i)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def forward_lstm_projected(xp, w_hh, panels_hh, hh_ready, w_hr, panels_hr, hr_ready, b_hh, h_states, c_states, ms,
                           lengths, y, gates, units_h, units_p, claims, done, n_workers):
    """xp (T, B, 4H) the input projection; w_hh (4H, P), w_hr (P, H); h_states (S, B, P), c_states (S, B, H)
    (S = T + 1 when saving, else 2); ms (SM, B, H): m_t in slot t % SM (SM = T when saving, else 1);
    y (T, B, P). Phase 0 packs W_hh's rows into ``panels_hh`` (4*NT, P, L) by tiles of units and W_hr's
    into ``panels_hr`` (NTP, H, L) by tiles of outputs (each unless packed by an earlier call); then step
    t is phase 2t + 1 (chunks of ``units_h`` units: gates, c_t, m_t) and phase 2t + 2 (chunks of
    ``units_p`` outputs: h_t).
    claims: (2T + 1) * (n_h + n_p) counters, done: one a phase."""
    T, B = xp.shape[0], xp.shape[1]
    P, H = w_hr.shape
    S, SM = h_states.shape[0], ms.shape[0]
    L = panels_hh.shape[2]
    NT, NTP = panels_hh.shape[0] // 4, panels_hr.shape[0]
    n_h, n_p = (H + units_h - 1) // units_h, (P + units_p - 1) // units_p
    stride = n_h + n_p
    gs = (units_h + L - 1) // L * L
    for w in prange(n_workers):
        gh = np.empty((B, 4 * gs), xp.dtype)
        hp = np.empty((B, (units_p + L - 1) // L * L), xp.dtype)
        for phase in range(2 * T + 1):
            t = max(phase - 1, 0) // 2
            n_items = stride if phase == 0 else n_h if phase % 2 == 1 else n_p
            for i in range(n_items):
                c = _claim(claims, stride, phase, n_items, w, n_workers, i)
                if c < 0:
                    continue
                if phase == 0:
                    if c < n_h and not hh_ready:
                        t0, n_tiles = _tile_span(*_unit_span(c, units_h, H), L)
                        for g in range(4):
                            pack_rows(w_hh, 4, H, panels_hh, g * NT + t0, g * NT + t0 + n_tiles)
                    elif c >= n_h and not hr_ready:
                        t0, n_tiles = _tile_span(*_unit_span(c - n_h, units_p, P), L)
                        pack_rows(w_hr, 1, P, panels_hr, t0, t0 + n_tiles)
                elif phase % 2 == 1:    # gates, c_t and m_t (0 past a sequence's length: _lstm_chunk)
                    u0, n = _unit_span(c, units_h, H)
                    t0, n_tiles = _tile_span(u0, n, L)
                    panel_product(panels_hh, 4, NT, t0, n_tiles, h_states[t % S], B, gh, gs, t)
                    m_t = ms[t % SM]
                    _lstm_chunk(t, u0, n, gs, xp[t], gh, b_hh, m_t, m_t, c_states[t % S], c_states[(t + 1) % S],
                                lengths, m_t, gates[t % gates.shape[0]])
                else:                   # h_t = m_t W_hr^T
                    u0, n = _unit_span(c, units_p, P)
                    t0, n_tiles = _tile_span(u0, n, L)
                    panel_product(panels_hr, 1, NTP, t0, n_tiles, ms[t % SM], B, hp, 0, t)
                    h_in, h_out = h_states[t % S], h_states[(t + 1) % S]
                    for b in range(B):
                        active = t < lengths[b]
                        for k in range(n):
                            u = u0 + k
                            h_out[b, u] = hp[b, k] if active else h_in[b, u]
                            y[t, b, u] = hp[b, k] if active else 0
                finish(done, phase)
            wait_all(done, phase, n_items)


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def backward_lstm_projected(w_hh, panels_hh, w_hr, panels_hr, dy, dh_n, lengths, gates, c_states, dg, dhs, dh_direct,
                            dm_direct, no_dy, dc, dh0, units_h, units_p, claims, done, n_workers):
    """Phase 0 packs W_hh's columns into ``panels_hh`` (NTP, 4H, L) by tiles of its P columns and
    W_hr's into ``panels_hr`` (NT, P, L) by tiles of its H columns. Then step t (T-1 down to 0) is
    phase 2(T-1-t) + 1 over chunks of the P outputs: dhs[t] = dL/dh_t = dg[t+1] W_hh (dh_n at the last
    step) + what passes through the padding (dh_direct) + dy_t (0 past a sequence's length), and phase
    2(T-1-t) + 2 over chunks of the H units: dL/dm_t = dhs[t] W_hr, the cell's backward into dg[t] and
    dc. The last phase, 2T + 1, gives dh0. dg (T, B, 4H), dhs (T, B, P); dh_direct (B, P) and dm_direct
    (B, H) are scratch, no_dy (1, B, H) zeros; dc (B, H) enters as dL/dc_n and leaves as dL/dc_0."""
    T = dg.shape[0]
    B, P = dh_n.shape
    H = dc.shape[1]
    L = panels_hh.shape[2]
    n_h, n_p = (H + units_h - 1) // units_h, (P + units_p - 1) // units_p
    stride = n_h + n_p
    for w in prange(n_workers):
        acc = np.empty((B, (max(units_h, units_p) + L - 1) // L * L), dc.dtype)
        for phase in range(2 * T + 2):
            q = phase - 1
            t = T - 1 - max(q, 0) // 2
            n_items = stride if phase == 0 else n_p if q % 2 == 0 else n_h
            for i in range(n_items):
                c = _claim(claims, stride, phase, n_items, w, n_workers, i)
                if c < 0:
                    continue
                if phase == 0:
                    if c < n_p:
                        t0, n_tiles = _tile_span(*_unit_span(c, units_p, P), L)
                        pack_columns(w_hh, panels_hh, t0, t0 + n_tiles)
                    else:
                        t0, n_tiles = _tile_span(*_unit_span(c - n_p, units_h, H), L)
                        pack_columns(w_hr, panels_hr, t0, t0 + n_tiles)
                elif q % 2 == 0:        # dL/dh_t, over chunks of the P outputs
                    u0, n = _unit_span(c, units_p, P)
                    _incoming_dh(q == 0, panels_hh, dg[t + 1 if q > 0 else 0], dh_n, dh_direct, u0, n, acc, t)
                    if t < 0:
                        _copy_columns(acc, 0, dh0, u0, n)
                    else:
                        dy_t = dy[t % dy.shape[0]]
                        for b in range(B):
                            active = t < lengths[b]
                            for k in range(n):
                                u = u0 + k
                                dhs[t, b, u] = acc[b, k] + dy_t[b, u] if active else 0
                                dh_direct[b, u] = 0 if active else acc[b, k]
                else:                   # dL/dm_t, then the cell's backward
                    u0, n = _unit_span(c, units_h, H)
                    t0, n_tiles = _tile_span(u0, n, L)
                    panel_product(panels_hr, 1, panels_hr.shape[0], t0, n_tiles, dhs[t], B, acc, 0, t)
                    _lstm_chunk_backward(t, u0, n, acc, no_dy[t % no_dy.shape[0]], lengths, gates[t], c_states[t],
                                         c_states[t + 1], dg[t % dg.shape[0]], dm_direct, dc)
                finish(done, phase)
            wait_all(done, phase, n_items)
