"""Native-width float vectors for Numba kernels: a type and a handful of intrinsics.

Numba has no SIMD type, and LLVM will not turn a tile of scalar accumulators into vector
registers (its SLP vectoriser spilled a 4x16 tile to the stack). These intrinsics emit LLVM
vector IR directly: ``vload``/``vstore``/``vstore_add`` move ``lanes`` consecutive elements of
a row, ``vsplat`` broadcasts a scalar, ``vfma`` is a*b + c with contraction allowed (one FMA on
AVX2 or AVX-512, and plain vector code on any other target). A vector holds VECTOR_BYTES: 64 (16
float32, 8 float64) where Numba compiles for AVX-512, else 32 (8 float32, 4 float64).
Vectors also take Python's arithmetic operators, abs() and the selects below, so scalar code (the
cells' math) compiles for them unchanged.
"""
import operator

import llvmlite.ir as llvm_ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model


def _vector_bytes() -> int:
    """64 where the code Numba generates may use AVX-512 registers, else 32. Numba compiles for this
    CPU unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say otherwise (a portable cache): then what they
    name. (Measured on a 2-core Zen 5, LSTM forward T = 512: B = 64, H = 512 680 -> 347 ms, B = 8,
    H = 256 26 -> 15 ms against 32-byte vectors, which LLVM kept in halves of the 512-bit registers.)
    Numba's disk cache is keyed by the CPU name and features, so each width has its own entries."""
    from numba.core import config as numba_config
    if numba_config.CPU_FEATURES is not None:
        return 64 if "+avx512f" in numba_config.CPU_FEATURES.split(",") else 32
    if numba_config.CPU_NAME not in (None, "host"):
        return 32
    from llvmlite import binding
    return 64 if binding.get_host_cpu_features().get("avx512f", False) else 32


VECTOR_BYTES = _vector_bytes()


class Vector(types.Type):
    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = llvm_ir.FloatType() if fe_type.dtype.bitwidth == 32 else llvm_ir.DoubleType()
        super().__init__(dmm, fe_type, llvm_ir.VectorType(element, fe_type.lanes))


def _row_pointer(context, builder, arr_type, arr, i, j):
    ary = context.make_array(arr_type)(context, builder, arr)
    return cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                     cgutils.unpack_tuple(builder, ary.strides), arr_type.layout, [i, j],
                                     wraparound=False, boundscheck=False)


def _is_float_matrix(arr):
    return isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(arr.dtype, types.Float)


def _as_vector(context, builder, value, value_type, vector):
    """value as a vector: itself, or the scalar (cast to the vector's dtype) in every lane."""
    if isinstance(value_type, Vector):
        return value
    scalar = context.cast(builder, value, value_type, vector.dtype)
    vector_type = context.get_value_type(vector)
    undef = llvm_ir.Constant(vector_type, llvm_ir.Undefined)
    first = builder.insert_element(undef, scalar, llvm_ir.Constant(llvm_ir.IntType(32), 0))
    mask = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), vector.lanes), [0] * vector.lanes)
    return builder.shuffle_vector(first, undef, mask)


@intrinsic
def vlanes(typingctx, arr):
    """Elements per vector for the array's dtype (a compile-time constant)."""
    if not isinstance(arr, types.Array):
        return None
    lanes = Vector(arr.dtype).lanes

    def codegen(context, builder, signature, args):
        return llvm_ir.Constant(llvm_ir.IntType(64), lanes)
    return types.intp(arr), codegen


@intrinsic
def vzero(typingctx, arr):
    """A vector of zeros of the array's dtype."""
    if not isinstance(arr, types.Array):
        return None
    vector = Vector(arr.dtype)

    def codegen(context, builder, signature, args):
        return llvm_ir.Constant(context.get_value_type(vector), None)
    return vector(arr), codegen


