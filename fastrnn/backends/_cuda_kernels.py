"""Persistent CUDA kernels for LSTM / GRU / RNN sequences (Numba CUDA), forward and backward.

Shapes (time-major; G gates, A saved activations per unit):
    gx   (T, B, G*H)   x W_ih^T + b_ih, one cuBLAS GEMM before the kernel
    hs   (T+1, B, H)   hs[0] = h0, hs[t+1] = h_t (carried unchanged past a sequence's length)
    cs   (T+1, B, H)   likewise for the LSTM cell state, or (1, B, H) updated in place (inference)
    y    (T, B, H)     h_t, zero past a sequence's length (PackedSequence semantics)
    acts (T, B, A)     saved gate activations: LSTM i,f,g,o; GRU r,z,n and gh_n = h W_hn^T + b_hn
    w    (nblk, R, K)  W_hh packed per block: forward R = G*U gate rows of the block's U units, K = H;
                       backward R = U columns of W_hh (rows of W_hh^T), K = G*H

Forward, one cooperative launch for all T steps. Block q owns hidden units [q*U, (q+1)*U) with all
their gates, so the gate math and c stay local and only h_t crosses blocks; its R rows of W_hh are
copied to shared memory once (or read from L2 when they do not fit):
    for t in 0..T-1:
        for each tile of BT sequences:
            v   <- h_{t-1}[tile]                  global -> shared
            pre <- W_rows v^T + b_hh[rows]        lanes split k (KL lanes), each thread a register
                                                  tile of RT rows x BT sequences, summed over the
                                                  lanes by a transposed butterfly of warp shuffles
            cell pointwise on (unit, sequence) pairs -> h_t, c_t, saved activations
                                                  (a thread's first pair's gx, b_hh, c loaded
                                                  before the product: prefetch)
        grid.sync()                               h_t is complete for every block
Backward is the mirror with W_hh[:, units] on chip, in reverse, carrying dh (and dc) per unit:
    dh_t = dy_t + dG_{t+1} W_hh[:, units] + direct terms;  cell backward -> dG_t
dG is written for every step; the weight gradients are whole-sequence GEMMs afterwards.
A grid may hold several blocks per unit group ("batch groups", see my_block): each takes its own
share of the batch tiles, with its own copy of the weights, so large batches run in parallel.
GRU with linear_before_reset=False (Cho et al.) needs r*h of every unit before its gate n: two
phases, two grid syncs per step, in both directions.

The stepwise kernels (build_stepwise) are the same cell step (cell_steps) on every (sequence, unit)
pair at once, a thread each, for one step after a cuBLAS GEMM has formed its recurrent products:
    forward_step:  gh = h_{t-1} W_hh^T (B, G*H)  ->  h_t, c_t, y_t, saved activations
    backward_step: rec = dG_{t+1} W_hh (B, H)    ->  dG_t, the carried dh and dc (t = -1: dh0)
and, for the LSTM with projections (w_hr (P, H): h of size P), the steps around two more GEMMs:
    projected_cell_step: gh  ->  c_t, m_t = o tanh(c_t)      (then a GEMM h_t = m_t W_hr^T)
    project_step:        h_t carried past a sequence's length, y_t
    projected_dh:        dL/dh_t (B, P)                      (then a GEMM dL/dm_t = dL/dh_t W_hr and
                                                              backward_step on it)

The simulator (NUMBA_ENABLE_CUDASIM=1) has no warp shuffles: the same lane exchanges go through
shared memory there, and it runs blocks one after another, so it can only check single-block grids
(tests/sim_grid.py runs them at once).
"""
from __future__ import annotations

import math
from functools import lru_cache

from numba import config as numba_config
from numba import cuda, float32, float64
from numba.extending import overload

from ..cells import _scalar
from ..cells import gru as gru_cell
from ..cells import lstm as lstm_cell
from ..cells import rnn as rnn_cell

SIMULATED = bool(numba_config.ENABLE_CUDASIM)

LSTM, GRU, GRU_CHO, RNN_TANH, RNN_RELU = range(5)
NUM_GATES = {LSTM: 4, GRU: 3, GRU_CHO: 3, RNN_TANH: 1, RNN_RELU: 1}
# saved activations per unit (RNN recovers its derivative from h_t itself)
NUM_SAVED = {LSTM: 4, GRU: 4, GRU_CHO: 3, RNN_TANH: 0, RNN_RELU: 0}


# The cells' activations on the GPU: libdevice's expf/tanhf (the CPU kernels use vectorisable
# polynomials instead; see cells/_scalar.py).
@overload(_scalar.sigmoid, target="cuda")
def _sigmoid_cuda(a):
    def impl(a):
        e = math.exp(-abs(a))
        return _scalar.ONE / (_scalar.ONE + e) if a >= 0 else e / (_scalar.ONE + e)
    return impl


@overload(_scalar.tanh, target="cuda")
def _tanh_cuda(a):
    return lambda a: math.tanh(a)


