"""Winograd's minimal filtering F(2x2, 3x3): 3x3 stride-1 convolutions in inference with 2.25 times
fewer multiplications than im2col + matmul.

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
    T = dtype

    @jit
    def transform_outputs_kernel(m, bias, relu, tiles_h, tiles_w, y):
        """m (16, N * tiles_h * tiles_w, C_out) -> the 2x2 output block Aᵀ m A of every tile, with
        Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]], plus bias, then (pool 2) the block's maximum, then the
        ReLU, into y (N, tiles_h * 2 // pool, tiles_w * 2 // pool, C_out)."""
        n = y.shape[0]
        floor = T(0.0) if relu else T(-np.inf)  # the ReLU as a max with 0
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
                            y[b, i, j, co] = max(max(max(y00, y01), max(y10, y11)), floor)
                        else:
                            y[b, 2 * i, 2 * j, co] = max(y00, floor)
                            y[b, 2 * i, 2 * j + 1, co] = max(y01, floor)
                            y[b, 2 * i + 1, 2 * j, co] = max(y10, floor)
                            y[b, 2 * i + 1, 2 * j + 1, co] = max(y11, floor)

    return transform_outputs_kernel
