"""Winograd's minimal filtering F(2x2, 3x3): 3x3 stride-1 convolutions with 2.25 times fewer
multiplications than im2col + matmul, forward and backward.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). Each 2x2 block of
outputs comes from the 4x4 tile of the padded input d under it (tiles overlap by 2):

    Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A

with g_c the 3x3 kernel of input channel c. At each of the 16 positions of the transformed tile the
sum over input channels is a matrix product, (tiles, C_in) @ (C_in, C_out): 16 of them, which BLAS
runs (np.matmul over a stack), against 9 products of the same size for the direct sum. The two
transforms are additions only and run in the kernels below; the output transform also adds the bias
and applies the ReLU and 2x2 max pooling, whose windows are exactly the 2x2 output blocks.

The results equal the direct sum's up to float32 rounding (the transforms add and subtract inputs
before the products): tests/kernels/test_winograd.py compares them with convscope.ops.

Layouts: V (16, tiles, C_in) and M (16, tiles, C_out), position-major so each position's matrix is
contiguous for BLAS; tiles are numbered (image, tile row, tile column).
"""

import numpy as np

from convscope.kernels import conv
from convscope.kernels.compile import factory, jit

POSITIONS = 16  # a 4x4 transformed tile


def tile_grid(out_h: int, out_w: int, pool: int) -> tuple[int, int] | None:
    """(tile rows, tile columns) covering a stride-1 3x3 convolution's out_h x out_w outputs, or None
    when F(2x2, 3x3) does not cover them exactly: without pooling the output must split into 2x2
    blocks (even sides); with 2x2 pooling a last odd row or column is dropped anyway."""
    if pool == 2:
        return (out_h // 2, out_w // 2) if min(out_h, out_w) >= 2 else None
    if pool == 1 and out_h % 2 == 0 and out_w % 2 == 0 and out_h and out_w:
        return out_h // 2, out_w // 2
    return None


@factory
def transform_kernels(C_in: int, C_out: int, dtype=np.float32):

    @jit
    def transform_kernels_kernel(weight, u):
        """weight (3, 3, C_in, C_out) -> u (16, C_in, C_out): G g Gᵀ for every channel pair, with
        G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]."""
        for ci in range(C_in):
            for co in range(C_out):
                for r in range(4):  # rows of G g (4 x 3), then G g Gᵀ row by row
                    if r == 0:
                        a0, a1, a2 = weight[0, 0, ci, co], weight[0, 1, ci, co], weight[0, 2, ci, co]
                    elif r == 3:
                        a0, a1, a2 = weight[2, 0, ci, co], weight[2, 1, ci, co], weight[2, 2, ci, co]
                    else:
                        sign = 1.0 if r == 1 else -1.0
                        a0 = 0.5 * (weight[0, 0, ci, co] + sign * weight[1, 0, ci, co] + weight[2, 0, ci, co])
                        a1 = 0.5 * (weight[0, 1, ci, co] + sign * weight[1, 1, ci, co] + weight[2, 1, ci, co])
                        a2 = 0.5 * (weight[0, 2, ci, co] + sign * weight[1, 2, ci, co] + weight[2, 2, ci, co])
                    u[4 * r, ci, co] = a0
                    u[4 * r + 1, ci, co] = 0.5 * (a0 + a1 + a2)
                    u[4 * r + 2, ci, co] = 0.5 * (a0 - a1 + a2)
                    u[4 * r + 3, ci, co] = a2

    return transform_kernels_kernel


@factory
def transform_tiles(C_in: int, dtype=np.float32):

    @jit
    def transform_tiles_kernel(xp, tiles_h, tiles_w, v):
        """xp (N, H, W, C_in), the zero-padded input -> v (16, N * tiles_h * tiles_w, C_in): Bᵀ d B of
        the 4x4 tile d at rows 2i.., columns 2j.. for every tile, with
        Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: row combinations first
        (t = Bᵀ d, one column c at a time), then the same combinations of t's columns."""
        n = xp.shape[0]
        for b in range(n):
            for i in range(tiles_h):
                r = 2 * i
                for j in range(tiles_w):
                    tile = (b * tiles_h + i) * tiles_w + j
                    c = 2 * j
                    for ci in range(C_in):
                        t00 = xp[b, r, c, ci] - xp[b, r + 2, c, ci]
                        t01 = xp[b, r, c + 1, ci] - xp[b, r + 2, c + 1, ci]
                        t02 = xp[b, r, c + 2, ci] - xp[b, r + 2, c + 2, ci]
                        t03 = xp[b, r, c + 3, ci] - xp[b, r + 2, c + 3, ci]
                        t10 = xp[b, r + 1, c, ci] + xp[b, r + 2, c, ci]
                        t11 = xp[b, r + 1, c + 1, ci] + xp[b, r + 2, c + 1, ci]
                        t12 = xp[b, r + 1, c + 2, ci] + xp[b, r + 2, c + 2, ci]
                        t13 = xp[b, r + 1, c + 3, ci] + xp[b, r + 2, c + 3, ci]
                        t20 = xp[b, r + 2, c, ci] - xp[b, r + 1, c, ci]
                        t21 = xp[b, r + 2, c + 1, ci] - xp[b, r + 1, c + 1, ci]
                        t22 = xp[b, r + 2, c + 2, ci] - xp[b, r + 1, c + 2, ci]
                        t23 = xp[b, r + 2, c + 3, ci] - xp[b, r + 1, c + 3, ci]
                        t30 = xp[b, r + 1, c, ci] - xp[b, r + 3, c, ci]
                        t31 = xp[b, r + 1, c + 1, ci] - xp[b, r + 3, c + 1, ci]
                        t32 = xp[b, r + 1, c + 2, ci] - xp[b, r + 3, c + 2, ci]
                        t33 = xp[b, r + 1, c + 3, ci] - xp[b, r + 3, c + 3, ci]
                        v[0, tile, ci], v[1, tile, ci] = t00 - t02, t01 + t02
                        v[2, tile, ci], v[3, tile, ci] = t02 - t01, t01 - t03
                        v[4, tile, ci], v[5, tile, ci] = t10 - t12, t11 + t12
                        v[6, tile, ci], v[7, tile, ci] = t12 - t11, t11 - t13
                        v[8, tile, ci], v[9, tile, ci] = t20 - t22, t21 + t22
                        v[10, tile, ci], v[11, tile, ci] = t22 - t21, t21 - t23
                        v[12, tile, ci], v[13, tile, ci] = t30 - t32, t31 + t32
                        v[14, tile, ci], v[15, tile, ci] = t32 - t31, t31 - t33

    return transform_tiles_kernel


@factory
def transform_outputs(C_out: int, pool: int, dtype=np.float32):
    INACTIVE = conv.INACTIVE

    @jit
    def transform_outputs_kernel(m, bias, relu, tiles_h, tiles_w, y, windows):
        """m (16, N * tiles_h * tiles_w, C_out) -> the 2x2 output block Aᵀ m A of every tile, with
        Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]], plus bias, then (pool 2) the block's maximum, then the
        ReLU, into y (N, tiles_h * 2 // pool, tiles_w * 2 // pool, C_out). With pool 2, windows (like
        y, uint8) gets the winning position or INACTIVE, as convscope.kernels.conv's pooling kernels
        (the first maximum on ties); without pooling it is not touched."""
        n = y.shape[0]
        for b in range(n):
            for i in range(tiles_h):
                for j in range(tiles_w):
                    tile = (b * tiles_h + i) * tiles_w + j
                    for co in range(C_out):
                        s00 = m[0, tile, co] + m[4, tile, co] + m[8, tile, co]
                        s01 = m[1, tile, co] + m[5, tile, co] + m[9, tile, co]
                        s02 = m[2, tile, co] + m[6, tile, co] + m[10, tile, co]
                        s03 = m[3, tile, co] + m[7, tile, co] + m[11, tile, co]
                        s10 = m[4, tile, co] - m[8, tile, co] - m[12, tile, co]
                        s11 = m[5, tile, co] - m[9, tile, co] - m[13, tile, co]
                        s12 = m[6, tile, co] - m[10, tile, co] - m[14, tile, co]
                        s13 = m[7, tile, co] - m[11, tile, co] - m[15, tile, co]
                        y00 = s00 + s01 + s02 + bias[co]
                        y01 = s01 - s02 - s03 + bias[co]
                        y10 = s10 + s11 + s12 + bias[co]
                        y11 = s11 - s12 - s13 + bias[co]
                        if pool == 2:
                            best, arg = y00, 0
                            if y01 > best:
                                best, arg = y01, 1
                            if y10 > best:
                                best, arg = y10, 2
                            if y11 > best:
                                best, arg = y11, 3
                            on = best > 0.0 or not relu
                            y[b, i, j, co] = best if on else 0.0
                            windows[b, i, j, co] = arg if on else INACTIVE
                        else:
                            y[b, 2 * i, 2 * j, co] = y00 if y00 > 0.0 or not relu else 0.0
                            y[b, 2 * i, 2 * j + 1, co] = y01 if y01 > 0.0 or not relu else 0.0
                            y[b, 2 * i + 1, 2 * j, co] = y10 if y10 > 0.0 or not relu else 0.0
                            y[b, 2 * i + 1, 2 * j + 1, co] = y11 if y11 > 0.0 or not relu else 0.0

    return transform_outputs_kernel


# Training. The backward pass is the adjoint of each forward step, in reverse order:
#
#     dM = A dY Aᵀ             (transform_output_gradients, per tile and output channel)
#     dU = Σ_tiles Vᵀ dM       (16 BLAS products, accumulated over chunks)  ->  dg = Gᵀ dU G
#     dV = dM Uᵀ               (16 BLAS products)  ->  dd = B dV Bᵀ, added into the padded input's
#                                                     gradient where the 4x4 tiles overlap
#
# Exact in exact arithmetic, like the forward: the gradients equal the direct convolution's up to
# float32 rounding, and float64 finite-difference checks pass (tests/kernels/test_winograd.py).


@factory
def transform_output_gradients(C_out: int, dtype=np.float32):

    @jit
    def transform_output_gradients_kernel(dz, tiles_h, tiles_w, dm):
        """dz (N, H, W, C_out), the gradient of the conv's output (before pooling) -> dm (16,
        N * tiles_h * tiles_w, C_out): A dY Aᵀ of each tile's 2x2 block dY, with A = (Aᵀ)ᵀ =
        [[1, 0], [1, 1], [1, -1], [0, -1]]: the rows of A dY are [a, b], [a + c, b + d], [a - c, b - d]
        and [-c, -d] for dY = [[a, b], [c, d]], and each row [p, q] becomes [p, p + q, p - q, -q]."""
        n = dz.shape[0]
        for b in range(n):
            for i in range(tiles_h):
                for j in range(tiles_w):
                    tile = (b * tiles_h + i) * tiles_w + j
                    r, c = 2 * i, 2 * j
                    for co in range(C_out):
                        top_left, top_right = dz[b, r, c, co], dz[b, r, c + 1, co]
                        bottom_left, bottom_right = dz[b, r + 1, c, co], dz[b, r + 1, c + 1, co]
                        for row in range(4):
                            if row == 0:
                                p, q = top_left, top_right
                            elif row == 1:
                                p, q = top_left + bottom_left, top_right + bottom_right
                            elif row == 2:
                                p, q = top_left - bottom_left, top_right - bottom_right
                            else:
                                p, q = -bottom_left, -bottom_right
                            dm[4 * row, tile, co] = p
                            dm[4 * row + 1, tile, co] = p + q
                            dm[4 * row + 2, tile, co] = p - q
                            dm[4 * row + 3, tile, co] = -q

    return transform_output_gradients_kernel


@factory
def transform_tile_gradients(C_in: int, dtype=np.float32):

    @jit
    def transform_tile_gradients_kernel(dv, tiles_h, tiles_w, top, left, dx):
        """dv (16, N * tiles_h * tiles_w, C_in) -> dx (N, H, W, C_in), the unpadded input's gradient:
        zeroed, then B dV Bᵀ of every tile added at padded rows 2i.., columns 2j.. (tiles overlap by
        2), less the padding (top, left); what falls on the padding is dropped. B = (Bᵀ)ᵀ turns a
        4-vector x into [x0, x1 - x2 + x3, x1 + x2 - x0, -x3]. Each of a tile's 16 sums is added by a
        loop over channels of its own (one stream of stores: LLVM vectorises it)."""
        n, h, w, _ = dx.shape
        t = np.empty((4, 4, C_in), dtype=dx.dtype)  # dV Bᵀ of one tile
        for b in range(n):
            dx[b] = 0.0
            for i in range(tiles_h):
                for j in range(tiles_w):
                    tile = (b * tiles_h + i) * tiles_w + j
                    for row in range(4):
                        for ci in range(C_in):
                            x0, x1 = dv[4 * row, tile, ci], dv[4 * row + 1, tile, ci]
                            x2, x3 = dv[4 * row + 2, tile, ci], dv[4 * row + 3, tile, ci]
                            t[row, 0, ci], t[row, 1, ci] = x0, x1 - x2 + x3
                            t[row, 2, ci], t[row, 3, ci] = x1 + x2 - x0, -x3
                    for col in range(4):  # B t, column by column, into dx
                        cc = 2 * j + col - left
                        if cc < 0 or cc >= w:
                            continue
                        for row in range(4):
                            rr = 2 * i + row - top
                            if rr < 0 or rr >= h:
                                continue
                            for ci in range(C_in):
                                x0, x1 = t[0, col, ci], t[1, col, ci]
                                x2, x3 = t[2, col, ci], t[3, col, ci]
                                if row == 0:
                                    dx[b, rr, cc, ci] += x0
                                elif row == 1:
                                    dx[b, rr, cc, ci] += x1 - x2 + x3
                                elif row == 2:
                                    dx[b, rr, cc, ci] += x1 + x2 - x0
                                else:
                                    dx[b, rr, cc, ci] -= x3

    return transform_tile_gradients_kernel


@factory
def transform_kernel_gradients(C_in: int, C_out: int, dtype=np.float64):

    @jit
    def transform_kernel_gradients_kernel(du, dweight):
        """du (16, C_in, C_out), the gradient of the transformed kernels -> dweight (3, 3, C_in, C_out)
        = Gᵀ dU G per channel pair, with Gᵀ = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]]
        (a 4-vector x becomes [x0 + (x1 + x2) / 2, (x1 - x2) / 2, (x1 + x2) / 2 + x3])."""
        h = np.empty((3, 4), dtype=dweight.dtype)
        for ci in range(C_in):
            for co in range(C_out):
                for k in range(4):  # h = Gᵀ dU, column by column
                    x0, x1, x2, x3 = du[k, ci, co], du[4 + k, ci, co], du[8 + k, ci, co], du[12 + k, ci, co]
                    h[0, k], h[1, k], h[2, k] = x0 + 0.5 * (x1 + x2), 0.5 * (x1 - x2), 0.5 * (x1 + x2) + x3
                for m in range(3):  # h G, row by row
                    x0, x1, x2, x3 = h[m, 0], h[m, 1], h[m, 2], h[m, 3]
                    dweight[m, 0, ci, co] = x0 + 0.5 * (x1 + x2)
                    dweight[m, 1, ci, co] = 0.5 * (x1 - x2)
                    dweight[m, 2, ci, co] = 0.5 * (x1 + x2) + x3

    return transform_kernel_gradients_kernel
