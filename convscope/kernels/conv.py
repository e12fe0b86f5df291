"""Compiled kernels for convolution, bias, ReLU and max pooling, fused.

Shapes follow convscope.ops: images (N, H, W, C), kernels (kh, kw, C_in, C_out), padding
((top, bottom), (left, right)). `pool` is the side of the non-overlapping max-pooling window after
the activation: 1 (no pooling) or 2 (2x2 windows, stride 2; a last odd row or column is dropped, as in
the reference).

A fused forward pass records, for every output value, which position of its window won (0..pool²-1,
row-major, the first maximum on ties, as the reference) or INACTIVE when the ReLU zeroed it. That
one byte per output is all the backward pass needs: the block before pooling and the ReLU mask are
never stored. ReLU and max pooling commute (max(relu(z)) = relu(max(z)), and the first maximum of
relu(z) is the first maximum of z whenever it is positive), so the kernels pool z and clamp once.

Each kernel is built for fixed channel counts (`lru_cache`d factories below): with the channel loop's
length known when compiling, LLVM keeps the accumulators in vector registers. See compile.py.
"""

import numpy as np

from convscope.kernels.compile import factory, jit

INACTIVE = 255  # window code: the ReLU zeroed this output, no gradient flows back


@factory
def im2col(C: int, dtype=np.float32):

    @jit
    def im2col_kernel(x, kh, kw, sh, sw, top, left, out_h, out_w, cols):
        """x (N, H, W, C) -> cols (N * out_h * out_w, kh * kw * C), zeros where a patch leaves the
        image. Column order (i, j, c) matches kernels reshaped to (kh * kw * C_in, C_out)."""
        n, h, w, _ = x.shape
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    row = (b * out_h + i) * out_w + j
                    for di in range(kh):
                        y = i * sh - top + di
                        for dj in range(kw):
                            xx = j * sw - left + dj
                            base = (di * kw + dj) * C
                            if 0 <= y < h and 0 <= xx < w:
                                for ci in range(C):
                                    cols[row, base + ci] = x[b, y, xx, ci]
                            else:
                                for ci in range(C):
                                    cols[row, base + ci] = 0.0

    return im2col_kernel


@factory
def col2im(C: int, dtype=np.float32):

    @jit
    def col2im_kernel(dcols, kh, kw, sh, sw, top, left, out_h, out_w, dx):
        """Adjoint of im2col: dx (N, H, W, C) = the sum of every column entry at the pixel it came
        from (overwritten; entries that fall in the padding are dropped)."""
        n, h, w, _ = dx.shape
        dx[:] = 0.0
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    row = (b * out_h + i) * out_w + j
                    for di in range(kh):
                        y = i * sh - top + di
                        if y < 0 or y >= h:
                            continue
                        for dj in range(kw):
                            xx = j * sw - left + dj
                            if xx < 0 or xx >= w:
                                continue
                            base = (di * kw + dj) * C
                            for ci in range(C):
                                dx[b, y, xx, ci] += dcols[row, base + ci]

    return col2im_kernel