_FULL_MASK = 0xFFFFFFFF
STAGED_VALUES = 32  # values a thread of load_tile gathers before storing: 4 columns of a tile of 8


def backward_early(code):
    """Values prefetch_backward loads per thread (see there), and the size of its ``early`` array."""
    return NUM_SAVED[code] + 5


@lru_cache(maxsize=None)
def cell_steps(code):
    """The cell's step for one (sequence, unit) pair, forward and backward: the device functions that
    both kernel families share, the persistent ones (build) and the stepwise ones (build_stepwise),
    so that the cell's equations (cells/), its saved activations and its lengths are written once."""
    G, A = NUM_GATES[code], NUM_SAVED[code]
    relu = code == RNN_RELU
    cho = code == GRU_CHO

    @cuda.jit(device=True, inline="always")
    def save4(acts, t, b, H, unit, v0, v1, v2, v3):
        """acts[t, b, k*H + unit] = v_k: the four saved activations of one unit."""
        acts[t, b, unit] = v0
        acts[t, b, H + unit] = v1
        acts[t, b, 2 * H + unit] = v2
        acts[t, b, 3 * H + unit] = v3

    @cuda.jit(device=True, inline="always")
    def forward_pair(t, b, unit, phase, valid, h_prev, c_prev, x0, h0, x1, h1, x2, h2, x3, h3,
                     hs, cs, y, acts, rhs, save):
        """Step t of sequence b's unit: x_g, h_g are gate g's input part (x W_ih^T + b_ih) and recurrent
        part (h W_hh^T + b_hh; Cho's gate n: (r h) W_hn^T + b_hn) (gates past the cell's: unused),
        c_prev = c_{t-1} (LSTM); ``valid``: t is within the sequence's length (else h and c carry
        over and y is 0). Writes h_t, c_t, y_t (y None: none) and, with ``save``, the saved activations.
        Cho's GRU: phase 0 takes gates r, z and writes r * h_{t-1} (rhs), phase 1 gate n and h_t."""
        H = hs.shape[2]
        h = h_prev
        if code == LSTM:
            c_last = cs.shape[0] > 1
            h_new, c, i, f, g, o = lstm_cell.forward(x0 + h0, x1 + h1, x2 + h2, x3 + h3, c_prev)
            if valid:
                h = h_new
                cs[t + 1 if c_last else 0, b, unit] = c
                if save:
                    save4(acts, t, b, H, unit, i, f, g, o)
            elif c_last:
                cs[t + 1, b, unit] = c_prev
        elif code == GRU:
            h_new, r, z, n = gru_cell.forward(x0, x1, x2, h0, h1, h2, h_prev)
            if valid:
                h = h_new
                if save:
                    save4(acts, t, b, H, unit, r, z, n, h2)
        elif cho:
            ta = t if save else 0
            if phase == 0:      # gates r, z and r * h_{t-1} for the second product
                r, z = gru_cell.gates_rz(x0 + h0, x1 + h1)
                acts[ta, b, unit] = r
                acts[ta, b, H + unit] = z
                rhs[t, b, unit] = r * h_prev
                return
            n = gru_cell.candidate(x2 + h2)
            acts[ta, b, 2 * H + unit] = n
            if valid:
                h = gru_cell.update(acts[ta, b, H + unit], n, h_prev)
        else:
            h_new = rnn_cell.forward(x0 + h0, relu)
            if valid:
                h = h_new
        hs[t + 1, b, unit] = h
        if y is not None:
            y[t, b, unit] = h if valid else 0

    @cuda.jit(device=True, inline="always")
    def saved(early, first, acts, t, b, H, unit, a):
        """Saved activation a of a pair: prefetched (``first``) or from memory."""
        return early[2 + a] if first else acts[t, b, a * H + unit]

    @cuda.jit(device=True, inline="always")
    def backward_pair(t, b, unit, phase, first, valid, rec, early, dy, hs, cs, acts, dgh, dgx_n, carry_h, carry_c):
        """Step t of sequence b's unit in reverse, ``rec`` its recurrent gradient (dG_{t+1} W_hh; Cho's
        phase 1: da_n W_hn): phase 0 dh_t and the cell's backward (Cho: gates z, n) -> dG_t, the carried
        dh (its direct terms) and dc; phase 1 Cho's gate r. ``first``: take the pair's values from
        ``early`` (prefetch_backward) instead of memory."""
        H = hs.shape[2]
        if phase == 1:
            if valid:
                da_r, dh_r = gru_cell.backward_reset(rec, acts[t, b, unit], hs[t, b, unit])
                dgh[t, b, unit] = da_r
                carry_h[b, unit] += dh_r
            else:
                dgh[t, b, unit] = 0
            return
        dh = (early[0] if first else carry_h[b, unit]) + rec
        if not valid:           # an identity step: gradients pass through, no gate gradients
            for g in range(G):
                dgh[t, b, g * H + unit] = 0
            if code == GRU:
                dgx_n[t, b, unit] = 0
            carry_h[b, unit] = dh
            return
        dh += early[1] if first else dy[t % dy.shape[0], b, unit]
        if code == LSTM:
            da_i, da_f, da_g, da_o, dc_prev = lstm_cell.backward(
                dh, early[4 + A] if first else carry_c[b, unit], saved(early, first, acts, t, b, H, unit, 0),
                saved(early, first, acts, t, b, H, unit, 1), saved(early, first, acts, t, b, H, unit, 2),
                saved(early, first, acts, t, b, H, unit, 3), early[2 + A] if first else cs[t, b, unit],
                early[3 + A] if first else cs[t + 1, b, unit])
            dgh[t, b, unit] = da_i
            dgh[t, b, H + unit] = da_f
            dgh[t, b, 2 * H + unit] = da_g
            dgh[t, b, 3 * H + unit] = da_o
            carry_c[b, unit] = dc_prev
            carry_h[b, unit] = 0
        elif code == GRU:
            da_r, da_z, da_n, dgh_n, dh_direct = gru_cell.backward(
                dh, saved(early, first, acts, t, b, H, unit, 0), saved(early, first, acts, t, b, H, unit, 1),
                saved(early, first, acts, t, b, H, unit, 2), saved(early, first, acts, t, b, H, unit, 3),
                early[2 + A] if first else hs[t, b, unit])
            dgh[t, b, unit] = da_r
            dgh[t, b, H + unit] = da_z
            dgh[t, b, 2 * H + unit] = dgh_n
            dgx_n[t, b, unit] = da_n
            carry_h[b, unit] = dh_direct
        elif cho:
            da_z, da_n, dh_direct = gru_cell.backward_zn(
                dh, saved(early, first, acts, t, b, H, unit, 1), saved(early, first, acts, t, b, H, unit, 2),
                early[2 + A] if first else hs[t, b, unit])
            dgh[t, b, H + unit] = da_z
            dgh[t, b, 2 * H + unit] = da_n
            carry_h[b, unit] = dh_direct
        else:
            dgh[t, b, unit] = rnn_cell.backward(dh, early[2 + A] if first else hs[t + 1, b, unit], relu)
            carry_h[b, unit] = 0

    return forward_pair, backward_pair


