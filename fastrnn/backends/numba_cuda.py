"""CUDA backend ("cuda"): one persistent Numba CUDA kernel per direction, cuBLAS GEMMs around it; or, for
large batches, a GEMM and a pointwise kernel per step (the stepwise path).

    forward:  gx = x W_ih^T + b_ih                 one GEMM over all T*B rows (CuPy -> cuBLAS, exact fp32)
              kernel: all T steps, one grid-wide sync per step (two for Cho's GRU)
    backward: kernel: the reverse loop carrying dh (and dc), reusing the saved activations
              dx = dG_x W_ih, dW_ih = dG_x^T x, dW_hh = dG_h^T h_prev, biases: column sums (GEMMs)

Work split (see plan and _cuda_kernels.py): a unit group of U hidden units with all their gates is one
block, U = ceil(H / #SMs) but at least enough units for 32 gate rows forward (8 for an LSTM) and 8
backward, so there are at most as many unit groups as multiprocessors; when the batch
has several tiles of BT sequences, further blocks ("batch groups", as many as can be co-resident in a
cooperative launch) take the other tiles of the same units in parallel. A unit group's rows of
W_hh (forward) or columns (backward) live in shared memory when they fit (up to 227 KiB per block
on an H100/H200: every fp32 LSTM with H <= 1024 on 132 SMs); otherwise the same kernel reads them
from L2 ("from_l2"), still one launch for the whole sequence. The packing of W_hh per block is one
small GPU copy per call, so weights changed between calls are always seen.

Stepwise path (stepwise(); config.CUDA_STEPWISE): for large batches of large steps, where the persistent
kernels' on-chip products run far below a GEMM's rate (and wherever a batch row of them does not fit in
shared memory), each step is a cuBLAS GEMM of the whole batch (forward h_{t-1} W_hh^T, backward
dG_{t+1} W_hh; Cho's GRU two of them) and one pointwise kernel, a thread per (sequence, unit), launched
from Python in order on CuPy's stream; the saved activations are the same, so either direction may take
either path. An LSTM with projections (w_hr) always runs stepwise: h_t = m_t W_hr^T is one more GEMM
a step (_forward_projected, _backward_projected).

Arrays: CuPy arrays are used in place; NumPy arrays given to backend="cuda" are copied to the GPU
and the results copied back. Under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1) everything
stays in NumPy and the grid is a single block, which is how CI checks these kernels without a GPU.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
from numba import cuda

from .. import config
from . import _cuda_kernels as kernels

SIMULATED = kernels.SIMULATED
_CODES = {("lstm", None): kernels.LSTM, ("gru", True): kernels.GRU, ("gru", False): kernels.GRU_CHO,
          ("rnn", "tanh"): kernels.RNN_TANH, ("rnn", "relu"): kernels.RNN_RELU}
# threads per block and lanes per dot product: a warp per row group on a GPU; small in the
# simulator, where every thread is a Python thread
_THREADS, _LANES = (32, 8) if SIMULATED else (256, 32)
_STEP_THREADS = 32 if SIMULATED else 256     # threads per block of the stepwise kernels (a thread per pair)
_STATIC_SHARED_LIMIT = 48 * 1024     # above this a kernel must opt in to more dynamic shared memory
# The simulator runs one block (all units, one batch group) unless tests/sim_grid.py lets its blocks run
# at once: then these give the units per block and the batch groups, as on a GPU
SIMULATED_UNITS: int = 0             # 0: all H units in one block
SIMULATED_BATCH_GROUPS: int = 1


def xp_module():
    """The array module the kernels take: CuPy on a GPU, NumPy in the simulator."""
    if SIMULATED:
        return np
    import cupy
    return cupy


@lru_cache(maxsize=None)
def _device_limits():
    """(multiprocessors, shared-memory bytes a block may opt in to)."""
    if SIMULATED:
        return 1, 1 << 30
    device = cuda.get_current_device()
    return device.MULTIPROCESSOR_COUNT, device.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


@dataclasses.dataclass(frozen=True)
class Split:
    """How one kernel launch divides the work; see _cuda_kernels.build."""
    units: int          # hidden units per block
    blocks: int
    batch_tile: int
    row_tile: int
    on_chip: bool       # weights in shared memory (else read from L2)
    shared_bytes: int


def plan(code, backward, B, H, itemsize):
    """The work split of one persistent launch for this shape (deterministic: it picks the compiled
    variant), or None where the persistent kernels do not fit or are not asked for (the stepwise path)."""
    if stepwise(B, H):
        return None
    G = kernels.NUM_GATES[code]
    sms, shared_limit = _device_limits()
    # one block per multiprocessor at most; and enough rows per block (32 forward, 8 backward) that
    # the row groups, not k-splits and their extra sums, fill the block: fewer, busier blocks also
    # make the per-step grid sync cheaper
    min_units = 8 if backward else -(-32 // G)
    if SIMULATED:
        units = min(H, SIMULATED_UNITS or H)
    else:
        units = min(H, max(-(-H // sms), min_units))
    blocks = -(-H // units)
    rows, K = (units, G * H) if backward else (G * units, H)
    row_base = units if (backward or code == kernels.GRU_CHO) else rows
    # 32 bytes of each per-thread array per sequence of the tile: float64 tiles of 8 would leave
    # registers for local memory (ptxas: a 256-byte stack frame)
    if config.CUDA_BATCH_TILE not in (0, 1, 2, 4, 8, 16, 32):
        raise ValueError(f"FASTRNN_CUDA_BATCH_TILE must be 0 (automatic) or a power of 2 up to 32, "
                         f"got {config.CUDA_BATCH_TILE}")
    batch_tile = 1 if B == 1 else config.CUDA_BATCH_TILE or 32 // itemsize
    # up to 4 rows a thread, with at most 4 * 32 bytes of accumulators (a wider batch tile, fewer rows)
    row_tile = next(r for r in (4, 2, 1) if row_base % r == 0 and (r * batch_tile <= 128 // itemsize or r == 1))
    for on_chip in (True, False):
        tile = batch_tile
        while tile >= 1:
            size = kernels.shared_elements(rows, K, tile, row_tile, _LANES, _THREADS, on_chip) * itemsize
            if size <= shared_limit:
                return Split(units, blocks, tile, row_tile, on_chip, size)
            tile //= 2
    return None     # one batch row of the recurrent product does not fit in shared memory: stepwise


def _kernel(code, backward, split, dtype):
    built = kernels.build(code, split.batch_tile, split.row_tile, _LANES, _THREADS, np.dtype(dtype).name,
                          config.CUDA_MAX_REGISTERS)
    on_chip, from_l2 = built["backward" if backward else "forward"]
    return on_chip if split.on_chip else from_l2


_opted_in: set = set()


def batch_groups(compiled, split, tiles):
    """Blocks per unit group of a launch of ``compiled`` over ``tiles`` batch tiles: as many as the GPU
    holds at once with the other unit groups (config.CUDA_BATCH_GROUPS caps them)."""
    if tiles <= 1 or config.CUDA_BATCH_GROUPS == 1:
        return 1
    resident = compiled.max_cooperative_grid_blocks(_THREADS, split.shared_bytes)
    return max(1, min(tiles, resident // split.blocks, config.CUDA_BATCH_GROUPS or tiles))


def _launch(kernel, split, args, B):
    """Launch on CuPy's current stream, with as many batch groups as can be co-resident."""
    tiles = -(-B // split.batch_tile)
    if SIMULATED:
        groups = max(1, min(tiles, SIMULATED_BATCH_GROUPS))
        kernel[split.blocks * groups, _THREADS, 0, split.shared_bytes](*args)
        return
    import cupy
    args = [cuda.as_cuda_array(a, sync=False) if isinstance(a, cupy.ndarray) else a for a in args]
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    key = (id(compiled), split.shared_bytes)
    if key not in _opted_in:
        if split.shared_bytes > _STATIC_SHARED_LIMIT:
            from numba.cuda.cudadrv.driver import binding, driver
            function = compiled._codelibrary.get_cufunc()
            attribute = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            driver.cuKernelSetAttribute(attribute, split.shared_bytes, function.handle, function.device.id)
        _opted_in.add(key)
    groups = batch_groups(compiled, split, tiles)
    kernel[split.blocks * groups, _THREADS, _cupy_stream(), split.shared_bytes](*args)


def _cupy_stream():
    """CuPy's current stream as Numba's (the GEMMs' stream, so that launches and GEMMs run in order)."""
    import cupy
    pointer = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(pointer) if pointer else cuda.default_stream()


def stepwise(B, H):
    """Whether a call of this shape takes the stepwise path by choice (config.CUDA_STEPWISE; plan also
    sends there the shapes whose persistent kernels do not fit)."""
    mode = config.CUDA_STEPWISE
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"FASTRNN_CUDA_STEPWISE must be 'auto', 'always' or 'never', got {mode!r}")
    if mode != "auto":
        return mode == "always"
    return B >= config.CUDA_STEPWISE_MIN_BATCH and B * H * H >= config.CUDA_STEPWISE_MIN_WORK


