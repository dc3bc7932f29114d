"""A hint to the processor to start loading memory that will be read soon (LLVM's
``llvm.prefetch``), for compiled loops whose next reads are known before they are needed."""

from __future__ import annotations

from typing import Any

from llvmlite import ir as llvm_ir
from numba import types
from numba.core import cgutils as numba_cgutils
from numba.extending import intrinsic

ir: Any = llvm_ir
cgutils: Any = numba_cgutils  # numba's code generation helpers carry no annotations

LINE = 64  # bytes in a cache line
ROW_LINES = 5  # lines of a row prefetched (a state row of 30 numbers spans 4 or 5)


def _prefetch_row(typingctx: Any, table: Any, r: Any, j: Any) -> Any:
    """Prefetch table[r, j, :] of a C-contiguous 3-d float64 array: every cache line of its
    first ``ROW_LINES`` x 64 bytes (a row of up to 40 numbers whole) and its last byte; no
    effect on the program's results."""
    if not (isinstance(table, types.Array) and table.ndim == 3):
        return None
    sig = types.void(table, r, j)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        inds = [context.cast(builder, args[1], signature.args[1], types.intp),
                context.cast(builder, args[2], signature.args[2], types.intp), zero]
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data,
                                        shape=cgutils.unpack_tuple(builder, ary.shape),
                                        strides=cgutils.unpack_tuple(builder, ary.strides),
                                        layout=signature.args[0].layout, inds=inds)
        width = cgutils.unpack_tuple(builder, ary.shape)[2]
        nbytes = builder.mul(width, context.get_constant(types.intp, 8))
        i8p = ir.IntType(8).as_pointer()
        raw = builder.bitcast(ptr, i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32),
                                               ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        last = builder.sub(nbytes, context.get_constant(types.intp, 1))
        # lines at 0, 64, ... (past the row: its last byte instead)
        for offset in range(0, ROW_LINES * LINE, LINE):
            off = context.get_constant(types.intp, offset)
            use = builder.select(builder.icmp_signed("<", off, nbytes), off, last)
            builder.call(fn, [builder.gep(raw, [use]), ir.Constant(ir.IntType(32), 0),
                              ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return sig, codegen


prefetch_row: Any = intrinsic(_prefetch_row)  # prefetch_row(table, r, j) in compiled code