@lru_cache(maxsize=None)
def build(code, BT, RT, KL, NT, dtype_name, max_registers=0):
    """Kernels for one cell and one work split, compiled on first launch (per argument types).

    BT sequences per batch tile, RT rows per thread, KL lanes splitting each dot product (a power of
    2 up to 32), NT threads per block, ``max_registers`` a cap on a thread's registers (0: none).
    Returns a dict of forward/backward kernels, on-chip and L2 variants.
    """
    dt = {"float32": float32, "float64": float64}[dtype_name]
    G = NUM_GATES[code]
    NG = NT // KL                  # row groups per block
    TILE = RT * BT                 # accumulators per thread
    STAGE = max(1, min(4, STAGED_VALUES // BT))     # columns per thread that load_tile gathers before storing
    STAGED = STAGE * BT            # values load_tile holds per thread (registers: wider tiles, fewer columns)
    EARLY = 2 * G + 1              # values prefetch loads per thread
    A = NUM_SAVED[code]            # saved activations per unit
    BACKWARD_EARLY = backward_early(code)
    cho = code == GRU_CHO
    kernel = cuda.jit(max_registers=max_registers) if max_registers and not SIMULATED else cuda.jit
    forward_pair, backward_pair = cell_steps(code)

    # lane_sums's exchanges: stage s swaps with the lane KL >> (s + 1) away; while a lane holds more than
    # one sum (TILE >> (s + 1) >= 1 after the stage) each exchange halves them, then full butterflies
    LANE_STAGES = KL.bit_length() - 1
    SUMS = max(1, TILE // KL)      # sums a lane holds at the end
    LEADERS = max(1, KL // TILE)   # lanes holding the same sums at the end (the first of them stores)

    @cuda.jit(device=True, inline="always")
    def exchange(acc, count, offset, upper, red):
        """acc[i] += the value lane ``lane ^ offset`` sends, for i < count, where every lane sends
        acc[i + count] and keeps acc[i], or (``upper``) the reverse. count 0: acc[0] += that lane's
        acc[0]. Warp shuffles; the simulator, which has none, passes the values through shared
        memory (after the k-split partials)."""
        if count == 0:
            if SIMULATED:
                tid = cuda.threadIdx.x
                red[NG * TILE + tid] = acc[0]
                cuda.syncthreads()
                acc[0] += red[NG * TILE + (tid ^ offset)]
                cuda.syncthreads()
            else:
                acc[0] += cuda.shfl_xor_sync(_FULL_MASK, acc[0], offset)
            return
        if SIMULATED:
            tid = cuda.threadIdx.x
            for i in range(count):
                red[NG * TILE + i * NT + tid] = acc[i] if upper else acc[i + count]
            cuda.syncthreads()
            for i in range(count):
                acc[i] = (acc[i + count] if upper else acc[i]) + red[NG * TILE + i * NT + (tid ^ offset)]
            cuda.syncthreads()
        else:
            for i in range(count):
                low, high = acc[i], acc[i + count]
                acc[i] = (high if upper else low) + cuda.shfl_xor_sync(_FULL_MASK, low if upper else high, offset)

    @cuda.jit(device=True, inline="always")
    def lane_sums(acc, red, kl):
        """Sums of acc[0:TILE] over the KL lanes of a group, transposed across the lanes: lane kl ends
        with the sums of accumulators first..first+SUMS-1 in acc[0:SUMS]; returns first. While a lane
        holds several sums, each exchange gives away half of them (the lanes with the offset's bit set
        keep the upper half): TILE - 1 shuffles do the work of TILE * log2(KL) one sum at a time."""
        first = 0
        for s in range(LANE_STAGES):
            offset = KL >> (s + 1)
            count = TILE >> (s + 1)
            upper = (kl & offset) != 0
            exchange(acc, count, offset, upper, red)
            if upper:
                first += count
        return first

    @cuda.jit(device=True, inline="always")
    def product(w, wbase, wstride, koff, klen, nrows, v, pre, pre_off, pre_stride, red):
        """pre[j, pre_off + r] = sum_k w[wbase + r*wstride + koff + k] * v[j, k] for r < nrows, j < BT.

        v is a shared (BT, klen) tile; nrows must be a multiple of RT. A group of KL lanes owns RT
        rows; when there are fewer row groups than groups, the spare groups split k too, and their
        partial sums (in `red`) are added in a fixed order, so results do not depend on timing.
        Every thread runs the same number of passes, so the warp shuffles see full warps.
        """
        tid = cuda.threadIdx.x
        kl = tid % KL
        group = tid // KL
        row_groups = nrows // RT
        k_splits = max(1, NG // row_groups)
        groups_per_pass = NG // k_splits
        k_split = group // groups_per_pass
        acc = cuda.local.array(TILE, dt)
        for pass_start in range(0, row_groups, groups_per_pass):
            row_group = pass_start + group % groups_per_pass
            active = row_group < row_groups and k_split < k_splits
            r0 = row_group * RT
            for i in range(TILE):
                acc[i] = 0
            if active:
                for k in range(k_split * KL + kl, klen, k_splits * KL):
                    for rr in range(RT):
                        wv = w[wbase + (r0 + rr) * wstride + koff + k]
                        for j in range(BT):
                            acc[rr * BT + j] += wv * v[j * klen + k]
            first = lane_sums(acc, red, kl)
            if active and kl % LEADERS == 0:
                for i in range(SUMS):
                    j = (first + i) % BT
                    r = r0 + (first + i) // BT
                    if k_splits == 1:
                        pre[j * pre_stride + pre_off + r] = acc[i]
                    else:
                        red[(k_split * BT + j) * nrows + r] = acc[i]
        cuda.syncthreads()
        if k_splits > 1:
            for idx in range(tid, BT * nrows, NT):
                j = idx // nrows
                total = red[j * nrows + idx - j * nrows]
                for split in range(1, k_splits):
                    total += red[(split * BT + j) * nrows + idx - j * nrows]
                pre[j * pre_stride + pre_off + idx - j * nrows] = total
            cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def load_tile(src, t, b0, koff, klen, v):
        """v[j, k] = src[t, b0 + j, koff + k] (zero past the batch), then a block barrier.

        Each thread gathers STAGE columns of every row into registers before it stores any: a
        store to shared memory might alias the source as far as the compiler knows, so loads
        interleaved with stores would each wait a full L2 round trip.
        """
        B = src.shape[1]
        tid = cuda.threadIdx.x
        staged = cuda.local.array(STAGED, dt)
        for k0 in range(0, klen, STAGE * NT):
            for q in range(STAGE):
                k = k0 + q * NT + tid
                for j in range(BT):
                    staged[q * BT + j] = src[t, b0 + j, koff + k] if (k < klen and b0 + j < B) else 0
            for q in range(STAGE):
                k = k0 + q * NT + tid
                if k < klen:
                    for j in range(BT):
                        v[j * klen + k] = staged[q * BT + j]
        cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def my_block(unit_groups):
        """(unit group, batch group, batch groups) of this block: blocks beyond the unit groups
        take further batch tiles of the same units, with their own copy of the weights."""
        block = cuda.blockIdx.x
        batch_group = block // unit_groups
        return block - batch_group * unit_groups, batch_group, cuda.gridDim.x // unit_groups

    @cuda.jit(device=True, inline="always")
    def shared_parts(smem, R, K, wbytes_on_chip):
        """Carve the dynamic shared array: [W rows (if on chip)] [v tile] [pre] [partials, scratch]."""
        start = R * K if wbytes_on_chip else 0
        v = smem[start:start + BT * K]
        pre = smem[start + BT * K:start + BT * K + BT * R]
        red = smem[start + BT * K + BT * R:]
        return v, pre, red

    @cuda.jit(device=True, inline="always")
    def copy_weights(w_packed, w_s):
        block = w_packed[my_block(w_packed.shape[0])[0]]
        R, K = block.shape
        for idx in range(cuda.threadIdx.x, R * K, NT):
            w_s[idx] = block[idx // K, idx % K]
        cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def tile_pair(idx, U, b0, unit0):
        """The idx-th (sequence, unit) pair of a batch tile: (j, u, sequence b, hidden unit)."""
        j = idx // U
        u = idx - j * U
        return j, u, b0 + j, unit0 + u

    @cuda.jit(device=True, inline="always")
    def first_unit(H, U):
        """The first hidden unit of this block's unit group (of U units)."""
        return my_block(-(-H // U))[0] * U

    @cuda.jit(device=True, inline="always")
    def own_pair(U, b0, B, H):
        """The first pair this thread's pointwise takes in tile b0, as tile_pair gives it, and whether
        there is one (for prefetch and prefetch_backward)."""
        j, u, b, unit = tile_pair(cuda.threadIdx.x, U, b0, first_unit(H, U))
        return j, u, b, unit, j < BT and b < B and unit < H

    @cuda.jit(device=True, inline="always")
    def prefetch(gx, b_hh, cs, lengths, t, b0, U, early):
        """What the first (sequence, unit) pair of this thread's pointwise reads from global memory
        (but h_{t-1}, which the product's tile holds), loaded before the step's product so that the
        trips to memory overlap it: early[g] = gx[t, b, g*H + unit], early[G + g] = b_hh[g*H + unit]
        for g < G, early[2G] = c_{t-1} (LSTM). Returns the sequence's length, or -1 when this thread
        has no pair in the tile."""
        j, u, b, unit, has_pair = own_pair(U, b0, cs.shape[1], cs.shape[2])
        if not has_pair:
            return -1
        H = cs.shape[2]
        for g in range(G):
            early[g] = gx[t, b, g * H + unit]
            early[G + g] = b_hh[g * H + unit]
        if code == LSTM:
            early[2 * G] = cs[t if cs.shape[0] > 1 else 0, b, unit]
        return lengths[b]

    @cuda.jit(device=True, inline="always")
    def gate(early, first, gx, b_hh, pre, t, b, j, R, U, u, H, unit, g):
        """Gate g's (x W_ih^T + b_ih, h W_hh^T + b_hh) for (tile sequence j, unit u = unit - unit0):
        the prefetched values (``first``) or from memory."""
        if first:
            return early[g], pre[j * R + g * U + u] + early[G + g]
        return gx[t, b, g * H + unit], pre[j * R + g * U + u] + b_hh[g * H + unit]

    # ------------------------------------------------------------------ forward

    @cuda.jit(device=True, inline="always")
    def forward_pointwise(t, b0, U, v, pre, gx, b_hh, hs, cs, y, acts, rhs, lengths, save, phase, early, length):
        """The cell's pointwise step for the pairs of tile b0 (``early``, ``length``: the first pair's
        values from prefetch, length -1 when there are none). Phase 1 is the second of Cho's GRU,
        whose tile ``v`` holds r * h_{t-1} instead of h_{t-1}."""
        B, H = hs.shape[1], hs.shape[2]
        R = G * U
        unit0 = first_unit(H, U)
        tid = cuda.threadIdx.x
        for idx in range(tid, U * BT, NT):
            j, u, b, unit = tile_pair(idx, U, b0, unit0)
            if b >= B or unit >= H:
                continue
            first = idx == tid and length >= 0 and phase == 0
            valid = t < (length if first else lengths[b])
            h_prev = hs[t, b, unit] if phase == 1 else v[j * H + unit]
            c_prev = x0 = h0 = x1 = h1 = x2 = h2 = x3 = h3 = dt(0)
            if code == LSTM:
                c_prev = early[2 * G] if first else cs[t if cs.shape[0] > 1 else 0, b, unit]
            if phase == 0:          # (Cho's phase 0: gates r and z; phase 1: gate n)
                x0, h0 = gate(early, first, gx, b_hh, pre, t, b, j, R, U, u, H, unit, 0)
                if G > 1:
                    x1, h1 = gate(early, first, gx, b_hh, pre, t, b, j, R, U, u, H, unit, 1)
            if G > 2 and not (cho and phase == 0):
                x2, h2 = gate(early, first and not cho, gx, b_hh, pre, t, b, j, R, U, u, H, unit, 2)
            if G > 3:
                x3, h3 = gate(early, first, gx, b_hh, pre, t, b, j, R, U, u, H, unit, 3)
            forward_pair(t, b, unit, phase, valid, h_prev, c_prev, x0, h0, x1, h1, x2, h2, x3, h3,
                         hs, cs, y, acts, rhs, save)
        cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def forward_body(w, wbase, v, pre, red, U, gx, b_hh, hs, cs, y, acts, rhs, lengths, save):
        T, B, H = y.shape[0], y.shape[1], y.shape[2]
        R = G * U
        _, batch_group, batch_groups = my_block(-(-H // U))
        grid = cuda.cg.this_grid()
        early = cuda.local.array(EARLY, dt)
        for t in range(T):
            for b0 in range(batch_group * BT, B, batch_groups * BT):
                length = prefetch(gx, b_hh, cs, lengths, t, b0, U, early)
                load_tile(hs, t, b0, 0, H, v)
                product(w, wbase, H, 0, H, 2 * U if cho else R, v, pre, 0, R, red)
                forward_pointwise(t, b0, U, v, pre, gx, b_hh, hs, cs, y, acts, rhs, lengths, save, 0, early, length)
            grid.sync()
            if cho:         # second phase: gh_n = (r * h_{t-1}) W_hn^T, then n and h_t
                for b0 in range(batch_group * BT, B, batch_groups * BT):
                    load_tile(rhs, t, b0, 0, H, v)
                    product(w, wbase + 2 * U * H, H, 0, H, U, v, pre, 2 * U, R, red)
                    forward_pointwise(t, b0, U, v, pre, gx, b_hh, hs, cs, y, acts, rhs, lengths, save, 1, early, -1)
                grid.sync()

    @kernel
    def forward_on_chip(w_packed, gx, b_hh, hs, cs, y, acts, rhs, lengths, save):
        smem = cuda.shared.array(0, dt)
        R, K = w_packed.shape[1], w_packed.shape[2]
        U = R // G
        copy_weights(w_packed, smem)
        v, pre, red = shared_parts(smem, R, K, True)
        forward_body(smem, 0, v, pre, red, U, gx, b_hh, hs, cs, y, acts, rhs, lengths, save)

    @kernel
    def forward_from_l2(w_packed, gx, b_hh, hs, cs, y, acts, rhs, lengths, save):
        smem = cuda.shared.array(0, dt)
        R, K = w_packed.shape[1], w_packed.shape[2]
        U = R // G
        v, pre, red = shared_parts(smem, R, K, False)
        w_flat = w_packed.reshape(w_packed.size)
        wbase = my_block(w_packed.shape[0])[0] * R * K
        forward_body(w_flat, wbase, v, pre, red, U, gx, b_hh, hs, cs, y, acts, rhs, lengths, save)

    # ------------------------------------------------------------------ backward

    @cuda.jit(device=True, inline="always")
    def backward_pointwise(t, b0, U, have_rec, pre, dy, hs, cs, acts, lengths, dgh, dgx_n,
                           carry_h, carry_c, dh0, phase, early, length):
        """phase 0: dh_t and the cell's backward (Cho: gates z, n); 1: Cho's gate r; 2: dh0. ``early``,
        ``length``: the first pair's values from prefetch_backward (phase 0; length -1: none)."""
        B, H = hs.shape[1], hs.shape[2]
        unit0 = first_unit(H, U)
        tid = cuda.threadIdx.x
        for idx in range(tid, U * BT, NT):
            j, u, b, unit = tile_pair(idx, U, b0, unit0)
            if b >= B or unit >= H:
                continue
            rec = pre[j * U + u] if have_rec else 0
            if phase == 2:
                dh0[b, unit] = carry_h[b, unit] + rec
                continue
            first = idx == tid and length >= 0 and phase == 0
            valid = t < (length if first else lengths[b])
            backward_pair(t, b, unit, phase, first, valid, rec, early, dy, hs, cs, acts, dgh, dgx_n, carry_h, carry_c)
        cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def prefetch_backward(t, b0, U, dy, hs, cs, acts, lengths, carry_h, carry_c, early):
        """The backward's prefetch (see prefetch): the global reads of step t's pointwise (phase 0) for
        this thread's first pair, early[0] = the carried dh, [1] = dy_t, [2 + a] = saved activation a,
        [2 + A] = c_{t-1} (LSTM), h_{t-1} (GRU) or h_t (RNN), [3 + A] = c_t and [4 + A] = the carried dc
        (LSTM). Returns the sequence's length, or -1 when this thread has no pair in the tile."""
        j, u, b, unit, has_pair = own_pair(U, b0, hs.shape[1], hs.shape[2])
        if not has_pair:
            return -1
        H = hs.shape[2]
        early[0] = carry_h[b, unit]
        early[1] = dy[t % dy.shape[0], b, unit]
        for a in range(A):
            early[2 + a] = acts[t, b, a * H + unit]
        if code == LSTM:
            early[2 + A] = cs[t, b, unit]
            early[3 + A] = cs[t + 1, b, unit]
            early[4 + A] = carry_c[b, unit]
        else:
            early[2 + A] = hs[t + 1 if A == 0 else t, b, unit]
        return lengths[b]

    @cuda.jit(device=True, inline="always")
    def backward_body(w, wbase, v, pre, red, U, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0):
        T, B, H = dgh.shape[0], dgh.shape[1], hs.shape[2]
        K = G * H
        k_rec = 2 * H if cho else K      # Cho: the first phase takes gates r, z only
        _, batch_group, batch_groups = my_block(-(-H // U))
        grid = cuda.cg.this_grid()
        early = cuda.local.array(BACKWARD_EARLY, dt)
        for step in range(T + 1):
            t = T - 1 - step                 # t = -1: the final pass that gives dh0
            have_rec = t < T - 1
            for b0 in range(batch_group * BT, B, batch_groups * BT):
                length = -1 if t < 0 else prefetch_backward(t, b0, U, dy, hs, cs, acts, lengths, carry_h, carry_c,
                                                            early)
                if have_rec:
                    load_tile(dgh, t + 1, b0, 0, k_rec, v)
                    product(w, wbase, K, 0, k_rec, U, v, pre, 0, U, red)
                backward_pointwise(t, b0, U, have_rec, pre, dy, hs, cs, acts, lengths, dgh, dgx_n,
                                   carry_h, carry_c, dh0, 2 if t < 0 else 0, early, length)
            if t < 0:
                break
            grid.sync()
            if cho:         # d(r h) = da_n W_hn, then gate r and the rest of dh_{t-1}
                for b0 in range(batch_group * BT, B, batch_groups * BT):
                    load_tile(dgh, t, b0, 2 * H, H, v)
                    product(w, wbase, K, 2 * H, H, U, v, pre, 0, U, red)
                    backward_pointwise(t, b0, U, True, pre, dy, hs, cs, acts, lengths, dgh, dgx_n,
                                       carry_h, carry_c, dh0, 1, early, -1)
                grid.sync()

    @kernel
    def backward_on_chip(w_packed, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0):
        smem = cuda.shared.array(0, dt)
        U, K = w_packed.shape[1], w_packed.shape[2]
        copy_weights(w_packed, smem)
        v, pre, red = shared_parts(smem, U, K, True)
        backward_body(smem, 0, v, pre, red, U, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0)

    @kernel
    def backward_from_l2(w_packed, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0):
        smem = cuda.shared.array(0, dt)
        U, K = w_packed.shape[1], w_packed.shape[2]
        v, pre, red = shared_parts(smem, U, K, False)
        w_flat = w_packed.reshape(w_packed.size)
        wbase = my_block(w_packed.shape[0])[0] * U * K
        backward_body(w_flat, wbase, v, pre, red, U, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0)

    return {"forward": (forward_on_chip, forward_from_l2), "backward": (backward_on_chip, backward_from_l2)}


@lru_cache(maxsize=None)
def build_stepwise(code, dtype_name):
    """Kernels of the stepwise path (numba_cuda: large batches): one step's pointwise work, a thread per
    (sequence, unit) pair, launched once a step (twice for Cho's GRU) after a cuBLAS GEMM has formed the
    step's recurrent products. The cell's work is cell_steps', as in the persistent kernels; only where
    the recurrent parts come from differs (a (B, columns) array instead of a block's shared tile)."""
    dt = {"float32": float32, "float64": float64}[dtype_name]
    G = NUM_GATES[code]
    cho = code == GRU_CHO
    forward_pair, backward_pair = cell_steps(code)

    @cuda.jit(device=True, inline="always")
    def gate(gx, gh, b_hh, t, b, H, unit, g, column):
        """Gate g's (x W_ih^T + b_ih, h W_hh^T + b_hh) for the pair, its recurrent product in gh[b, column]."""
        return gx[t, b, g * H + unit], gh[b, column] + b_hh[g * H + unit]

    @cuda.jit(device=True, inline="always")
    def my_pair(B, H):
        """(sequence, unit) of this thread, thread b * H + unit; (-1, -1) past the B * H pairs."""
        idx = cuda.grid(1)
        if idx >= B * H:
            return -1, -1
        b = idx // H
        return b, idx - b * H

    @cuda.jit
    def forward_step(t, phase, save, gx, gh, b_hh, hs, cs, y, acts, rhs, lengths):
        """Step t of every pair (thread b * H + unit), gh = h_{t-1} W_hh^T (B, G*H) without b_hh; Cho's
        GRU: phase 0 gates r, z (B, 2H), phase 1 (r h_{t-1}) W_hn^T (B, H)."""
        H = hs.shape[2]
        b, unit = my_pair(hs.shape[1], H)
        if b < 0:
            return
        c_prev = x0 = h0 = x1 = h1 = x2 = h2 = x3 = h3 = dt(0)
        if code == LSTM:
            c_prev = cs[t if cs.shape[0] > 1 else 0, b, unit]
        if phase == 0:
            x0, h0 = gate(gx, gh, b_hh, t, b, H, unit, 0, unit)
            if G > 1:
                x1, h1 = gate(gx, gh, b_hh, t, b, H, unit, 1, H + unit)
        if G > 2 and not (cho and phase == 0):
            x2, h2 = gate(gx, gh, b_hh, t, b, H, unit, 2, unit if cho else 2 * H + unit)
        if G > 3:
            x3, h3 = gate(gx, gh, b_hh, t, b, H, unit, 3, 3 * H + unit)
        forward_pair(t, b, unit, phase, t < lengths[b], hs[t, b, unit], c_prev, x0, h0, x1, h1, x2, h2, x3, h3,
                     hs, cs, y, acts, rhs, save)

    @cuda.jit
    def backward_step(t, phase, have_rec, rec, dy, hs, cs, acts, lengths, dgh, dgx_n, carry_h, carry_c, dh0):
        """Step t in reverse for every pair, rec = dG_{t+1} W_hh (B, H) where ``have_rec`` (Cho: phase 0
        from gates r, z only, phase 1 da_n W_hn); t = -1: dh0 = the carried dh + rec."""
        H = hs.shape[2]
        b, unit = my_pair(hs.shape[1], H)
        if b < 0:
            return
        recurrent = rec[b, unit] if have_rec else dt(0)
        if t < 0:
            dh0[b, unit] = carry_h[b, unit] + recurrent
            return
        early = cuda.local.array(1, dt)     # (not read: first is False, the pair's values come from memory)
        backward_pair(t, b, unit, phase, False, t < lengths[b], recurrent, early, dy, hs, cs, acts, dgh, dgx_n,
                      carry_h, carry_c)

    @cuda.jit
    def projected_cell_step(t, save, gx, gh, b_hh, ms, cs, acts, lengths):
        """LSTM with projections, step t up to m_t = o tanh(c_t) (thread b * H + unit): ms (T+1, B, H)
        gets m_t in slot t + 1, 0 past the sequence's length (where h_t is carried instead: project_step)."""
        H = ms.shape[2]
        b, unit = my_pair(ms.shape[1], H)
        if b < 0:
            return
        x0, h0 = gate(gx, gh, b_hh, t, b, H, unit, 0, unit)
        x1, h1 = gate(gx, gh, b_hh, t, b, H, unit, 1, H + unit)
        x2, h2 = gate(gx, gh, b_hh, t, b, H, unit, 2, 2 * H + unit)
        x3, h3 = gate(gx, gh, b_hh, t, b, H, unit, 3, 3 * H + unit)
        forward_pair(t, b, unit, 0, t < lengths[b], dt(0), cs[t if cs.shape[0] > 1 else 0, b, unit],
                     x0, h0, x1, h1, x2, h2, x3, h3, ms, cs, None, acts, ms, save)

    @cuda.jit
    def project_step(t, hs, y, lengths):
        """h_t = m_t W_hr^T, which a GEMM has written to hs[t + 1] (B, P), stands where t is within the
        sequence's length; past it h_{t-1} is carried. y_t = h_t, or 0 past the length (thread b * P + j)."""
        P = hs.shape[2]
        b, j = my_pair(hs.shape[1], P)
        if b < 0:
            return
        if t < lengths[b]:
            y[t, b, j] = hs[t + 1, b, j]
        else:
            hs[t + 1, b, j] = hs[t, b, j]
            y[t, b, j] = 0

    @cuda.jit
    def projected_dh(t, have_rec, rec, dy, carry_h, dhs, lengths, dh0):
        """LSTM with projections, dL/dh_t (B, P; thread b * P + j): the carried dh (past a sequence's length:
        passed on) + rec = dG_{t+1} W_hh where ``have_rec`` + dy_t, into dhs[t] (0 past the length), from
        which a GEMM makes dL/dm_t = dhs[t] W_hr for the cell's step; t = -1: dh0."""
        P = carry_h.shape[1]
        b, j = my_pair(carry_h.shape[0], P)
        if b < 0:
            return
        dh = carry_h[b, j] + (rec[b, j] if have_rec else dt(0))
        if t < 0:
            dh0[b, j] = dh
        elif t < lengths[b]:
            dhs[t, b, j] = dh + dy[t % dy.shape[0], b, j]
            carry_h[b, j] = 0
        else:
            dhs[t, b, j] = 0
            carry_h[b, j] = dh

    kernels = {"forward": forward_step, "backward": backward_step}
    if code == LSTM:
        kernels.update(projected_cell_step=projected_cell_step, project_step=project_step, projected_dh=projected_dh)
    return kernels


def shared_elements(R, K, BT, RT, KL, NT, on_chip):
    """Elements of the dynamic shared array a kernel of this split needs (see shared_parts)."""
    partials = (NT // KL) * RT * BT                  # k-split partial sums (see product)
    scratch = max(1, RT * BT // 2) * NT if SIMULATED else 0    # the simulator's lane exchanges
    return (R * K if on_chip else 0) + BT * K + BT * R + partials + scratch