def _vector_pointer(context, builder, arr_type, args, vector_ir_type):
    """(pointer to arr[i, j:j+lanes] as a vector, the element alignment) for args = (arr, i, j, ...)."""
    ptr = _row_pointer(context, builder, arr_type, args[0], args[1], args[2])
    return builder.bitcast(ptr, vector_ir_type.as_pointer()), arr_type.dtype.bitwidth // 8


def _is_row_store(arr, value):
    return _is_float_matrix(arr) and isinstance(value, Vector) and value.dtype == arr.dtype


@intrinsic
def vload(typingctx, arr, i, j):
    """arr[i, j:j+lanes] (the caller keeps j + lanes <= arr.shape[1])."""
    if not _is_float_matrix(arr):
        return None
    vector = Vector(arr.dtype)

    def codegen(context, builder, signature, args):
        vptr, align = _vector_pointer(context, builder, arr, args, context.get_value_type(vector))
        return builder.load(vptr, align=align)
    return vector(arr, types.intp, types.intp), codegen


@intrinsic
def vload_f64(typingctx, arr, i, j):
    """arr[i, j:j+lanes] as a vector of float64 (lanes: a float64 vector's), widened from float32 arrays."""
    if not _is_float_matrix(arr):
        return None
    vector = Vector(types.float64)

    def codegen(context, builder, signature, args):
        loaded = llvm_ir.VectorType(context.get_value_type(arr.dtype), vector.lanes)
        vptr, align = _vector_pointer(context, builder, arr, args, loaded)
        value = builder.load(vptr, align=align)
        return builder.fpext(value, context.get_value_type(vector)) if arr.dtype.bitwidth == 32 else value
    return vector(arr, types.intp, types.intp), codegen


@intrinsic
def vstore_add(typingctx, arr, i, j, value):
    """arr[i, j:j+lanes] += value."""
    if not _is_row_store(arr, value):
        return None

    def codegen(context, builder, signature, args):
        vptr, align = _vector_pointer(context, builder, arr, args, args[3].type)
        builder.store(builder.fadd(builder.load(vptr, align=align), args[3]), vptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, types.intp, types.intp, value), codegen


@intrinsic
def vstore(typingctx, arr, i, j, value):
    """arr[i, j:j+lanes] = value."""
    if not _is_row_store(arr, value):
        return None

    def codegen(context, builder, signature, args):
        vptr, align = _vector_pointer(context, builder, arr, args, args[3].type)
        builder.store(args[3], vptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, types.intp, types.intp, value), codegen


@intrinsic
def prefetch_for_write(typingctx, arr, i, j):
    """A hint that arr[i, j] will soon be written: its cache line is fetched for ownership now (llvm.prefetch,
    PREFETCHW on x86), so that the store does not wait for it."""
    if not _is_float_matrix(arr):
        return None

    def codegen(context, builder, signature, args):
        ptr = builder.bitcast(_row_pointer(context, builder, arr, args[0], args[1], args[2]),
                              llvm_ir.IntType(8).as_pointer())
        i32 = llvm_ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(
            llvm_ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, i32(1), i32(3), i32(1)])       # write, keep in all levels, data
        return context.get_dummy_value()
    return types.none(arr, types.intp, types.intp), codegen


def _transpose_masks(lanes):
    """The shuffle masks of a lanes x lanes transpose in log2(lanes) rounds: round s (lanes/2, ..., 2, 1)
    pairs rows a and a + s (a & s == 0) and swaps their off-diagonal blocks of s elements, which
    transposes every 2s x 2s block of the 2s x 2s blocks the previous rounds left (checked for 4, 8,
    16 lanes in tests/test_numba_simd.py)."""
    rounds, s = [], lanes // 2
    while s >= 1:
        low = [p if p & s == 0 else lanes + p - s for p in range(lanes)]
        high = [p + s if p & s == 0 else lanes + p for p in range(lanes)]
        rounds.append((s, low, high))
        s //= 2
    return rounds


