"""Atomic counters for the persistent CPU kernels: one parallel region per sequence, a sync per step.

A Numba ``prange`` inside the time loop forks and joins threads every step (microseconds,
more than a small step's work). Instead each kernel opens one parallel region of workers
that all walk the time loop; per step the work is cut into chunks that workers claim with
an atomic counter (their own chunks first, so each keeps its slice of the weights in its
cache), and a per-step "done" counter is the barrier. Whatever thread is missing or late,
the others claim its chunks: a kernel never waits for a chunk nobody has claimed, so it
cannot deadlock with fewer running threads than workers.
"""
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic


def _is_int64_vector(arr):
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """arr[idx] += val atomically (sequentially consistent); returns the old value."""
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(arr)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arr, ary, [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return types.int64(arr, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, arr, idx):
    """arr[idx] read with acquire ordering: writes made before the matching atomic_add are visible."""
    if not _is_int64_vector(arr):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(arr)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arr, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, types.intp), codegen


@njit(cache=True, _nrt=False)
def claim(counters, phase, n_chunks, chunk):
    """True for exactly one caller per (phase, chunk)."""
    return atomic_add(counters, phase * n_chunks + chunk, 1) == 0


@njit(cache=True, _nrt=False)
def claim_in_order(claims, phase, n_chunks, worker, n_workers, i):
    """The i-th chunk in ``worker``'s order (its own share of the chunks first, then the others'
    in turn) if this call claimed it, else -1."""
    chunk = (worker * n_chunks // n_workers + i) % n_chunks
    return chunk if claim(claims, phase, n_chunks, chunk) else -1


@njit(cache=True, _nrt=False)
def finish(done, phase):
    atomic_add(done, phase, 1)


@njit(cache=True, _nrt=False)
def wait_all(done, phase, n_chunks):
    while atomic_load(done, phase) < n_chunks:
        pass


@njit(parallel=True, nogil=True, cache=True)
def ping_pong(token, rounds, max_spins):
    """Two workers pass a token back and forth ``rounds`` times through token[0] (worker 0 moves it
    from 2i to 2i + 1, worker 1 on to 2i + 2): timed, a round trip between two cores (_workers.py).
    A worker that waits more than ``max_spins`` reads counts itself in token[1], and the other then
    stops too, so that a threading layer which runs both on one thread returns instead of hanging."""
    for w in prange(2):
        for i in range(rounds):
            turn, spins = 2 * i + w, 0
            while atomic_load(token, 0) != turn and atomic_load(token, 1) == 0:
                spins += 1
                if spins > max_spins:
                    atomic_add(token, 1, 1)
            if atomic_load(token, 1) != 0:
                break
            atomic_add(token, 0, 1)
