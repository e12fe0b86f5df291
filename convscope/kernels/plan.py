"""The plan: which kernel runs each layer of a model, decided once per model and backend.

`build_plan(layers, backend, logits_only)` walks the layers in order and groups neighbours that one
fused kernel can run:

    Conv2D [+ ReLU] [+ MaxPool2D 2x2/2]       -> ConvStage    (direct loops for C_in <= 4,
                                                              else im2col + BLAS matmul; 3x3
                                                              stride-1 convs by Winograd
                                                              F(2x2, 3x3) + BLAS matmul)
    BatchNorm2D [+ ReLU] [+ MaxPool2D 2x2/2]  -> BatchNormStage
    Dense [+ ReLU]                            -> DenseStage   (BLAS matmul + fused bias/ReLU)
    anything else                             -> ReferenceStage (the layer's own reference op)

With the 'numpy' backend every layer is a ReferenceStage. A stage has the layers' protocol,
`forward(x, training, rng, record)` and `backward(dy, need_dx)` (filling its layers' `grads`), plus
`layers` and `kernel` (what `describe` prints); `record=True` keeps what backward needs in inference
mode too (batch norm with its running statistics), for attribution (convscope.explain.attribution).
Sequential runs its plan's stages instead of its layers. The fused stages compute what their layers'
reference ops compute (tests/kernels compares them layer by layer).
"""

import threading

import numpy as np

DIRECT_MAX_CHANNELS = 4  # up to this many input channels, direct loops beat im2col + matmul (K = 9 C_in)


class ReferenceStage:
    """One layer on its reference op (convscope.ops)."""

    kernel = "reference"

    def __init__(self, layer, activate=True):
        self.layers = (layer,)
        self.activate = activate

    def forward(self, x, training=False, rng=None, record=False):
        layer = self.layers[0]
        if not self.activate:
            return layer.forward(x, training=training, rng=rng, activate=False)
        if record and not training:  # inference numbers, kept for a backward pass (attribution)
            return layer.forward(x, training=False, rng=rng)
        return layer.forward(x, training=True, rng=rng) if training else layer.infer(x)

    def backward(self, dy, need_dx=True):
        return self.layers[0].backward(dy, need_dx=need_dx)


def _stride_pair(stride) -> tuple[int, int]:
    return (stride, stride) if isinstance(stride, int) else tuple(stride)


def _bias(layer, channels, dtype):
    """The layer's bias (channels,), or zeros when it has none (the kernels always add one)."""
    bias = layer.params.get("bias")
    return bias if bias is not None else np.zeros(channels, dtype=dtype)


class Scratch:
    """A stage's reusable work arrays, by name: each is allocated again only when its shape changes.
    Reusing them saves the page faults of fresh multi-megabyte arrays at every step (a third of the
    time of a matmul-sized pass). Training has one set (a model trains in one thread per replica);
    inference has one per thread, so concurrent predictions on one model share nothing.

    A conv or batch-norm stage's output and input gradient live here too: the next stage reads the
    output (and keeps it for its backward), the stage before reads the gradient, and both are written
    again only by the next pass, after those reads. Sequential copies the logits it returns."""

    def __init__(self):
        self._training = {}
        self._inference = threading.local()

    def _arrays(self, training: bool) -> dict:
        return self._training if training else vars(self._inference).setdefault("arrays", {})

    def array(self, name, shape, training: bool, dtype=np.float32, zeros=False):
        """An array of `shape` (uninitialised unless `zeros`; a reused one keeps what the last use
        wrote, so `zeros` only promises zeros where no one writes)."""
        arrays = self._arrays(training)
        array = arrays.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = arrays[name] = np.zeros(shape, dtype) if zeros else np.empty(shape, dtype)
        return array

    def padded(self, x, padding, training: bool):
        """x (N, H, W, C) with zero rows and columns around it ((top, bottom), (left, right))."""
        (top, bottom), (left, right) = padding
        if top == bottom == left == right == 0:
            return x
        n, h, w, c = x.shape
        shape = (n, h + top + bottom, w + left + right, c)
        xp = self.array("padded", shape, training, x.dtype.type, zeros=True)
        xp[:, top : top + h, left : left + w] = x
        return xp

    def flat(self, name, size: int, training: bool, dtype=np.float32):
        """A 1-D array of `size` values (uninitialised): a view into a buffer that only grows, so that
        stages of different sizes can share one (see ConvStage's `shared`)."""
        arrays = self._arrays(training)
        buffer = arrays.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = arrays[name] = np.empty(max(size, 0 if buffer is None else buffer.size), dtype)
        return buffer[:size]