@intrinsic
def vtranspose_tile(typingctx, src, i, j, dst, r, c):
    """dst[r + a, c + b] = src[i + b, j + a] for a, b < lanes: one lanes x lanes tile transposed in
    registers (lanes loads, lanes * log2(lanes) shuffles, lanes stores; a scalar copy took ~2 operations
    an element). The caller keeps the tile inside both arrays."""
    if not (_is_float_matrix(src) and _is_float_matrix(dst) and src.dtype == dst.dtype):
        return None
    vector = Vector(src.dtype)
    lanes = vector.lanes

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(vector)
        index = llvm_ir.IntType(64)
        mask_type = llvm_ir.VectorType(llvm_ir.IntType(32), lanes)
        rows = []
        for b in range(lanes):
            row = builder.add(args[1], llvm_ir.Constant(index, b))
            ptr, align = _vector_pointer(context, builder, src, (args[0], row, args[2]), vector_type)
            rows.append(builder.load(ptr, align=align))
        for s, low, high in _transpose_masks(lanes):
            for a in range(lanes):
                if a & s == 0:
                    x, y = rows[a], rows[a + s]
                    rows[a] = builder.shuffle_vector(x, y, llvm_ir.Constant(mask_type, low))
                    rows[a + s] = builder.shuffle_vector(x, y, llvm_ir.Constant(mask_type, high))
        for a in range(lanes):
            row = builder.add(args[4], llvm_ir.Constant(index, a))
            ptr, align = _vector_pointer(context, builder, dst, (args[3], row, args[5]), vector_type)
            builder.store(rows[a], ptr, align=align)
        return context.get_dummy_value()
    return types.none(src, types.intp, types.intp, dst, types.intp, types.intp), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the scalar x."""
    if not isinstance(x, types.Float):
        return None
    vector = Vector(x)

    def codegen(context, builder, signature, args):
        return _as_vector(context, builder, args[0], x, vector)
    return vector(x), codegen


def _contracted_mul_add(builder, a, b, c):
    """a * b + c with contraction allowed: one FMA where the target has it (scalars and vectors alike,
    so that the scalar and vector forms of one formula give the same bits)."""
    return builder.fadd(builder.fmul(a, b, flags=["contract"]), c, flags=["contract"])


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane by lane (contracted into one FMA where the target has it); scalar operands are
    broadcast."""
    vector = _vector_of(a, b, c)
    if vector is None:
        return None

    def codegen(context, builder, signature, args):
        x, y, z = (_as_vector(context, builder, v, t, vector) for v, t in zip(args, (a, b, c)))
        return _contracted_mul_add(builder, x, y, z)
    return vector(a, b, c), codegen


