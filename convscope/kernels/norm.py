"""Compiled kernels for batch normalisation fused with ReLU and 2x2 max pooling (the forward's
normalise + ReLU + pool is conv.scale_shift_relu_pool, shared with the conv epilogue).

Images (N, H, W, C); `pool` and the window codes as in convscope.kernels.conv. The block after the
normalisation is never stored: the backward pass recomputes x_hat = (x - mean) * inv_std from the
input it keeps, and reads the ReLU and pooling decisions from the window codes.
"""



import numpy as np

from convscope.kernels.compile import factory, jit


@factory
def channel_mean_var(C: int, dtype=np.float32):

    @jit
    def channel_mean_var_kernel(rows, mean, var):
        """mean (C,) and biased variance (C,) of rows (M, C) over M, in float64: two passes, the mean
        and then the mean squared deviation from it, as the reference."""
        m = rows.shape[0]
        total = np.zeros(C, dtype=np.float64)
        for r in range(m):
            for ch in range(C):
                total[ch] += rows[r, ch]
        centre = total / m
        squares = np.zeros(C, dtype=np.float64)
        for r in range(m):
            for ch in range(C):
                d = rows[r, ch] - centre[ch]
                squares[ch] += d * d
        for ch in range(C):
            mean[ch] = centre[ch]
            var[ch] = squares[ch] / m

    return channel_mean_var_kernel


@factory
def batchnorm_relu_pool_backward(C: int, pool: int, dtype=np.float32):
    T = dtype
    P = pool * pool

    @jit
    def batchnorm_relu_pool_backward_kernel(x, mean, inv_std, weight, dy, windows, dx, dweight, dbias):
        """Backward of training-mode batch norm + ReLU + pooling: dx (N, H, W, C) (overwritten),
        dweight (C,), dbias (C,). With g the gradient reaching the normalised-and-shifted block and
        m = N * H * W: dx = weight * inv_std * (g - sum(g) / m - x_hat * sum(g * x_hat) / m).
        Rows and columns the pooling dropped get g = 0."""
        n, h, w, _ = x.shape
        _, out_h, out_w, _ = dy.shape
        sum_g = np.zeros(C, dtype=np.float64)
        sum_gx = np.zeros(C, dtype=np.float64)
        for b in range(n):
            for i in range(out_h):
                for j in range(out_w):
                    for q in range(P):
                        r, c = i * pool + q // pool, j * pool + q % pool
                        for ch in range(C):
                            g = dy[b, i, j, ch] * T(windows[b, i, j, ch] == q)
                            sum_g[ch] += g
                            sum_gx[ch] += g * ((x[b, r, c, ch] - mean[ch]) * inv_std[ch])
        count = n * h * w
        mean_g = np.empty(C, dtype=T)
        mean_gx = np.empty(C, dtype=T)
        k = np.empty(C, dtype=T)
        for ch in range(C):
            dbias[ch] = sum_g[ch]
            dweight[ch] = sum_gx[ch]
            mean_g[ch] = sum_g[ch] / count
            mean_gx[ch] = sum_gx[ch] / count
            k[ch] = weight[ch] * inv_std[ch]
        for b in range(n):
            for i in range(h):
                for j in range(w):
                    for ch in range(C):
                        x_hat = (x[b, i, j, ch] - mean[ch]) * inv_std[ch]
                        dx[b, i, j, ch] = k[ch] * (-mean_g[ch] - x_hat * mean_gx[ch])
            for i in range(out_h):
                for j in range(out_w):
                    for q in range(P):
                        r, c = i * pool + q // pool, j * pool + q % pool
                        for ch in range(C):
                            g = dy[b, i, j, ch] * T(windows[b, i, j, ch] == q)
                            dx[b, r, c, ch] += k[ch] * g

    return batchnorm_relu_pool_backward_kernel