def _step_launcher(kernel, pairs, arrays):
    """launch(*scalars): ``kernel`` over ``pairs`` threads with arguments (*scalars, *arrays), on CuPy's
    current stream (the cuBLAS GEMMs' stream, so each step's launches run in order); the arrays are
    converted once, not every step."""
    blocks = -(-pairs // _STEP_THREADS)
    if SIMULATED:
        return lambda *scalars: kernel[blocks, _STEP_THREADS](*scalars, *arrays)
    arrays = [cuda.as_cuda_array(a, sync=False) for a in arrays]
    configured = kernel[blocks, _STEP_THREADS, _cupy_stream()]
    return lambda *scalars: configured(*scalars, *arrays)


def _forward_stepwise(code, seq, gx, b_hh, hs, cs, y, acts, rhs, lengths, save):
    """All T steps, each a GEMM h_{t-1} W_hh^T (cuBLAS) and the pointwise kernel (Cho's GRU: twice, the
    second GEMM on r * h_{t-1})."""
    xp = xp_module()
    T, B, H, dtype = seq.T, seq.B, seq.H, seq.dtype
    G = kernels.NUM_GATES[code]
    kernel = kernels.build_stepwise(code, np.dtype(dtype).name)["forward"]
    cho = code == kernels.GRU_CHO
    w_h = seq.w_hh[:2 * H].T if cho else seq.w_hh.T          # h_{t-1} -> its gates (Cho: r, z)
    gh = xp.empty((B, 2 * H if cho else G * H), dtype)
    step = _step_launcher(kernel, B * H, (gx, gh, b_hh, hs, cs, y, acts, rhs, lengths))
    if cho:
        w_n, gh_n = seq.w_hh[2 * H:].T, xp.empty((B, H), dtype)
        step_n = _step_launcher(kernel, B * H, (gx, gh_n, b_hh, hs, cs, y, acts, rhs, lengths))
    for t in range(T):
        xp.matmul(hs[t], w_h, out=gh)
        step(t, 0, save)
        if cho:
            xp.matmul(rhs[t], w_n, out=gh_n)
            step_n(t, 1, save)


def _backward_stepwise(code, seq, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0):
    """The reverse loop, each step a GEMM dG_{t+1} W_hh (cuBLAS) and the pointwise kernel (Cho's GRU:
    dG's gates r, z first, then da_n W_hn for gate r); a last launch gives dh0."""
    xp = xp_module()
    T, B, H, dtype = seq.T, seq.B, seq.H, seq.dtype
    cho = code == kernels.GRU_CHO
    k_rec = 2 * H if cho else seq.w_hh.shape[0]
    rec = xp.empty((B, H), dtype)
    step = _step_launcher(kernels.build_stepwise(code, np.dtype(dtype).name)["backward"], B * H,
                          (rec, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0))
    for t in range(T - 1, -2, -1):           # t = -1: dh0
        have_rec = t < T - 1
        if have_rec:
            xp.matmul(dgh[t + 1, :, :k_rec], seq.w_hh[:k_rec], out=rec)
        step(t, 0, int(have_rec))
        if cho and t >= 0:
            xp.matmul(dgh[t, :, 2 * H:], seq.w_hh[2 * H:], out=rec)
            step(t, 1, 1)


def _forward_projected(seq, gx, b_hh, hs, cs, y, acts, ms, lengths, save):
    """LSTM with projections (w_hr (P, H); h of size P), stepwise: each step a GEMM h_{t-1} W_hh^T, the cell's
    step up to m_t = o tanh(c_t), a GEMM h_t = m_t W_hr^T straight into hs[t + 1], and a kernel that carries
    h past each sequence's length and writes y_t."""
    xp = xp_module()
    T, B, H, P = seq.T, seq.B, seq.H, seq.P
    built = kernels.build_stepwise(kernels.LSTM, np.dtype(seq.dtype).name)
    gh = xp.empty((B, 4 * H), seq.dtype)
    cell_step = _step_launcher(built["projected_cell_step"], B * H, (gx, gh, b_hh, ms, cs, acts, lengths))
    project_step = _step_launcher(built["project_step"], B * P, (hs, y, lengths))
    for t in range(T):
        xp.matmul(hs[t], seq.w_hh.T, out=gh)
        cell_step(t, save)
        xp.matmul(ms[t + 1], seq.w_hr.T, out=hs[t + 1])
        project_step(t)


def _backward_projected(seq, dy, cs, acts, ms, lengths, dgh, carry_h, carry_c, dh0):
    """The reverse loop of an LSTM with projections: each step dL/dh_t (size P: the carried part, dG_{t+1}
    W_hh and dy_t) into dhs[t], a GEMM dL/dm_t = dhs[t] W_hr, then the cell's backward step on it (as the
    plain LSTM's, with dL/dm_t in the place of its dh: its own carried-dh and dy arrays are zeros that stay
    zero); returns dW_hr = dhs^T m over all steps."""
    xp = xp_module()
    T, B, H, P, dtype = seq.T, seq.B, seq.H, seq.P, seq.dtype
    built = kernels.build_stepwise(kernels.LSTM, np.dtype(dtype).name)
    rec, dm, dhs = xp.empty((B, P), dtype), xp.empty((B, H), dtype), xp.empty((T, B, P), dtype)
    no_dy, no_carry = xp.zeros((1, B, H), dtype), xp.zeros((B, H), dtype)
    dh_step = _step_launcher(built["projected_dh"], B * P, (rec, dy, carry_h, dhs, lengths, dh0))
    # (hs: any (., B, H) array: the LSTM's step reads c and its gates, not h; dgx_n: the GRU's only)
    cell_step = _step_launcher(built["backward"], B * H, (dm, no_dy, cs, cs, acts, lengths, dgh, no_dy, no_carry,
                                                          carry_c, dh0))
    for t in range(T - 1, -2, -1):           # t = -1: dh0
        have_rec = t < T - 1
        if have_rec:
            xp.matmul(dgh[t + 1], seq.w_hh, out=rec)
        dh_step(t, int(have_rec))
        if t >= 0:
            xp.matmul(dhs[t], seq.w_hr, out=dm)
            cell_step(t, 0, 1)
    return dhs.reshape(T * B, P).T @ ms[1:].reshape(T * B, H)


def _pack_rows(xp, w_hh, G, H, units, blocks):
    """(G*H, H) -> (blocks, G*units, H): block q gets rows g*H + q*units + u, zero past H."""
    padded = xp.zeros((G, blocks * units, H), w_hh.dtype)
    padded[:, :H] = w_hh.reshape(G, H, H)
    return xp.ascontiguousarray(padded.reshape(G, blocks, units, H).transpose(1, 0, 2, 3)).reshape(
        blocks, G * units, H)


def _pack_columns(xp, w_hh, G, H, units, blocks):
    """(G*H, H) -> (blocks, units, G*H): block q gets columns q*units + u of W_hh, zero past H."""
    padded = xp.zeros((blocks * units, G * H), w_hh.dtype)
    padded[:H] = w_hh.T
    return padded.reshape(blocks, units, G * H)


def _on_host(seq):
    return not SIMULATED and isinstance(seq.x, np.ndarray)


def _to_device(xp, seq):
    arrays = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "w_hr")
    return dataclasses.replace(seq, **{name: xp.asarray(getattr(seq, name)) for name in arrays
                                       if getattr(seq, name) is not None})