@intrinsic
def fma_scalar(typingctx, a, b, c):
    """a * b + c for floats of one type, contracted as vfma is."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return _contracted_mul_add(builder, *args)
    return a(a, b, c), codegen


# ----------------------------------------------------------------------------- arithmetic
# +, -, *, / between two vectors or a vector and a scalar (broadcast), unary -, abs(), and the
# helpers below: with them the cells' pointwise math (cells/), written for one unit, compiles
# unchanged for a vector of units.

def _vector_of(*operands):
    """The Vector type of the operands when the others are scalars or the same Vector, else None."""
    vector = next((t for t in operands if isinstance(t, Vector)), None)
    if vector is None:
        return None
    for t in operands:
        if (isinstance(t, Vector) and t != vector) or not isinstance(t, (Vector, types.Float, types.Integer)):
            return None
    return vector


def _named_intrinsic(name, typer):
    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


def _binary(instruction):
    def typer(typingctx, a, b):
        vector = _vector_of(a, b)
        if vector is None:
            return None

        def codegen(context, builder, signature, args):
            x = _as_vector(context, builder, args[0], a, vector)
            y = _as_vector(context, builder, args[1], b, vector)
            return getattr(builder, instruction)(x, y)
        return vector(a, b), codegen
    return _named_intrinsic(f"vector_{instruction}", typer)


def _overload_binary(python_operator, instruction):
    op = _binary(instruction)

    @overload(python_operator)
    def _vector_operator(a, b):
        if _vector_of(a, b) is not None:
            return lambda a, b: op(a, b)


for _operator, _instruction in ((operator.add, "fadd"), (operator.sub, "fsub"), (operator.mul, "fmul"),
                                (operator.truediv, "fdiv")):
    _overload_binary(_operator, _instruction)


@intrinsic
def _vector_neg(typingctx, a):
    if not isinstance(a, Vector):
        return None

    def codegen(context, builder, signature, args):
        return builder.fsub(_as_vector(context, builder, context.get_constant(a.dtype, -0.0), a.dtype, a), args[0])
    return a(a), codegen


@overload(operator.neg)
def _vector_neg_operator(a):
    if isinstance(a, Vector):
        return lambda a: _vector_neg(a)


def _unary_llvm(name):
    def typer(typingctx, a):
        if not isinstance(a, Vector):
            return None

        def codegen(context, builder, signature, args):
            vector_type = args[0].type
            suffix = f"v{vector_type.count}f{a.dtype.bitwidth}"      # llvmlite names no vector overloads
            fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(vector_type, [vector_type]),
                                                f"llvm.{name}.{suffix}")
            return builder.call(fn, [args[0]])
        return a(a), codegen
    return _named_intrinsic(f"vector_{name}", typer)


vabs = _unary_llvm("fabs")
vfloor = _unary_llvm("floor")


@overload(abs)
def _vector_abs(a):
    if isinstance(a, Vector):
        return lambda a: vabs(a)


def _select(predicate):
    """x where a <predicate> b, else y (lane by lane); an ordered comparison, so a NaN lane takes y,
    as Python's ``x if a < b else y`` does."""
    def typer(typingctx, a, b, x, y):
        vector = _vector_of(a, b, x, y)
        if vector is None:
            return None

        def codegen(context, builder, signature, args):
            left, right, on_true, on_false = (_as_vector(context, builder, v, t, vector)
                                              for v, t in zip(args, (a, b, x, y)))
            return builder.select(builder.fcmp_ordered(predicate, left, right), on_true, on_false)
        return vector(a, b, x, y), codegen
    names = {"<": "lt", ">=": "ge", "==": "eq", ">": "gt", "<=": "le"}
    return _named_intrinsic(f"vector_select_{names[predicate]}", typer)


vselect_lt, vselect_ge, vselect_eq, vselect_gt, vselect_le = (_select(p) for p in ("<", ">=", "==", ">", "<="))


@intrinsic
def vpow2(typingctx, n):
    """2^n for float32 lanes holding integers in [-126, 127] (the exponent field set directly)."""
    if not (isinstance(n, Vector) and n.dtype.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        ints = llvm_ir.VectorType(llvm_ir.IntType(32), n.lanes)
        as_int = builder.fptosi(args[0], ints)
        biased = builder.add(as_int, llvm_ir.Constant(ints, [127] * n.lanes))
        bits = builder.shl(biased, llvm_ir.Constant(ints, [23] * n.lanes))
        return builder.bitcast(bits, args[0].type)
    return n(n), codegen


@intrinsic
def vextract(typingctx, v, i):
    """Lane i of v."""
    if not (isinstance(v, Vector) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])
    return v.dtype(v, i), codegen


@intrinsic
def vinsert(typingctx, v, i, x):
    """v with lane i set to x."""
    if not (isinstance(v, Vector) and isinstance(i, types.Integer) and isinstance(x, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return builder.insert_element(args[0], context.cast(builder, args[2], x, v.dtype), args[1])
    return v(v, i, x), codegen


@intrinsic
def vwidth(typingctx, v):
    """Lanes of the vector (a compile-time constant)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, signature, args):
        return llvm_ir.Constant(llvm_ir.IntType(64), v.lanes)
    return types.intp(v), codegen
