"""The CPU backends' pool of large buffers (fastrnn._arrays.pooled_empty): a buffer is lent again only
once no array made from it is alive, so results a caller keeps are never overwritten by a later call."""
import gc
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _arrays, config

MIB = 1 << 20
POOLING_BACKENDS = [name for name in ("numba", "cpp") if name in fastrnn.available_backends()]


@pytest.fixture
def pool(monkeypatch):
    """A private pool in place of the module's, so the tests see only their own buffers."""
    fresh = _arrays._BufferPool()
    monkeypatch.setattr(_arrays, "_POOL", fresh)
    return fresh


def _pooled(shape, dtype=np.float32):
    return _arrays.pooled_empty(shape, dtype)


def test_a_buffer_is_lent_again_only_when_every_array_made_from_it_is_gone(pool):
    a = _pooled((512, 1024))
    assert a.shape == (512, 1024) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    address = a.ctypes.data
    view = a[10:].reshape(-1)[::3]
    del a
    gc.collect()
    b = _pooled((512, 1024))                      # the view still holds the first buffer
    other = b.ctypes.data
    assert other != address
    del view, b
    gc.collect()
    both = [_pooled((512, 1024)) for _ in range(2)]   # both free buffers lent again, no new one
    assert {arr.ctypes.data for arr in both} == {address, other}


def test_same_size_other_shape_or_dtype_reuses_and_other_sizes_do_not(pool):
    a = _pooled((256, 1024), np.float64)          # 2 MiB
    address = a.ctypes.data
    del a
    gc.collect()
    b = _pooled((1024, 512), np.float32)          # 2 MiB again: the same buffer, a new shape and dtype
    assert b.ctypes.data == address and b.shape == (1024, 512) and b.dtype == np.float32
    del b
    gc.collect()
    c = _pooled((1024, 513), np.float32)          # another size: a new buffer
    assert c.ctypes.data != address


def test_lent_arrays_outlive_their_pool():
    """An array keeps its buffer alive by itself: a pool that goes first (a test's private one, or the
    module's at exit) frees nothing under it."""
    pool = _arrays._BufferPool()
    a = pool.empty((MIB,), np.float32)
    a[:] = 3
    del pool
    gc.collect()
    filler = [np.full(MIB, 7, np.float32) for _ in range(4)]     # would take the memory were it freed
    assert (a == 3).all() and all((f == 7).all() for f in filler)


def test_small_arrays_are_plain_numpy(pool):
    small = _pooled((MIB // 8 - 1,), np.float32)
    assert small.base is None and not pool._free


def test_free_buffers_beyond_the_cap_are_dropped_and_release_empties_the_pool(pool, monkeypatch):
    monkeypatch.setattr(config, "POOL_BYTES", 3 * MIB)
    arrays = [_pooled((MIB // 4,), np.float32) for _ in range(5)]     # five 1 MiB buffers
    del arrays
    gc.collect()
    assert len(pool._free) == 3 and pool._free_bytes == 3 * MIB
    fastrnn.release_memory()
    assert not pool._free and pool._free_bytes == 0
    monkeypatch.setattr(config, "POOL_BYTES", 0)                      # 0: no pool at all
    plain = _pooled((MIB,), np.float32)
    assert plain.base is None


def test_release_memory_is_public_and_empties_the_module_pool():
    kept = _pooled((MIB,), np.float32)
    del kept
    gc.collect()
    assert _arrays._POOL._free
    fastrnn.release_memory()
    assert not _arrays._POOL._free


def test_threads_never_get_the_same_buffer_at_once(pool):
    seen, lock = [], threading.Lock()

    def work():
        for _ in range(50):
            a = _pooled((MIB // 4,), np.float32)
            a[:] = threading.get_ident()
            with lock:
                seen.append(a)                    # all kept alive: no buffer may be lent twice
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a.ctypes.data for a in seen}) == len(seen) == 200


@pytest.mark.parametrize("backend", POOLING_BACKENDS)
def test_results_kept_by_the_caller_survive_later_calls(backend, rng):
    """Outputs, tapes and gradients of the first call, kept, are the same after a second call of the same
    shapes on other data (whose buffers must be new), and again after they are dropped and reused."""
    T, B, H = 64, 16, 256                          # y, dx: 1 MiB; the tape's gates: 4 MiB
    weights = [rng.standard_normal(shape).astype(np.float32) * 0.1 for shape in ((4 * H, H), (4 * H, H))]
    x1, x2 = (rng.standard_normal((T, B, H)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    y1, _, tape1 = fastrnn.lstm_forward(x1, *weights, backend=backend)
    grads1 = fastrnn.lstm_backward(tape1, dy)
    kept = [y1.copy(), grads1.x.copy(), grads1.w_hh.copy()]
    y2, _, tape2 = fastrnn.lstm_forward(x2, *weights, backend=backend)
    grads2 = fastrnn.lstm_backward(tape2, dy)
    assert not np.shares_memory(y1, y2) and not np.shares_memory(grads1.x, grads2.x)
    for was, now in zip(kept, (y1, grads1.x, grads1.w_hh)):
        np.testing.assert_array_equal(was, now)
    # tape1 still drives a backward that gives what it gave
    np.testing.assert_array_equal(fastrnn.lstm_backward(tape1, dy).w_hh, kept[2])
    del y2, tape2, grads2
    gc.collect()
    y3, _, _ = fastrnn.lstm_forward(x1, *weights, backend=backend)      # reuses the second call's buffers
    np.testing.assert_array_equal(y3, kept[0])
