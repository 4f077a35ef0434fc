"""Running an ONNX graph with MLX.

A small interpreter over the operators the OCR models use (convolutions, normalisation,
activations, pooling, resize, attention arithmetic, shape plumbing). Tensors are NCHW as in
ONNX; convolutions and pools go through MLX's NHWC kernels. Shape arithmetic (Shape, Slice,
Cast, Concat on shapes) stays in NumPy. An operator it does not know is a clear ModelError at
load time, never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inference_agent.models.manifest import ModelError, ModelManifest

Value = Any  # np.ndarray (constants, shapes) or mx.array


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class MlxSession:
    """`session(x) -> [outputs]`, like the onnxruntime session, computed by MLX."""

    backend = "mlx"

    def __init__(self, manifest: ModelManifest, model: bytes) -> None:
        import mlx.core as mx
        import onnx
        from onnx import numpy_helper

        self.mx = mx
        self.provider = f"mlx-{mx.default_device()}"
        graph = onnx.load_model_from_string(model).graph
        self.nodes = list(graph.node)
        unknown = sorted({n.op_type for n in self.nodes} - set(self._ops()))
        if unknown:
            raise ModelError(f"model {manifest.name}: MLX backend lacks operator(s) {unknown}")
        self.weights: dict[str, Value] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        for node in self.nodes:
            if node.op_type == "Constant":
                self.weights[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.input = graph.input[0].name
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
        ops = self._ops()
        for node in self.nodes:
            if node.op_type == "Constant":
                continue
            args = [env[i] if i else None for i in node.input]
            result = ops[node.op_type](node, args, _attrs(node))
            outs = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.output, outs, strict=False):
                env[name] = value
        values = [self._mx(env[o]) for o in self.outputs]
        mx.eval(*values)
        return [np.array(v) for v in values]

    # --- operators --------------------------------------------------------------------------
    def _ops(self) -> dict[str, Callable[[Any, list[Value], dict[str, Any]], Any]]:
        return {
            "Constant": lambda n, a, k: None,
            "Identity": lambda n, a, k: a[0],
            "Add": self._binary(np.add, "add"),
            "Sub": self._binary(np.subtract, "subtract"),
            "Mul": self._binary(np.multiply, "multiply"),
            "Div": self._binary(np.divide, "divide"),
            "Pow": self._binary(np.power, "power"),
            "Sqrt": lambda n, a, k: self.mx.sqrt(self._mx(a[0])),
            "Relu": lambda n, a, k: self.mx.maximum(self._mx(a[0]), 0),
            "Sigmoid": lambda n, a, k: self.mx.sigmoid(self._mx(a[0])),
            "HardSigmoid": self._hard_sigmoid,
            "Clip": self._clip,
            "MatMul": lambda n, a, k: self.mx.matmul(self._mx(a[0]), self._mx(a[1])),
            "Softmax": self._softmax,
            "ReduceMean": lambda n, a, k: self.mx.mean(
                self._mx(a[0]), axis=list(k["axes"]), keepdims=bool(k.get("keepdims", 1))
            ),
            "GlobalAveragePool": lambda n, a, k: self.mx.mean(
                self._mx(a[0]), axis=[2, 3], keepdims=True
            ),
            "BatchNormalization": self._batch_norm,
            "Conv": self._conv,
            "ConvTranspose": self._conv_transpose,
            "MaxPool": self._pool("max"),
            "AveragePool": self._pool("avg"),
            "Resize": self._resize,
            "Concat": self._concat,
            "Reshape": self._reshape,
            "Transpose": lambda n, a, k: self._mx(a[0]).transpose(list(k["perm"])),
            "Squeeze": lambda n, a, k: self._mx(a[0]).squeeze(list(k["axes"])),
            "Shape": lambda n, a, k: np.array(a[0].shape, dtype=np.int64),
            "Cast": self._cast,
            "Slice": self._slice,
        }

    def _binary(self, np_op: Callable[..., Any], mx_name: str) -> Callable[..., Any]:
        def run(node: Any, a: list[Value], k: dict[str, Any]) -> Value:
            x, y = a
            if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
                return np_op(x, y)
            return getattr(self.mx, mx_name)(self._mx(x), self._mx(y))

        return run

    def _hard_sigmoid(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        alpha, beta = k.get("alpha", 0.2), k.get("beta", 0.5)
        return self.mx.clip(self._mx(a[0]) * alpha + beta, 0.0, 1.0)

    def _clip(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        low = float(np.asarray(a[1])) if len(a) > 1 and a[1] is not None else k.get("min")
        high = float(np.asarray(a[2])) if len(a) > 2 and a[2] is not None else k.get("max")
        return self.mx.clip(self._mx(a[0]), low, high)

    def _softmax(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        # opset < 13: flatten to 2-D at `axis`, softmax over the second dimension
        x = self._mx(a[0])
        axis = k.get("axis", 1) % x.ndim
        shape = x.shape
        rows = int(np.prod(shape[:axis])) if axis else 1
        flat = x.reshape(rows, -1)
        return self.mx.softmax(flat, axis=1).reshape(shape)

    def _batch_norm(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        x = self._mx(a[0])
        eps = k.get("epsilon", 1e-5)
        scale, bias, mean, var = (np.asarray(v, dtype=np.float32) for v in a[1:5])
        mul = scale / np.sqrt(var + eps)
        add = bias - mean * mul
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.mx.array(mul.reshape(shape)) + self.mx.array(add.reshape(shape))

    def _conv(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        mx = self.mx
        x = self._mx(a[0]).transpose(0, 2, 3, 1)  # NCHW -> NHWC
        w = self._weight(node.input[1], _oihw_to_ohwi)
        pads = list(k.get("pads", [0, 0, 0, 0]))
        if any(pads):
            x = mx.pad(x, [(0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)])
        y = mx.conv2d(
            x,
            w,
            stride=tuple(k.get("strides", [1, 1])),
            dilation=tuple(k.get("dilations", [1, 1])),
            groups=int(k.get("group", 1)),
        )
        if len(a) > 2 and a[2] is not None:
            y = y + self._weight(node.input[2], _as_float)
        return y.transpose(0, 3, 1, 2)

    def _conv_transpose(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        if int(k.get("group", 1)) != 1 or any(k.get("pads", [0, 0, 0, 0])):
            raise ModelError("MLX backend: ConvTranspose with groups or pads is not supported")
        x = self._mx(a[0]).transpose(0, 2, 3, 1)
        w = self._weight(node.input[1], _iohw_to_ohwi)
        y = self.mx.conv_transpose2d(
            x,
            w,
            stride=tuple(k.get("strides", [1, 1])),
            dilation=tuple(k.get("dilations", [1, 1])),
        )
        if len(a) > 2 and a[2] is not None:
            y = y + self._weight(node.input[2], _as_float)
        return y.transpose(0, 3, 1, 2)

    def _pool(self, kind: str) -> Callable[..., Any]:
        def run(node: Any, a: list[Value], k: dict[str, Any]) -> Value:
            import mlx.nn as nn

            if any(k.get("pads", [0, 0, 0, 0])) or k.get("ceil_mode", 0):
                raise ModelError("MLX backend: padded or ceil-mode pooling is not supported")
            kernel = tuple(k["kernel_shape"])
            stride = tuple(k.get("strides", kernel))
            pool = nn.MaxPool2d if kind == "max" else nn.AvgPool2d  # type: ignore[attr-defined]
            layer = pool(kernel, stride)
            x = self._mx(a[0]).transpose(0, 2, 3, 1)
            return layer(x).transpose(0, 3, 1, 2)

        return run

    def _resize(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        if k.get("mode", b"nearest") != b"nearest":
            raise ModelError("MLX backend: only nearest Resize is supported")
        x = self._mx(a[0])
        h, w = x.shape[2], x.shape[3]
        sizes = a[3] if len(a) > 3 and a[3] is not None and np.asarray(a[3]).size else None
        if sizes is not None:
            out_h, out_w = (int(v) for v in np.asarray(sizes)[2:])
            sh, sw = out_h / h, out_w / w
        else:
            scales = np.asarray(a[2], dtype=np.float64)
            sh, sw = float(scales[2]), float(scales[3])
            out_h, out_w = int(np.floor(h * sh)), int(np.floor(w * sw))
        rows = np.minimum(np.floor(np.arange(out_h) / sh), h - 1).astype(np.int32)
        cols = np.minimum(np.floor(np.arange(out_w) / sw), w - 1).astype(np.int32)
        return self.mx.take(self.mx.take(x, self.mx.array(rows), axis=2), self.mx.array(cols), 3)

    def _concat(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        axis = int(k["axis"])
        if all(isinstance(v, np.ndarray) for v in a):
            return np.concatenate(a, axis=axis)
        return self.mx.concatenate([self._mx(v) for v in a], axis=axis)

    def _reshape(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        x = a[0]
        target = [int(v) for v in np.asarray(a[1])]
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(shape)

    def _cast(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        import onnx

        dtype = onnx.helper.tensor_dtype_to_np_dtype(int(k["to"]))
        if isinstance(a[0], np.ndarray):
            return a[0].astype(dtype)
        return np.array(a[0]).astype(dtype) if a[0].size <= 8 else a[0]

    def _slice(self, node: Any, a: list[Value], k: dict[str, Any]) -> Value:
        x = a[0]
        starts = [int(v) for v in np.asarray(a[1])]
        ends = [int(v) for v in np.asarray(a[2])]
        ndim = len(x.shape)
        axes = [int(v) % ndim for v in np.asarray(a[3])] if len(a) > 3 else list(range(len(starts)))
        steps = [int(v) for v in np.asarray(a[4])] if len(a) > 4 else [1] * len(starts)
        index: list[slice] = [slice(None)] * ndim
        for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
            size = x.shape[axis]
            stop = max(min(end, size), -size - 1) if end > -(2**62) else None
            index[axis] = slice(start, stop, step)
        return x[tuple(index)]


def _oihw_to_ohwi(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).astype(np.float32))


def _iohw_to_ohwi(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(1, 2, 3, 0).astype(np.float32))


def _as_float(w: np.ndarray) -> np.ndarray:
    return w.astype(np.float32)
