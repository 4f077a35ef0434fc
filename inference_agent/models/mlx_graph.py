"""Running an ONNX graph with MLX.

A small interpreter over the operators the OCR models use (convolutions, normalisation,
activations, pooling, resize, attention arithmetic, shape plumbing). Tensors are NCHW as in
ONNX; convolutions and pools go through MLX's NHWC kernels. Shape arithmetic (Shape, Slice,
Cast, Concat, Squeeze, Unsqueeze on shapes) stays in NumPy. An operator, or an attribute
variant of one, that it does not implement is named by `unsupported()` and is a clear
ModelError at load time, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from framewire.inference_agent.models.manifest import ModelError, ModelManifest

Value = Any  # np.ndarray (constants, shapes) or mx.array
Attrs = dict[str, Any]
Op = Callable[["MlxSession", Any, list[Value], Attrs], Value]

# tf_half_pixel_for_centers (gone since opset 13) and tf_crop_and_resize are left out:
# onnxruntime, the reference these are checked against, runs neither.
_COORDINATES = {b"half_pixel", b"pytorch_half_pixel", b"align_corners", b"asymmetric"}
_ROUNDING = {b"round_prefer_floor", b"round_prefer_ceil", b"floor", b"ceil"}
_CONSTANT_FIELDS = {"value", "value_float", "value_floats", "value_int", "value_ints"}
_SAME = (b"SAME_UPPER", b"SAME_LOWER")


def _attrs(node: Any) -> Attrs:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _constant_value(node: Any) -> np.ndarray:
    from onnx import numpy_helper

    k = _attrs(node)
    if "value" in k:
        return np.asarray(numpy_helper.to_array(k["value"]))
    if "value_float" in k or "value_floats" in k:
        return np.array(k.get("value_float", k.get("value_floats")), dtype=np.float32)
    return np.array(k.get("value_int", k.get("value_ints")), dtype=np.int64)


def unsupported(model: bytes | Any) -> list[str]:
    """What in `model` (bytes or an onnx ModelProto) this interpreter cannot run, sorted.

    Operator names, or `Op(detail)` for an attribute variant that is not implemented. Empty
    means MLX can run the graph. Needs only the onnx package, not MLX.
    """
    import onnx

    proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else model
    graph, opset = proto.graph, _opset(proto)
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and "value" in _attrs(node):
            shapes[node.output[0]] = tuple(_attrs(node)["value"].dims)
    found: set[str] = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            found.add(f"{node.domain}.{node.op_type}")
        elif node.op_type not in OPERATORS:
            found.add(node.op_type)
        elif problem := _variant_problem(node, _attrs(node), opset, shapes):
            found.add(f"{node.op_type}({problem})")
    return sorted(found)


def _variant_problem(
    node: Any, k: Attrs, opset: int, shapes: dict[str, tuple[int, ...]]
) -> str | None:
    op = node.op_type
    if op == "Constant" and not _CONSTANT_FIELDS & set(k):
        return "non-numeric value"
    if op in ("Conv", "ConvTranspose"):
        if len(node.input) < 2 or node.input[1] not in shapes:
            return "weights computed at run time"
        if len(shapes[node.input[1]]) != 4:
            return "not 2-D"
    if op == "ConvTranspose":
        if k.get("output_shape"):
            return "output_shape"
        if k.get("auto_pad", b"NOTSET") != b"NOTSET":
            return "auto_pad"
    if op in ("MaxPool", "AveragePool"):
        if len(k["kernel_shape"]) != 2:
            return "not 2-D"
        if any(d != 1 for d in k.get("dilations", [])):
            return "dilations"
        if len(node.output) > 1 and node.output[1]:
            return "indices output"
    if op == "BatchNormalization" and any(node.output[1:]):
        return "training outputs"
    if op == "Resize":
        if opset < 11:
            return f"opset {opset}"
        if (mode := k.get("mode", b"nearest")) != b"nearest":
            return f"mode={mode.decode()}"
        coordinates = k.get("coordinate_transformation_mode", b"half_pixel")
        if coordinates not in _COORDINATES:
            return f"coordinate_transformation_mode={coordinates.decode()}"
        if (rounding := k.get("nearest_mode", b"round_prefer_floor")) not in _ROUNDING:
            return f"nearest_mode={rounding.decode()}"
        if k.get("antialias") or k.get("axes") or k.get("keep_aspect_ratio_policy"):
            return "antialias, axes or keep_aspect_ratio_policy"
    return None


class MlxSession:
    """`session(x) -> [outputs]`, like the onnxruntime session, computed by MLX."""

    backend = "mlx"

    def __init__(self, manifest: ModelManifest, model: bytes) -> None:
        import mlx.core as mx
        import onnx
        from onnx import numpy_helper

        self.mx = mx
        self.provider = f"mlx-{mx.default_device()}"
        proto = onnx.load_model_from_string(model)
        missing = unsupported(proto)
        if missing:
            raise ModelError(f"model {manifest.name}: MLX backend lacks operator(s) {missing}")
        graph = proto.graph
        self.opset = _opset(proto)
        self.weights: dict[str, Value] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant":
                self.weights[node.output[0]] = _constant_value(node)
        # attributes decoded once, not on every call
        self._plan = [
            (OPERATORS[n.op_type], n, _attrs(n)) for n in graph.node if n.op_type != "Constant"
        ]
        self.input = next(i.name for i in graph.input if i.name not in self.weights)
        self.outputs = [o.name for o in graph.output]
        self._prepared: dict[str, Any] = {}

    # --- helpers ----------------------------------------------------------------------------
    def _mx(self, v: Value) -> Any:
        return v if isinstance(v, self.mx.array) else self.mx.array(np.asarray(v))

    def _weight(self, name: str, convert: Callable[[np.ndarray], np.ndarray]) -> Any:
        key = f"{name}:{convert.__name__}"
        if key not in self._prepared:
            self._prepared[key] = self.mx.array(convert(np.asarray(self.weights[name])))
        return self._prepared[key]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        mx = self.mx
        env: dict[str, Value] = dict(self.weights)
        env[self.input] = mx.array(x)
        for op, node, attrs in self._plan:
            args = [env[i] if i else None for i in node.input]
            result = op(self, node, args, attrs)
            outs = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.output, outs, strict=False):
                env[name] = value
        values = [self._mx(env[o]) for o in self.outputs]
        mx.eval(*values)
        return [np.array(v) for v in values]

    # --- operators --------------------------------------------------------------------------
    def _hard_sigmoid(self, node: Any, a: list[Value], k: Attrs) -> Value:
        alpha, beta = k.get("alpha", 0.2), k.get("beta", 0.5)
        return self.mx.clip(self._mx(a[0]) * alpha + beta, 0.0, 1.0)

    def _clip(self, node: Any, a: list[Value], k: Attrs) -> Value:
        low = float(np.asarray(a[1])) if len(a) > 1 and a[1] is not None else k.get("min")
        high = float(np.asarray(a[2])) if len(a) > 2 and a[2] is not None else k.get("max")
        return self.mx.clip(self._mx(a[0]), low, high)

    def _softmax(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = self._mx(a[0])
        if self.opset >= 13:
            return self.mx.softmax(x, axis=int(k.get("axis", -1)))
        # opset < 13: flatten to 2-D at `axis`, softmax over the second dimension
        axis = int(k.get("axis", 1)) % x.ndim
        rows = int(np.prod(x.shape[:axis])) if axis else 1
        return self.mx.softmax(x.reshape(rows, -1), axis=1).reshape(x.shape)

    def _axes(self, a: list[Value], k: Attrs) -> list[int] | None:
        """Axes from the attribute (opset < 13, or < 18 for reductions) or the second input."""
        if "axes" in k:
            return [int(v) for v in k["axes"]]
        if len(a) > 1 and a[1] is not None:
            return [int(v) for v in np.asarray(a[1])]
        return None

    def _reduce_mean(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = self._mx(a[0])
        axes = self._axes(a, k)
        if not axes and k.get("noop_with_empty_axes", 0):
            return x
        return self.mx.mean(x, axis=axes, keepdims=bool(k.get("keepdims", 1)))

    def _squeeze(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x, axes = a[0], self._axes(a, k)
        if axes is None:
            axes = [i for i, n in enumerate(x.shape) if n == 1]
        if isinstance(x, np.ndarray):
            return np.squeeze(x, axis=tuple(axes))
        return x.squeeze(axes)

    def _unsqueeze(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x, axes = a[0], self._axes(a, k) or []
        if isinstance(x, np.ndarray):
            return np.expand_dims(x, tuple(axes))
        return self.mx.expand_dims(x, axes)

    def _batch_norm(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = self._mx(a[0])
        key = f"{node.output[0]}:batch_norm"
        if key not in self._prepared:  # the statistics are constants: fold them once
            eps = k.get("epsilon", 1e-5)
            scale, bias, mean, var = (np.asarray(v, dtype=np.float32) for v in a[1:5])
            mul = scale / np.sqrt(var + eps)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            self._prepared[key] = (
                self.mx.array(mul.reshape(shape)),
                self.mx.array((bias - mean * mul).reshape(shape)),
            )
        mul_mx, add_mx = self._prepared[key]
        return x * mul_mx + add_mx

    def _conv(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = self._mx(a[0]).transpose(0, 2, 3, 1)  # NCHW -> NHWC
        w = self._weight(node.input[1], _oihw_to_ohwi)
        strides = list(k.get("strides", [1, 1]))
        dilations = list(k.get("dilations", [1, 1]))
        kernel = [(w.shape[1] - 1) * dilations[0] + 1, (w.shape[2] - 1) * dilations[1] + 1]
        begin, end = _pads(k, x.shape[1:3], kernel, strides)
        y = self.mx.conv_general(
            x,
            w,
            stride=strides,
            padding=(begin, end),
            kernel_dilation=dilations,
            groups=int(k.get("group", 1)),
        )
        if len(a) > 2 and a[2] is not None:
            y = y + self._weight(node.input[2], _as_float)
        return y.transpose(0, 3, 1, 2)

    def _conv_transpose(self, node: Any, a: list[Value], k: Attrs) -> Value:
        mx = self.mx
        x = self._mx(a[0]).transpose(0, 2, 3, 1)
        w = self._weight(node.input[1], _iohw_to_ohwi)  # (C_out/group, kH, kW, C_in)
        stride = tuple(k.get("strides", [1, 1]))
        dilation = tuple(k.get("dilations", [1, 1]))
        groups = int(k.get("group", 1))
        per_group = x.shape[3] // groups
        # MLX's transposed convolution has no groups: run each group and stack the channels
        parts = [
            mx.conv_transpose2d(
                x[..., g * per_group : (g + 1) * per_group],
                w[..., g * per_group : (g + 1) * per_group],
                stride=stride,
                dilation=dilation,
            )
            for g in range(groups)
        ]
        y = parts[0] if groups == 1 else mx.concatenate(parts, axis=3)
        # the full output, then ONNX's output_padding (rows no input reaches) and pads (crop)
        extra = list(k.get("output_padding", [0, 0]))
        if any(extra):
            y = mx.pad(y, [(0, 0), (0, extra[0]), (0, extra[1]), (0, 0)])
        pads = list(k.get("pads", [0, 0, 0, 0]))
        if any(pads):
            h, w_ = y.shape[1], y.shape[2]
            y = y[:, pads[0] : h - pads[2], pads[1] : w_ - pads[3], :]
        if len(a) > 2 and a[2] is not None:
            y = y + self._weight(node.input[2], _as_float)
        return y.transpose(0, 3, 1, 2)

    def _resize(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = self._mx(a[0])
        dims = [int(n) for n in x.shape]
        scales_in = np.asarray(a[2] if len(a) > 2 and a[2] is not None else [], np.float32)
        if scales_in.size:
            scales = [np.float32(v) for v in scales_in]
            sizes = [int(np.floor(np.float32(n) * sc)) for n, sc in zip(dims, scales, strict=True)]
        elif len(a) > 3 and a[3] is not None:
            sizes = [int(v) for v in np.asarray(a[3])]
            scales = [np.float32(o) / np.float32(n) for o, n in zip(sizes, dims, strict=True)]
        else:
            raise ModelError(f"MLX backend: Resize {node.name} has neither scales nor sizes")
        coordinates = k.get("coordinate_transformation_mode", b"half_pixel").decode()
        rounding = k.get("nearest_mode", b"round_prefer_floor").decode()
        for axis, (n, size, scale) in enumerate(zip(dims, sizes, scales, strict=True)):
            if size != n or scale != 1:
                rows = _nearest_source(n, size, scale, coordinates, rounding)
                x = self.mx.take(x, self.mx.array(rows), axis=axis)
        return x

    def _concat(self, node: Any, a: list[Value], k: Attrs) -> Value:
        axis = int(k["axis"])
        if all(isinstance(v, np.ndarray) for v in a):
            return np.concatenate(a, axis=axis)
        return self.mx.concatenate([self._mx(v) for v in a], axis=axis)

    def _reshape(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = a[0]
        target = [int(v) for v in np.asarray(a[1])]
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(shape)

    def _cast(self, node: Any, a: list[Value], k: Attrs) -> Value:
        import onnx

        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(k["to"])))
        if isinstance(a[0], np.ndarray):
            return a[0].astype(dtype)
        if a[0].size <= 8:  # most likely shape arithmetic, which stays in NumPy
            return np.array(a[0]).astype(dtype)
        return a[0].astype(getattr(self.mx, "bool_" if dtype == np.bool_ else dtype.name))

    def _slice(self, node: Any, a: list[Value], k: Attrs) -> Value:
        x = a[0]
        starts = [int(v) for v in np.asarray(a[1])]
        ends = [int(v) for v in np.asarray(a[2])]
        ndim = len(x.shape)
        given = len(a) > 3 and a[3] is not None
        axes = [int(v) % ndim for v in np.asarray(a[3])] if given else list(range(len(starts)))
        given = len(a) > 4 and a[4] is not None
        steps = [int(v) for v in np.asarray(a[4])] if given else [1] * len(starts)
        index: list[slice] = [slice(None)] * ndim
        for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
            size = x.shape[axis]
            stop = max(min(end, size), -size - 1) if end > -(2**62) else None
            index[axis] = slice(start, stop, step)
        return x[tuple(index)]


def _pool(kind: str) -> Op:
    def run(s: MlxSession, node: Any, a: list[Value], k: Attrs) -> Value:
        from mlx.nn.layers.pooling import AvgPool2d, MaxPool2d

        x = s._mx(a[0]).transpose(0, 2, 3, 1)
        kernel = [int(v) for v in k["kernel_shape"]]
        strides = [int(v) for v in k.get("strides", [1, 1])]  # ONNX default: 1, not kernel
        spatial = [int(v) for v in x.shape[1:3]]
        begin, end = _pads(k, spatial, kernel, strides)
        ceil = bool(k.get("ceil_mode", 0)) and k.get("auto_pad", b"NOTSET") not in _SAME
        out = [
            _pool_size(*dims, ceil)
            for dims in zip(spatial, kernel, strides, begin, end, strict=True)
        ]
        # ceil mode: the last window may run past the end padding
        past = [
            max(0, (o - 1) * st + kk - (n + b + e))
            for o, st, kk, n, b, e in zip(out, strides, kernel, spatial, begin, end, strict=True)
        ]
        fill = -np.inf if kind == "max" else 0.0
        if any(begin) or any(end) or any(past):
            widths = [(0, 0), (begin[0], end[0] + past[0]), (begin[1], end[1] + past[1]), (0, 0)]
            x = s.mx.pad(x, widths, constant_values=fill)
        layer = MaxPool2d if kind == "max" else AvgPool2d
        window = (kernel[0], kernel[1])
        y = layer(window, (strides[0], strides[1]))(x)[:, : out[0], : out[1], :]
        if kind == "avg":
            include = bool(k.get("count_include_pad", 0))
            rows, cols = (
                _window_counts(spatial[i], out[i], kernel[i], strides[i], begin[i], end[i], include)
                for i in (0, 1)
            )
            counts = np.outer(rows, cols)
            full = kernel[0] * kernel[1]
            if np.any(counts != full):  # AvgPool2d divided by the whole window
                ratio = (full / counts).astype(np.float32)[None, :, :, None]
                y = y * s.mx.array(ratio)
        return y.transpose(0, 3, 1, 2)

    return run


def _pads(
    k: Attrs, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis, from `pads` or `auto_pad` (kernel dilated)."""
    auto = k.get("auto_pad", b"NOTSET")
    if auto in _SAME:
        begin, end = [], []
        for n, kk, st in zip(spatial, kernel, strides, strict=True):
            total = max(0, (-(-n // st) - 1) * st + kk - n)
            head = total // 2 if auto == b"SAME_UPPER" else total - total // 2
            begin.append(head)
            end.append(total - head)
        return begin, end
    if auto == b"VALID":
        return [0] * len(spatial), [0] * len(spatial)
    pads = [int(v) for v in k.get("pads", [0] * 2 * len(spatial))]
    return pads[: len(spatial)], pads[len(spatial) :]


def _pool_size(n: int, kernel: int, stride: int, begin: int, end: int, ceil: bool) -> int:
    span = n + begin + end - kernel
    size = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (size - 1) * stride >= n + begin:  # no window may start in the end padding
        size -= 1
    return size


def _window_counts(
    n: int, out: int, kernel: int, stride: int, begin: int, end: int, include_pad: bool
) -> np.ndarray:
    """How many elements each average-pool window divides by, along one axis."""
    start = np.arange(out) * stride - begin
    stop = start + kernel
    if include_pad:  # explicit padding counts, the overhang of ceil mode does not
        return np.minimum(stop, n + end) - start
    return np.minimum(stop, n) - np.maximum(start, 0)


def _nearest_source(n: int, size: int, scale: np.float32, coordinates: str, rounding: str) -> Any:
    """The input index each of `size` outputs copies, per ONNX Resize (nearest), in float32."""
    x = np.arange(size, dtype=np.float32)
    half = np.float32(0.5)
    if coordinates == "asymmetric":
        src = x / scale
    elif coordinates == "align_corners":
        src = x * np.float32(n - 1) / np.float32(size - 1) if size > 1 else np.zeros_like(x)
    elif coordinates == "pytorch_half_pixel" and size <= 1:
        src = np.zeros_like(x)
    else:  # half_pixel, pytorch_half_pixel
        src = (x + half) / scale - half
    floor = np.floor(src)
    if rounding == "floor":
        index = floor
    elif rounding == "ceil":
        index = np.ceil(src)
    else:  # round half to the named side, every other value to the nearest
        tie = floor if rounding == "round_prefer_floor" else np.ceil(src)
        index = np.where(src - floor == half, tie, np.floor(src + half))
    return np.clip(index, 0, n - 1).astype(np.int32)


def _binary(np_op: Callable[..., Any], mx_name: str) -> Op:
    def run(s: MlxSession, node: Any, a: list[Value], k: Attrs) -> Value:
        x, y = a
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            return np_op(x, y)
        return getattr(s.mx, mx_name)(s._mx(x), s._mx(y))

    return run


def _unary(mx_name: str) -> Op:
    def run(s: MlxSession, node: Any, a: list[Value], k: Attrs) -> Value:
        return getattr(s.mx, mx_name)(s._mx(a[0]))

    return run


def _oihw_to_ohwi(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).astype(np.float32))


def _iohw_to_ohwi(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(1, 2, 3, 0).astype(np.float32))


def _as_float(w: np.ndarray) -> np.ndarray:
    return w.astype(np.float32)


# Every operator the interpreter runs, and nothing else: `unsupported()` reads the keys.
OPERATORS: dict[str, Op] = {
    "Constant": lambda s, n, a, k: None,
    "Identity": lambda s, n, a, k: a[0],
    "Add": _binary(np.add, "add"),
    "Sub": _binary(np.subtract, "subtract"),
    "Mul": _binary(np.multiply, "multiply"),
    "Div": _binary(np.divide, "divide"),
    "Pow": _binary(np.power, "power"),
    "Sqrt": _unary("sqrt"),
    "Erf": _unary("erf"),
    "Sigmoid": _unary("sigmoid"),
    "Relu": lambda s, n, a, k: s.mx.maximum(s._mx(a[0]), 0),
    "HardSigmoid": MlxSession._hard_sigmoid,
    "Clip": MlxSession._clip,
    "MatMul": lambda s, n, a, k: s.mx.matmul(s._mx(a[0]), s._mx(a[1])),
    "Softmax": MlxSession._softmax,
    "ReduceMean": MlxSession._reduce_mean,
    "GlobalAveragePool": lambda s, n, a, k: s.mx.mean(
        s._mx(a[0]), axis=list(range(2, a[0].ndim)), keepdims=True
    ),
    "BatchNormalization": MlxSession._batch_norm,
    "Conv": MlxSession._conv,
    "ConvTranspose": MlxSession._conv_transpose,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "Resize": MlxSession._resize,
    "Concat": MlxSession._concat,
    "Reshape": MlxSession._reshape,
    "Transpose": lambda s, n, a, k: s._mx(a[0]).transpose(
        list(k.get("perm", range(a[0].ndim - 1, -1, -1)))
    ),
    "Squeeze": MlxSession._squeeze,
    "Unsqueeze": MlxSession._unsqueeze,
    "Shape": lambda s, n, a, k: np.array(a[0].shape, dtype=np.int64),
    "Cast": MlxSession._cast,
    "Slice": MlxSession._slice,
}
