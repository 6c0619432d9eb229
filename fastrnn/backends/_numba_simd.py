"""256-bit float vectors for Numba kernels: a type and a handful of intrinsics.

Numba has no SIMD type, and LLVM will not turn a tile of scalar accumulators into vector
registers (its SLP vectoriser spilled a 4x16 tile to the stack). These intrinsics emit LLVM
vector IR directly: ``vload``/``vstore_add`` move ``lanes`` consecutive elements of a row,
``vsplat`` broadcasts a scalar, ``vfma`` is a*b + c with contraction allowed (one FMA on AVX2,
and plain vector code on any other target). A vector holds 32 bytes: 8 float32 or 4 float64.
"""
import llvmlite.ir as llvm_ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

VECTOR_BYTES = 32


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


@intrinsic
def vload(typingctx, arr, i, j):
    """arr[i, j:j+lanes] (the caller keeps j + lanes <= arr.shape[1])."""
    if not _is_float_matrix(arr):
        return None
    vector = Vector(arr.dtype)

    def codegen(context, builder, signature, args):
        ptr = _row_pointer(context, builder, arr, args[0], args[1], args[2])
        return builder.load(builder.bitcast(ptr, context.get_value_type(vector).as_pointer()),
                            align=arr.dtype.bitwidth // 8)
    return vector(arr, types.intp, types.intp), codegen


@intrinsic
def vstore_add(typingctx, arr, i, j, value):
    """arr[i, j:j+lanes] += value."""
    if not (_is_float_matrix(arr) and isinstance(value, Vector) and value.dtype == arr.dtype):
        return None

    def codegen(context, builder, signature, args):
        ptr = _row_pointer(context, builder, arr, args[0], args[1], args[2])
        vptr = builder.bitcast(ptr, args[3].type.as_pointer())
        align = arr.dtype.bitwidth // 8
        builder.store(builder.fadd(builder.load(vptr, align=align), args[3]), vptr, align=align)
        return context.get_dummy_value()
    return types.none(arr, types.intp, types.intp, value), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the scalar x."""
    if not isinstance(x, types.Float):
        return None
    vector = Vector(x)

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(vector)
        undef = llvm_ir.Constant(vector_type, llvm_ir.Undefined)
        first = builder.insert_element(undef, args[0], llvm_ir.Constant(llvm_ir.IntType(32), 0))
        mask = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), vector.lanes), [0] * vector.lanes)
        return builder.shuffle_vector(first, undef, mask)
    return vector(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane by lane (contracted into one FMA where the target has it)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        product = builder.fmul(args[0], args[1], flags=["contract"])
        return builder.fadd(product, args[2], flags=["contract"])
    return c(a, b, c), codegen