def _host(values):
    return tuple(v.get() if v is not None and not isinstance(v, np.ndarray) else v for v in values)


def forward(seq, save):
    xp = xp_module()
    on_host = _on_host(seq)
    if on_host:
        seq = _to_device(xp, seq)
    code = _CODES[seq.cell, seq.variant]
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    G = kernels.NUM_GATES[code]
    gx = seq.x.reshape(T * B, I) @ seq.w_ih.T
    if seq.b_ih is not None:
        gx += seq.b_ih
    gx = gx.reshape(T, B, G * H)
    b_hh = seq.b_hh if seq.b_hh is not None else xp.zeros(G * H, dtype)
    lengths = xp.asarray(seq.lengths if seq.lengths is not None else np.full(B, T), dtype=np.int32)
    hs = xp.empty((T + 1, B, seq.P), dtype)         # (h of size P: the LSTM's projections, else H)
    hs[0] = seq.h0
    y = xp.empty((T, B, seq.P), dtype)
    cs = xp.empty((T + 1 if save else 1, B, H), dtype)
    if seq.cell == "lstm":
        cs[0] = seq.c0
    saved_per_unit = kernels.NUM_SAVED[code]
    acts = xp.empty((T if save else 1, B, max(saved_per_unit, 1) * H), dtype)
    rhs = xp.empty((T, B, H) if code == kernels.GRU_CHO else (1, 1, 1), dtype)
    ms = None if seq.w_hr is None else xp.zeros((T + 1, B, H), dtype)    # m_t = o tanh(c_t) in slot t + 1
    split = None if ms is not None else plan(code, False, B, H, np.dtype(dtype).itemsize)
    if ms is not None:
        _forward_projected(seq, gx, b_hh, hs, cs, y, acts, ms, lengths, 1 if save else 0)
    elif split is None:
        _forward_stepwise(code, seq, gx, b_hh, hs, cs, y, acts, rhs, lengths, 1 if save else 0)
    else:
        w_packed = _pack_rows(xp, seq.w_hh, G, H, split.units, split.blocks)
        _launch(_kernel(code, False, split, dtype), split,
                (w_packed, gx, b_hh, hs, cs, y, acts, rhs, lengths, 1 if save else 0), B)
    h_n = hs[T].copy()
    c_n = cs[T if save else 0].copy() if seq.cell == "lstm" else None
    saved = dict(seq=seq, hs=hs, cs=cs, acts=acts, rhs=rhs, ms=ms, lengths=lengths) if save else None
    if on_host:
        y, h_n, c_n = _host((y, h_n, c_n))
    return y, h_n, c_n, saved