# The im2col path works on as many images at a time as fill ~1 MB of columns: measured against 512 KB
# and 2 MB on the 2-core machine, 6-20% faster than 512 KB for the seed CNN's and small_vgg's training
# and ~15% for inference (larger matrix products for BLAS), while 2 MB slowed small_vgg.
CHUNK_BYTES = 1 << 20


# Inference's Winograd path transforms as many images at a time as fill ~4 MB of tiles and products:
# measured against 1, 2 and 8 MB on the 2-core machine, the fastest or within noise of it for the seed
# CNN's second layer and for ResNet-20's three stages (the 16 products get too small for BLAS below).
WINOGRAD_CHUNK_BYTES = 4 << 20


def _chunk_images(column_bytes_per_image: int) -> int:
    return max(1, CHUNK_BYTES // column_bytes_per_image)


class ConvStage:
    """Conv2D, optionally with the ReLU and the 2x2 max pooling after it, in one fused kernel.

    Kernels are looked up (compiled once, then cached) for the layer's channel counts, kernel size and
    dtype at each call, so a model whose parameters change dtype (float64 gradient checks) follows."""

    def __init__(self, layers, relu: bool, pool: int, direct: bool, shared=None):
        """shared: a Scratch for the work arrays that the conv stages of one plan, which run one after
        another, can share (Winograd's tiles and products); default: the stage's own."""
        from convscope.kernels import conv

        self.kernels = conv
        self.layers = tuple(layers)
        self.conv = layers[0]
        self.relu, self.pool, self.direct = relu, pool, direct
        self.kernel = "direct conv" if direct else "im2col + matmul"
        self.kernel += (" + bias" if self.conv.use_bias else "") + (" + ReLU" if relu else "")
        self.kernel += " + 2x2 max pool" if pool == 2 else ""
        self.winograd = self._winograd_tiles()
        if self.winograd is not None:
            self.kernel = self.kernel.replace("im2col + matmul", "Winograd F(2x2, 3x3) + matmul")
        self.scratch = Scratch()
        self.shared = shared if shared is not None else self.scratch
        self._cache = None

    def _winograd_tiles(self):
        """(tile rows, tile columns) when the stage runs Winograd F(2x2, 3x3): a 3x3 stride-1 conv on
        the im2col path (convscope.kernels.winograd), else None."""
        conv = self.conv
        if (
            self.direct
            or tuple(conv.params["weight"].shape[:2]) != (3, 3)
            or _stride_pair(conv.stride) != (1, 1)
        ):
            return None
        from convscope.kernels.winograd import tile_grid

        out_h, out_w, _ = conv.output_shape
        return tile_grid(out_h, out_w, self.pool)

    def _geometry(self):
        conv = self.conv
        (top, _), (left, _) = conv.padding
        sh, sw = _stride_pair(conv.stride)
        out_h, out_w, c_out = conv.output_shape
        return sh, sw, top, left, out_h, out_w, c_out

    def forward(self, x, training=False, rng=None, record=False):
        """record: keep what backward needs in inference too (a conv computes the same either way)."""
        training = training or record
        k = self.kernels
        weight = self.conv.params["weight"]
        kh, kw, c_in, c_out = weight.shape
        dtype = weight.dtype.type
        x = np.ascontiguousarray(x, dtype=dtype)
        sh, sw, top, left, out_h, out_w, _ = self._geometry()
        bias = _bias(self.conv, c_out, dtype)
        n = x.shape[0]
        shape = (n, out_h // self.pool, out_w // self.pool, c_out)
        scratch = self.scratch
        y = scratch.array("y", shape, training, dtype)  # read by the next stage (and its backward) only
        if self.winograd is not None:
            return self._winograd_forward(x, bias, y, training)
        if self.direct:
            xp = scratch.padded(x, self.conv.padding, training)
            windows = scratch.array("windows", shape, training, np.uint8)
            kernel = k.direct_conv_pool(c_in, c_out, kh, kw, self.pool, dtype)
            kernel(xp, weight, bias, sh, sw, self.relu, y, windows)
            if training:
                self._cache = (xp, windows)
            return y
        kernels = weight.reshape(-1, c_out)
        pixels = out_h * out_w
        per = _chunk_images(pixels * kernels.shape[0] * weight.itemsize)
        cols = scratch.array("cols", (min(n, per) * pixels, kernels.shape[0]), training, dtype)
        im2col = k.im2col(c_in, dtype)
        if self.pool == 1:
            z = y.reshape(n * pixels, c_out)  # the output, filled chunk by chunk
            epilogue = k.bias_relu(c_out, dtype) if self.conv.use_bias or self.relu else None
        else:
            windows = scratch.array("windows", shape, training, np.uint8)
            z = scratch.array("z", (min(n, per) * pixels, c_out), training, dtype)
            epilogue = k.scale_shift_relu_pool(c_out, self.pool, dtype)
            ones = np.ones(c_out, dtype=dtype)
        for start in range(0, n, per):
            stop = min(n, start + per)
            rows = slice(0, (stop - start) * pixels)
            im2col(x[start:stop], kh, kw, sh, sw, top, left, out_h, out_w, cols[rows])
            if self.pool == 1:
                out = z[start * pixels : stop * pixels]
                np.matmul(cols[rows], kernels, out=out)
                if epilogue is not None:
                    epilogue(out, bias, self.relu)
            else:
                np.matmul(cols[rows], kernels, out=z[rows])
                block = z[rows].reshape(stop - start, out_h, out_w, c_out)
                epilogue(block, ones, bias, self.relu, y[start:stop], windows[start:stop])
        if training:
            self._cache = (x, y if self.pool == 1 else windows)
        return y

    def _winograd_chunks(self, n: int):
        """(images per chunk, tiles per image) for the Winograd path: chunks of equal size holding at
        most WINOGRAD_CHUNK_BYTES of transformed tiles and products (no small last product)."""
        from convscope.kernels.winograd import POSITIONS

        weight = self.conv.params["weight"]
        _, _, c_in, c_out = weight.shape
        per_image = self.winograd[0] * self.winograd[1]
        most = max(1, WINOGRAD_CHUNK_BYTES // (per_image * POSITIONS * (c_in + c_out) * weight.itemsize))
        return -(-n // -(-n // most)), per_image

    def _winograd_arrays(self, count: int, channels: dict, training: bool, dtype) -> dict:
        """Views (16, count, C) of the shared flat buffers, by name: each chunk's arrays contiguous."""
        from convscope.kernels.winograd import POSITIONS

        return {
            name: self.shared.flat(name, POSITIONS * count * c, training, dtype).reshape(POSITIONS, count, c)
            for name, c in channels.items()
        }

    def _winograd_forward(self, x, bias, y, training=False):
        """Through Winograd F(2x2, 3x3), a chunk of images at a time (_winograd_chunks)."""
        from convscope.kernels import winograd

        weight = self.conv.params["weight"]
        _, _, c_in, c_out = weight.shape
        dtype = weight.dtype.type
        tiles_h, tiles_w = self.winograd
        scratch = self.scratch
        u = scratch.array("winograd_kernels", (winograd.POSITIONS, c_in, c_out), training, dtype)
        winograd.transform_kernels(c_in, c_out, dtype)(weight, u)
        xp = scratch.padded(x, self.conv.padding, training)
        n = x.shape[0]
        per, per_image = self._winograd_chunks(n)
        transform_tiles = winograd.transform_tiles(c_in, dtype)
        transform_outputs = winograd.transform_outputs(c_out, self.pool, dtype)
        pooled = self.pool == 2
        windows = scratch.array("windows", y.shape if pooled else (0, 0, 0, 0), training, np.uint8)
        channels = {"winograd_tiles": c_in, "winograd_products": c_out}
        for start in range(0, n, per):
            stop = min(n, start + per)
            arrays = self._winograd_arrays((stop - start) * per_image, channels, training, dtype)
            v, m = arrays["winograd_tiles"], arrays["winograd_products"]
            transform_tiles(xp[start:stop], tiles_h, tiles_w, v)
            np.matmul(v, u, out=m)
            transform_outputs(m, bias, self.relu, tiles_h, tiles_w, y[start:stop], windows[start:stop])
        if training:
            self._cache = (xp, windows if pooled else y)
        return y

    def _winograd_backward(self, dy, need_dx):
        """The adjoint of _winograd_forward (convscope.kernels.winograd), a chunk at a time: the
        z-gradient from dy (and the ReLU's mask), its transform dM, then dU += Vᵀ dM with the tiles V
        transformed again from the input (cheaper than keeping 4x the input between the passes), and
        dV = dM Uᵀ turned into dx."""
        from convscope.kernels import winograd

        xp, saved = self._cache
        weight = self.conv.params["weight"]
        _, _, c_in, c_out = weight.shape
        dtype = weight.dtype.type
        tiles_h, tiles_w = self.winograd
        _, _, top, left, out_h, out_w, _ = self._geometry()
        scratch = self.scratch
        u = scratch.array("winograd_kernels", (winograd.POSITIONS, c_in, c_out), True, dtype)
        n = xp.shape[0]
        per, per_image = self._winograd_chunks(n)
        dz = scratch.array("dz", (per, out_h, out_w, c_out), True, dtype)
        dx = scratch.array("dx", (n, *self.conv.input_shape), True, dtype) if need_dx else None
        du = np.zeros((winograd.POSITIONS, c_in, c_out), dtype=np.float64)
        db = np.zeros(c_out, dtype=np.float64)
        transform_tiles = winograd.transform_tiles(c_in, dtype)
        transform_gradients = winograd.transform_output_gradients(c_out, dtype)
        transform_tile_gradients = winograd.transform_tile_gradients(c_in, dtype)
        channels = {"winograd_tiles": c_in, "winograd_products": c_out}
        channels.update({"winograd_tile_gradients": c_in} if need_dx else {})
        for start in range(0, n, per):
            stop = min(n, start + per)
            dz_chunk = self._z_gradient(dy, saved, start, stop, dz, db)
            arrays = self._winograd_arrays((stop - start) * per_image, channels, True, dtype)
            v, dm = arrays["winograd_tiles"], arrays["winograd_products"]
            transform_gradients(dz_chunk, tiles_h, tiles_w, dm)
            transform_tiles(xp[start:stop], tiles_h, tiles_w, v)
            du += np.matmul(v.transpose(0, 2, 1), dm)
            if need_dx:
                dv = arrays["winograd_tile_gradients"]
                np.matmul(dm, u.transpose(0, 2, 1), out=dv)
                transform_tile_gradients(dv, tiles_h, tiles_w, top, left, dx[start:stop])
        dw = np.empty(weight.shape, dtype=np.float64)
        winograd.transform_kernel_gradients(c_in, c_out, np.float64)(du, dw)
        return dw.astype(dtype), db.astype(dtype), dx

    def backward(self, dy, need_dx=True):
        k = self.kernels
        weight = self.conv.params["weight"]
        kh, kw, c_in, c_out = weight.shape
        dtype = weight.dtype.type
        dy = np.ascontiguousarray(dy, dtype=dtype)
        sh, sw, top, left, out_h, out_w, _ = self._geometry()
        db = np.empty(c_out, dtype=dtype)
        dx = None
        if self.direct:
            xp, windows = self._cache
            dw = np.empty_like(weight)
            kernel = k.direct_conv_pool_backward(c_in, c_out, kh, kw, self.pool, dtype)
            kernel(xp, dy, windows, sh, sw, dw, db)
            if need_dx:
                dxp = self.scratch.array("padded_gradient", xp.shape, True, dtype)
                kernel = k.direct_conv_input_grad(c_in, c_out, kh, kw, self.pool, dtype)
                kernel(weight, dy, windows, sh, sw, dxp)
                (top, bottom), (left, right) = self.conv.padding
                dx = self.scratch.array("dx", (xp.shape[0], *self.conv.input_shape), True, dtype)
                dx[...] = dxp[:, top : xp.shape[1] - bottom, left : xp.shape[2] - right]
        elif self.winograd is not None:
            dw, db, dx = self._winograd_backward(dy, need_dx)
        else:
            dw, db, dx = self._backward_by_chunks(dy, need_dx)
        self.conv.grads["weight"] = dw
        if self.conv.use_bias:
            self.conv.grads["bias"] = db
        self._cache = None
        return dx

    def _z_gradient(self, dy, saved, start, stop, dz, db):
        """The gradient of images start:stop's conv outputs z (before ReLU and pooling), (stop - start,
        out_h, out_w, C_out), from dy and what forward kept (y without pooling, the window codes with),
        in dz's first rows (dy itself for a plain conv); adds its sums over pixels to db (float64)."""
        c_out = dz.shape[3]
        dtype = dz.dtype.type
        if self.pool == 1 and not (self.relu or self.conv.use_bias):  # a plain conv: dz is dy
            return dy[start:stop]
        block = dz[: stop - start]
        db_chunk = np.empty(c_out, dtype=dtype)
        if self.pool == 1:
            flat = (-1, c_out)
            self.kernels.relu_grad(c_out, dtype)(
                dy[start:stop].reshape(flat),
                saved[start:stop].reshape(flat),
                self.relu,
                block.reshape(flat),
                db_chunk,
            )
        else:
            self.kernels.unpool_relu_grad(c_out, self.pool, dtype)(
                dy[start:stop], saved[start:stop], block, db_chunk
            )
        db += db_chunk
        return block

    def _backward_by_chunks(self, dy, need_dx):
        """The im2col path's backward, a few images at a time: their columns are rebuilt from the
        input (cheaper than keeping N * H * W * kh * kw * C_in of them between the passes), their
        z-gradient computed from dy and the window codes, then dw accumulated and dx written."""
        k = self.kernels
        x, saved = self._cache
        weight = self.conv.params["weight"]
        kh, kw, c_in, c_out = weight.shape
        dtype = weight.dtype.type
        sh, sw, top, left, out_h, out_w, _ = self._geometry()
        kernels = weight.reshape(-1, c_out)
        n, pixels = x.shape[0], out_h * out_w
        per = _chunk_images(pixels * kernels.shape[0] * weight.itemsize)
        scratch = self.scratch
        cols = scratch.array("cols", (min(n, per) * pixels, kernels.shape[0]), True, dtype)
        dz = scratch.array("dz", (min(n, per), out_h, out_w, c_out), True, dtype)
        dcols = scratch.array("dcols", cols.shape, True, dtype) if need_dx else None
        dx = scratch.array("dx", x.shape, True, dtype) if need_dx else None  # read by the stage before only
        im2col, col2im = k.im2col(c_in, dtype), k.col2im(c_in, dtype)
        dw = np.zeros(kernels.shape, dtype=np.float64)
        db = np.zeros(c_out, dtype=np.float64)
        for start in range(0, n, per):
            stop = min(n, start + per)
            rows = slice(0, (stop - start) * pixels)
            gradient_rows = self._z_gradient(dy, saved, start, stop, dz, db).reshape(-1, c_out)
            im2col(x[start:stop], kh, kw, sh, sw, top, left, out_h, out_w, cols[rows])
            dw += cols[rows].T @ gradient_rows
            if need_dx:
                np.matmul(gradient_rows, kernels.T, out=dcols[rows])
                col2im(dcols[rows], kh, kw, sh, sw, top, left, out_h, out_w, dx[start:stop])
        return dw.astype(dtype).reshape(weight.shape), db.astype(dtype), dx


class BatchNormStage:
    """BatchNorm2D, optionally with the ReLU and the 2x2 max pooling after it, in one fused kernel."""

    def __init__(self, layers, relu: bool, pool: int):
        from convscope.kernels import conv, norm

        self.kernels, self.epilogues = norm, conv
        self.layers = tuple(layers)
        self.norm = layers[0]
        self.relu, self.pool = relu, pool
        self.kernel = "batch norm" + (" + ReLU" if relu else "") + (" + 2x2 max pool" if pool == 2 else "")
        self.scratch = Scratch()
        self._cache = None

    def forward(self, x, training=False, rng=None, record=False):
        """record: in inference, keep what the inference-mode backward needs (attribution)."""
        from convscope.ops import BatchStatistics

        bn = self.norm
        weight, bias = bn.params["weight"], bn.params["bias"]
        dtype = weight.dtype.type
        x = np.ascontiguousarray(x, dtype=dtype)
        n, h, w, c = x.shape
        if training:
            if n * h * w < 2:
                raise ValueError(
                    f"batchnorm2d: training needs more than 1 value per channel, got input shape {x.shape}"
                )
            mean, var = np.empty(c, dtype=dtype), np.empty(c, dtype=dtype)
            self.kernels.channel_mean_var(c, dtype)(x.reshape(-1, c), mean, var)
            bn.batch_statistics = BatchStatistics(n * h * w, mean, var)
        else:
            mean, var = bn.buffers["running_mean"], bn.buffers["running_var"]
        inv_std = (1.0 / np.sqrt(var + dtype(bn.eps))).astype(dtype)
        scale = (weight * inv_std).astype(dtype)
        shift = (bias - mean * scale).astype(dtype)
        shape = (n, h // self.pool, w // self.pool, c)
        keep = training or record
        y = self.scratch.array("y", shape, keep, dtype)  # read by the next stage (and its backward) only
        windows = self.scratch.array("windows", shape, keep, np.uint8)
        self.epilogues.scale_shift_relu_pool(c, self.pool, dtype)(x, scale, shift, self.relu, y, windows)
        if training:
            self._cache = (x, mean, inv_std, windows)
        elif record:
            self._cache = (x, mean, inv_std, windows, scale)
        return y

    def _inference_backward(self, dy):
        """Backward of inference-mode batch norm (a fixed per-channel x * scale + shift) + ReLU +
        pooling: dz from the window codes, then dx = dz * scale."""
        x, mean, inv_std, windows, scale = self._cache
        dtype = scale.dtype.type
        c = x.shape[3]
        dz = self.scratch.array("dx", x.shape, True, dtype)  # read by the stage before only
        dbias = np.empty(c, dtype=dtype)
        self.epilogues.unpool_relu_grad(c, self.pool, dtype)(
            np.ascontiguousarray(dy, dtype=dtype), windows, dz, dbias
        )
        self.norm.grads["weight"] = (
            ((x - mean) * inv_std * dz).sum(axis=(0, 1, 2), dtype=np.float64).astype(dtype)
        )
        self.norm.grads["bias"] = dbias
        dz *= scale
        self._cache = None
        return dz

    def backward(self, dy, need_dx=True):
        if len(self._cache) == 5:
            return self._inference_backward(dy)
        x, mean, inv_std, windows = self._cache
        weight = self.norm.params["weight"]
        dtype = weight.dtype.type
        dy = np.ascontiguousarray(dy, dtype=dtype)
        c = x.shape[3]
        dx = self.scratch.array("dx", x.shape, True, dtype)  # read by the stage before only
        dweight, dbias = np.empty(c, dtype=dtype), np.empty(c, dtype=dtype)
        self.kernels.batchnorm_relu_pool_backward(c, self.pool, dtype)(
            x, mean, inv_std, weight, dy, windows, dx, dweight, dbias
        )
        self.norm.grads["weight"], self.norm.grads["bias"] = dweight, dbias
        self._cache = None
        return dx


class DenseStage:
    """Dense, optionally with the ReLU after it: a BLAS matmul, then bias and ReLU in one pass."""

    def __init__(self, layers, relu: bool):
        from convscope.kernels import conv

        self.kernels = conv
        self.layers = tuple(layers)
        self.dense = layers[0]
        self.relu = relu
        self.kernel = "matmul" + (" + bias" if self.dense.use_bias else "") + (" + ReLU" if relu else "")
        self._cache = None

    def forward(self, x, training=False, rng=None, record=False):
        weight = self.dense.params["weight"]
        dtype = weight.dtype.type
        if x.ndim != 2 or x.shape[1] != weight.shape[0]:
            raise ValueError(f"dense: weights expect {weight.shape[0]} inputs, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=dtype)
        y = x @ weight
        if self.dense.use_bias or self.relu:
            self.kernels.bias_relu(self.dense.units, dtype)(
                y, _bias(self.dense, self.dense.units, dtype), self.relu
            )
        if training or record:
            self._cache = (x, y)
        return y

    def backward(self, dy, need_dx=True):
        x, y = self._cache
        weight = self.dense.params["weight"]
        dtype = weight.dtype.type
        dz = np.empty(dy.shape, dtype=dtype)
        db = np.empty(dy.shape[1], dtype=dtype)
        self.kernels.relu_grad(self.dense.units, dtype)(
            np.ascontiguousarray(dy, dtype=dtype), y, self.relu, dz, db
        )
        self.dense.grads["weight"] = x.T @ dz
        if self.dense.use_bias:
            self.dense.grads["bias"] = db
        self._cache = None
        return dz @ weight.T if need_dx else None


class ResidualStage:
    """A residual block (convscope.blocks.Residual): its body and its shortcut run on plans of their
    own (fused stages where their layers allow), then one kernel adds the two and applies the block's
    ReLU; the backward sends that gradient through both branches and adds what reaches the input."""

    def __init__(self, block, backend: str, shared=None):
        from convscope.kernels import residual

        self.kernels = residual
        self.layers = (block,)
        self.block = block
        self.relu = block.relu
        self.branches = (
            ("body", build_plan(block.body, backend, shared=shared)),
            ("shortcut", build_plan(block.shortcut, backend, shared=shared)),
        )
        self.kernel = "residual block: body + shortcut, then add" + (" + ReLU" if self.relu else "")
        self.scratch = Scratch()
        self._cache = None

    def forward(self, x, training=False, rng=None, record=False):
        """record: in inference, keep what backward needs (attribution), in both branches too."""
        outputs = {}
        for branch, stages in self.branches:
            h = x
            for stage in stages:
                h = stage.forward(h, training=training, rng=rng, record=record)
            outputs[branch] = h
        body, shortcut = outputs["body"], outputs["shortcut"]
        if body.shape != shortcut.shape:
            raise ValueError(f"residual: the body gives {body.shape}, the shortcut {shortcut.shape}")
        dtype = body.dtype.type
        y = self.scratch.array("y", body.shape, training, dtype)  # read by the next stage only
        k = self.kernels
        k.add_relu(k.flat(body), k.flat(np.asarray(shortcut, dtype=dtype)), self.relu, y.reshape(-1))
        if training or record:
            self._cache = y
        return y

    def backward(self, dy, need_dx=True):
        y = self._cache
        k = self.kernels
        d = self.scratch.array("d", y.shape, True, y.dtype.type)
        k.relu_grad(k.flat(np.asarray(dy, dtype=y.dtype)), y.reshape(-1), self.relu, d.reshape(-1))
        gradients = {}
        for branch, stages in self.branches:
            g = d
            for index in range(len(stages) - 1, -1, -1):
                g = stages[index].backward(g, need_dx=need_dx or index > 0)
            gradients[branch] = g
        self._cache = None
        if not need_dx:
            return None
        dx = self.scratch.array("dx", gradients["body"].shape, True, y.dtype.type)  # read by the stage before
        k.add(k.flat(gradients["body"]), k.flat(gradients["shortcut"]), dx.reshape(-1))
        return dx


def _is(layer, name: str) -> bool:
    return type(layer).__name__ == name


def _plain_conv(layer) -> bool:
    """A Conv2D the fused kernels cover: no dilation, one group."""
    return getattr(layer, "dilation", (1, 1)) in ((1, 1), 1) and getattr(layer, "groups", 1) == 1


def _pool_2x2(layer) -> bool:
    return (
        _is(layer, "MaxPool2D")
        and tuple(layer.pool_size) == (2, 2)
        and _stride_pair(layer.stride) == (2, 2)
        and getattr(layer, "padding", ((0, 0), (0, 0))) in (((0, 0), (0, 0)), 0)
        and not getattr(layer, "ceil_mode", False)
    )


def _absorb(layers, start: int, activation, pooling=True):
    """After the layer at `start`: (relu, pool, next index) for a following ReLU (unless the layer
    has its own activation) and, if `pooling`, 2x2 max pooling."""
    i = start + 1
    relu = activation == "relu"
    if activation is None and i < len(layers) and _is(layers[i], "ReLU"):
        relu, i = True, i + 1
    pool = 1
    if pooling and i < len(layers) and _pool_2x2(layers[i]):
        pool, i = 2, i + 1
    return relu, pool, i


def build_plan(layers, backend: str, logits_only: bool = False, shared=None) -> list:
    """Stages covering `layers` in order. logits_only: the last layer's own softmax activation is
    skipped (training and inference read its logits). The conv stages share one Scratch (`shared`,
    made here unless given) for the work arrays they only need while they run."""
    shared = shared if shared is not None else Scratch()
    stages = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        last = i == len(layers) - 1
        activation = getattr(layer, "activation", None)
        if logits_only and last:
            activation = None if activation == "softmax" else activation
        fused = backend == "numba" and activation in (None, "relu")
        if backend == "numba" and _is(layer, "Residual"):
            end = i + 1
            stages.append(ResidualStage(layer, backend, shared))
        elif fused and _is(layer, "Conv2D") and _plain_conv(layer):
            relu, pool, end = _absorb(layers, i, activation)
            direct = layer.input_shape[2] <= DIRECT_MAX_CHANNELS
            stages.append(ConvStage(layers[i:end], relu, pool, direct, shared))
        elif fused and _is(layer, "BatchNorm2D"):
            relu, pool, end = _absorb(layers, i, None)
            stages.append(BatchNormStage(layers[i:end], relu, pool))
        elif fused and _is(layer, "Dense"):
            relu, _, end = _absorb(layers, i, activation, pooling=False)
            stages.append(DenseStage(layers[i:end], relu))
        else:
            end = i + 1
            stages.append(ReferenceStage(layer, activate=not (logits_only and last)))
        i = end
    return stages


INFERENCE_CHUNK = 32  # images per pass in inference: every stage's work arrays stay in the caches


def infer(stages, x):
    """Inference-mode output of `stages` for a batch (N, ...), computed INFERENCE_CHUNK images at a
    time (each image's output depends on it alone at inference, batch norm included)."""
    n = x.shape[0]
    if n <= INFERENCE_CHUNK:
        for stage in stages:
            x = stage.forward(x)
        return np.array(x)  # a copy: the last stage's output may live in its work arrays
    parts = [infer(stages, x[start : start + INFERENCE_CHUNK]) for start in range(0, n, INFERENCE_CHUNK)]
    return np.concatenate(parts)


def describe(stages, indent: str = "") -> list[str]:
    """One line per stage: its layers' names and the kernel that runs them; a residual block's
    branches follow it, indented."""
    lines = []
    for stage in stages:
        lines.append(f"{indent}{' + '.join(layer.name for layer in stage.layers)}: {stage.kernel}")
        for branch, substages in getattr(stage, "branches", ()):
            lines += describe(substages, indent + "  ") or [f"{indent}  {branch}: identity"]
    return lines