@factory
def scale_shift_relu_pool(C: int, pool: int, dtype=np.float32):
    P = pool * pool

    @jit
    def scale_shift_relu_pool_kernel(x, scale, shift, relu, y, windows):
        """x (N, H, W, C) -> y (N, H // pool, W // pool, C): x * scale + shift per channel (a conv's
        bias with scale 1, a batch norm's affine map), then the max over each pool x pool window, then
        ReLU; windows (like y, uint8) gets the winning position or INACTIVE."""
        n, out_h, out_w, _ = y.shape
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    for ch in range(C):
                        best = x[b, i * pool, j * pool, ch] * scale[ch] + shift[ch]
                        arg = 0
                        for q in range(1, P):
                            v = x[b, i * pool + q // pool, j * pool + q % pool, ch] * scale[ch] + shift[ch]
                            arg = q if v > best else arg
                            best = v if v > best else best
                        on = best > 0.0 or not relu
                        y[b, i, j, ch] = best if on else 0.0
                        windows[b, i, j, ch] = arg if on else INACTIVE

    return scale_shift_relu_pool_kernel


@factory
def unpool_relu_grad(C: int, pool: int, dtype=np.float32):
    T = dtype
    P = pool * pool

    @jit
    def unpool_relu_grad_kernel(dy, windows, dz, dbias):
        """Backward of scale_shift_relu_pool with scale 1 (a conv's bias): dy (N, H_out, W_out, C) ->
        dz (N, H, W, C), each window's gradient at its winner and zeros elsewhere (rows and columns the
        pooling dropped included), and dbias (C,), the sum of dz (float64 accumulators)."""
        n, h, w, _ = dz.shape
        _, out_h, out_w, _ = dy.shape
        total = np.zeros(C, dtype=np.float64)
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    for ch in range(C):
                        total[ch] += dy[b, i, j, ch] * T(windows[b, i, j, ch] != INACTIVE)
                    for q in range(P):
                        for ch in range(C):
                            dz[b, i * pool + q // pool, j * pool + q % pool, ch] = dy[b, i, j, ch] * T(
                                windows[b, i, j, ch] == q
                            )
            for i in range(out_h * pool, h):
                for j in range(w):
                    for ch in range(C):
                        dz[b, i, j, ch] = 0.0
            for i in range(out_h * pool):
                for j in range(out_w * pool, w):
                    for ch in range(C):
                        dz[b, i, j, ch] = 0.0
        for ch in range(C):
            dbias[ch] = total[ch]

    return unpool_relu_grad_kernel


@factory
def direct_conv_pool(C_in: int, C_out: int, kh: int, kw: int, pool: int, dtype=np.float32):
    """The direct convolution kernel for these sizes (2x2 pooling has one of its own)."""
    if pool == 2:
        return _direct_conv_pool2(C_in, C_out, kh, kw, dtype)
    return _direct_conv_pool_any(C_in, C_out, kh, kw, pool, dtype)


def _direct_conv_pool2(C_in: int, C_out: int, kh: int, kw: int, dtype):
    T = dtype

    @jit
    def direct_conv_pool2_kernel(xp, weight, bias, sh, sw, relu, y, windows):
        """direct_conv_pool with 2x2 pooling. The four window positions' accumulators are rows of one
        array indexed by constants, so LLVM keeps them in vector registers across the taps; the
        general kernel's row index varies with the position, and its accumulators go through memory
        at every tap (10-40 times slower on AMD Zen 4). Same arguments and results as that kernel."""
        n = xp.shape[0]
        _, out_h, out_w, _ = y.shape
        acc = np.empty((4, C_out), dtype=T)
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    r, c = 2 * i * sh, 2 * j * sw
                    for co in range(C_out):
                        acc[0, co] = acc[1, co] = acc[2, co] = acc[3, co] = bias[co]
                    for di in range(kh):
                        for dj in range(kw):
                            for ci in range(C_in):
                                v0 = xp[b, r + di, c + dj, ci]  # window positions 0..3, row-major
                                v1 = xp[b, r + di, c + sw + dj, ci]
                                v2 = xp[b, r + sh + di, c + dj, ci]
                                v3 = xp[b, r + sh + di, c + sw + dj, ci]
                                for co in range(C_out):
                                    w = weight[di, dj, ci, co]
                                    acc[0, co] += v0 * w
                                    acc[1, co] += v1 * w
                                    acc[2, co] += v2 * w
                                    acc[3, co] += v3 * w
                    for co in range(C_out):
                        best, arg = acc[0, co], 0
                        for q in (1, 2, 3):
                            if acc[q, co] > best:
                                best, arg = acc[q, co], q
                        on = best > 0.0 or not relu
                        y[b, i, j, co] = best if on else 0.0
                        windows[b, i, j, co] = arg if on else INACTIVE

    return direct_conv_pool2_kernel


def _direct_conv_pool_any(C_in: int, C_out: int, kh: int, kw: int, pool: int, dtype):
    T = dtype
    P = pool * pool

    @jit
    def direct_conv_pool_kernel(xp, weight, bias, sh, sw, relu, y, windows):
        """Convolution computed directly (no im2col), for inputs with few channels, fused with bias,
        max pooling and ReLU as in scale_shift_relu_pool. xp: the input, already zero-padded
        (N, H + top + bottom, W + left + right, C_in) -> y (N, H_c // pool, W_c // pool, C_out), with
        H_c x W_c the convolution's output size; windows as in scale_shift_relu_pool."""
        n = xp.shape[0]
        _, out_h, out_w, _ = y.shape
        acc = np.empty((P, C_out), dtype=T)
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    for q in range(P):
                        for co in range(C_out):
                            acc[q, co] = bias[co]
                    for di in range(kh):  # each kernel tap is loaded once for the window's P positions
                        for dj in range(kw):
                            for ci in range(C_in):
                                for q in range(P):
                                    r = (i * pool + q // pool) * sh + di
                                    c = (j * pool + q % pool) * sw + dj
                                    v = xp[b, r, c, ci]
                                    for co in range(C_out):
                                        acc[q, co] += v * weight[di, dj, ci, co]
                    for co in range(C_out):
                        best = acc[0, co]
                        arg = 0
                        for q in range(1, P):
                            better = acc[q, co] > best
                            best = acc[q, co] if better else best
                            arg = q if better else arg
                        on = best > 0.0 or not relu
                        y[b, i, j, co] = best if on else 0.0
                        windows[b, i, j, co] = arg if on else INACTIVE

    return direct_conv_pool_kernel


@factory
def direct_conv_pool_backward(C_in: int, C_out: int, kh: int, kw: int, pool: int, dtype=np.float32):
    T = dtype
    P = pool * pool

    @jit
    def direct_conv_pool_backward_kernel(xp, dy, windows, sh, sw, dweight, dbias):
        """Backward of direct_conv_pool for the kernels: dweight (kh, kw, C_in, C_out) and dbias
        (C_out,), overwritten. Sums run per image in float32, then across images in float64."""
        n = xp.shape[0]
        _, out_h, out_w, _ = dy.shape
        dw_total = np.zeros((kh, kw, C_in, C_out), dtype=np.float64)
        db_total = np.zeros(C_out, dtype=np.float64)
        for b in range(n):
            dw_image = np.zeros((kh, kw, C_in, C_out), dtype=T)
            db_image = np.zeros(C_out, dtype=T)
            for i in range(out_h):
                for j in range(out_w):
                    for co in range(C_out):
                        db_image[co] += dy[b, i, j, co] * T(windows[b, i, j, co] != INACTIVE)
                    for di in range(kh):
                        for dj in range(kw):
                            for ci in range(C_in):
                                for q in range(P):
                                    r = (i * pool + q // pool) * sh + di
                                    c = (j * pool + q % pool) * sw + dj
                                    v = xp[b, r, c, ci]
                                    for co in range(C_out):
                                        dw_image[di, dj, ci, co] += v * (
                                            dy[b, i, j, co] * T(windows[b, i, j, co] == q)
                                        )
            dw_total += dw_image
            db_total += db_image
        dweight[:] = dw_total
        dbias[:] = db_total

    return direct_conv_pool_backward_kernel


@factory
def direct_conv_input_grad(C_in: int, C_out: int, kh: int, kw: int, pool: int, dtype=np.float32):
    T = dtype
    P = pool * pool

    @jit
    def direct_conv_input_grad_kernel(weight, dy, windows, sh, sw, dxp):
        """Backward of direct_conv_pool for its (padded) input: dxp (N, H_p, W_p, C_in), overwritten."""
        n = dxp.shape[0]
        _, out_h, out_w, _ = dy.shape
        dxp[:] = 0.0
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    for q in range(P):
                        r0 = (i * pool + q // pool) * sh
                        c0 = (j * pool + q % pool) * sw
                        for di in range(kh):
                            for dj in range(kw):
                                for ci in range(C_in):
                                    s = T(0.0)
                                    for co in range(C_out):
                                        s += weight[di, dj, ci, co] * (
                                            dy[b, i, j, co] * T(windows[b, i, j, co] == q)
                                        )
                                    dxp[b, r0 + di, c0 + dj, ci] += s

    return direct_conv_input_grad_kernel


@factory
def bias_relu(C: int, dtype=np.float32):

    @jit
    def bias_relu_kernel(z, bias, relu):
        """In place on z (M, C): z = z + bias, then ReLU if asked."""
        for r in range(z.shape[0]):
            for ch in range(C):
                value = z[r, ch] + bias[ch]
                z[r, ch] = value if (value > 0.0 or not relu) else 0.0

    return bias_relu_kernel


@factory
def relu_grad(C: int, dtype=np.float32):
    T = dtype

    @jit
    def relu_grad_kernel(dy, y, relu, dz, dbias):
        """dz (M, C) = dy where y > 0 (everywhere without relu); dbias (C,) = the column sums of dz."""
        total = np.zeros(C, dtype=np.float64)
        for r in range(dy.shape[0]):
            for ch in range(C):
                g = dy[r, ch] * T(y[r, ch] > 0.0 or not relu)
                dz[r, ch] = g
                total[ch] += g
        for ch in range(C):
            dbias[ch] = total[ch]

    return relu_grad_kernel