def backward(seq, saved, dy, dh_n, dc_n):
    xp = xp_module()
    on_host = _on_host(seq)
    seq = saved["seq"]
    code = _CODES[seq.cell, seq.variant]
    T, B, I, H, dtype = seq.T, seq.B, seq.I, seq.H, seq.dtype
    G = kernels.NUM_GATES[code]
    dy = xp.asarray(dy) if dy is not None else xp.zeros((1, B, seq.P), dtype)   # one zero slot serves every step
    carry_h = xp.array(dh_n) if dh_n is not None else xp.zeros((B, seq.P), dtype)
    carry_c = xp.array(dc_n) if dc_n is not None else xp.zeros((B, H), dtype)
    hs, cs, acts, rhs, lengths = saved["hs"], saved["cs"], saved["acts"], saved["rhs"], saved["lengths"]
    dgh = xp.empty((T, B, G * H), dtype)
    dgx_n = xp.empty((T, B, H) if code == kernels.GRU else (1, 1, 1), dtype)
    dh0 = xp.empty((B, seq.P), dtype)
    ms = saved.get("ms")
    split = None if ms is not None else plan(code, True, B, H, np.dtype(dtype).itemsize)
    dw_hr = None
    if ms is not None:
        dw_hr = _backward_projected(seq, dy, cs, acts, ms, lengths, dgh, carry_h, carry_c, dh0)
    elif split is None:
        _backward_stepwise(code, seq, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0)
    else:
        w_packed = _pack_columns(xp, seq.w_hh, G, H, split.units, split.blocks)
        _launch(_kernel(code, True, split, dtype), split,
                (w_packed, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0), B)
    # whole-sequence GEMMs; the x-side gradients differ from the h-side ones only in the GRU's gate n
    dgh = dgh.reshape(T * B, G * H)
    if code == kernels.GRU:
        dgx = dgh.copy()
        dgx[:, 2 * H:] = dgx_n.reshape(T * B, H)
    else:
        dgx = dgh
    h_prev = hs[:T].reshape(T * B, seq.P)
    if code == kernels.GRU_CHO:      # gate n's recurrent input is r * h_{t-1}
        dw_hh = xp.concatenate([dgh[:, :2 * H].T @ h_prev, dgh[:, 2 * H:].T @ rhs.reshape(T * B, H)])
    else:
        dw_hh = dgh.T @ h_prev
    dx = (dgx @ seq.w_ih).reshape(T, B, I)
    dw_ih = dgx.T @ seq.x.reshape(T * B, I)
    db_ih = dgx.sum(axis=0) if seq.b_ih is not None else None
    db_hh = dgh.sum(axis=0) if seq.b_hh is not None else None
    dc0 = carry_c if seq.cell == "lstm" else None
    results = (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
    return _host(results) if on_host else results
