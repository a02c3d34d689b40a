"""Small networks written the way onnx-caffe2 wrote the old model zoo: IR version 3, opset 8
or 9, every weight also declared as a graph input, every value's shape declared, a fixed
batch (1 or 64) held by the input and by the Reshape in front of the classifier, fixed-window
pools, Dropout and Unsqueeze with attribute axes. Each mirrors the pattern of a zoo file
(ResNet, ShuffleNet, SqueezeNet, Inception, VGG) at a size a test can afford."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 3
SIZE = 32  # the declared input size


class Net:
    """A graph under construction: nodes, and weights made on demand from one seeded stream."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def weight(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits[name] = array
        return name

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{len(self.nodes)}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1) -> str:
        w = self.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
        w *= np.sqrt(2.0 / (cin // group * k * k))
        inputs = [x, self.weight("w", w), self.weight("b", np.zeros(cout, np.float32))]
        pad = k // 2
        return self.op(
            "Conv", inputs, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, group=group
        )

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        stats = [
            r.uniform(0.5, 1.5, c),
            r.uniform(-0.2, 0.2, c),
            r.uniform(-0.2, 0.2, c),
            r.uniform(0.5, 1.5, c),
        ]
        names = [self.weight(p, a.astype(np.float32)) for p, a in zip("sbmv", stats)]
        return self.op("BatchNormalization", [x, *names], epsilon=1e-5)

    def conv_bn_relu(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
        return self.op("Relu", [self.bn(self.conv(x, cin, cout, k, stride), cout)])

    def stem(self, cout: int) -> str:
        """A strided 3x3 convolution, BatchNorm and Relu on the image, then a 3x3 MaxPool."""
        x = self.conv_bn_relu("data", 3, cout, 3, 2)
        return self.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def classifier(self, x: str, features: int, batch: int, classes: int = 10) -> str:
        """Dropout, Reshape to [batch, -1] (the batch a constant), Gemm and Softmax."""
        x = self.op("Dropout", [x], ratio=0.5)
        flat = self.op("Reshape", [x, self.weight("shape", np.array([batch, -1], np.int64))])
        w = self.rng.standard_normal((classes, features)).astype(np.float32) * 0.1
        bias = self.weight("fcb", np.zeros(classes, np.float32))
        fc = self.op("Gemm", [flat, self.weight("fc", w), bias], transB=1)
        return self.op("Softmax", [fc], axis=1)

    def model(self, out: str, batch: int, opset: int) -> onnx.ModelProto:
        """The graph as onnx-caffe2 saved it: weights among the inputs, every shape declared."""
        image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])
        weights = [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in self.inits.items()
        ]
        graph = helper.make_graph(
            self.nodes,
            "caffe2",
            [image, *weights],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()],
        )
        proto = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2"
        )
        proto.ir_version = IR_VERSION
        inferred = onnx.shape_inference.infer_shapes(proto)
        proto.graph.value_info.extend(inferred.graph.value_info)
        proto.graph.output[0].CopyFrom(inferred.graph.output[0])
        return proto


def resnet(batch: int) -> onnx.ModelProto:
    """Stem, MaxPool, two residual blocks joined by Sum, a fixed 4x4 AveragePool."""
    n = Net(1)
    x = n.stem(8)
    for cin, cout, stride in ((8, 8, 1), (8, 16, 2)):
        y = n.bn(n.conv(n.conv_bn_relu(x, cin, cout, 3, stride), cout, cout), cout)
        short = x if (cin, stride) == (cout, 1) else n.bn(n.conv(x, cin, cout, 1, stride), cout)
        x = n.op("Relu", [n.op("Sum", [y, short])])
    pooled = n.op("AveragePool", [x], kernel_shape=[4, 4], strides=[1, 1])
    return n.model(n.classifier(pooled, 16, batch), batch, 8)


def shufflenet(batch: int) -> onnx.ModelProto:
    """Grouped 1x1 convolutions and a channel shuffle (Reshape to [batch, groups, C/groups, H,
    W], Transpose, Reshape back), branches joined by Concat, a fixed AveragePool."""
    n = Net(2)
    x = n.stem(12)
    size, groups = SIZE // 4, 3
    for stride in (2, 1):
        y = n.conv_bn_relu(x, 12, 12, 1)
        y = n.op("Reshape", [y, n.weight("shape", np.array([batch, groups, 4, size, size]))])
        y = n.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
        y = n.op("Reshape", [y, n.weight("shape", np.array([batch, 12, size, size]))])
        y = n.bn(n.conv(y, 12, 12, 3, stride, group=12), 12)
        y = n.bn(n.conv(y, 12, 12, 1, group=groups), 12)
        if stride == 2:
            short = n.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
            x = n.op("Relu", [n.op("Concat", [short, y], axis=1)])
            x = n.conv_bn_relu(x, 24, 12, 1)
            size //= 2
        else:
            x = n.op("Relu", [n.op("Add", [x, y])])
    pooled = n.op("AveragePool", [x], kernel_shape=[size, size])
    return n.model(n.classifier(pooled, 12, batch), batch, 9)


def squeezenet(batch: int) -> onnx.ModelProto:
    """Fire modules (a 1x1 squeeze, 1x1 and 3x3 expands joined by Concat), Dropout, a final
    convolution and a fixed AveragePool to [batch, classes, 1, 1], flattened by Reshape."""
    n = Net(3)
    x = n.op(
        "MaxPool",
        [n.op("Relu", [n.conv("data", 3, 16, 3, 2)])],
        kernel_shape=[3, 3],
        strides=[2, 2],
    )
    cin = 16
    for squeeze, expand in ((4, 8), (4, 8), (8, 16)):
        s = n.op("Relu", [n.conv(x, cin, squeeze, 1)])
        e1 = n.op("Relu", [n.conv(s, squeeze, expand, 1)])
        e3 = n.op("Relu", [n.conv(s, squeeze, expand, 3)])
        x = n.op("Concat", [e1, e3], axis=1)
        cin = 2 * expand
    x = n.op("Dropout", [x], ratio=0.5)
    x = n.op("Relu", [n.conv(x, cin, 10, 1)])
    pooled = n.op("AveragePool", [x], kernel_shape=[7, 7])
    flat = n.op("Reshape", [pooled, n.weight("shape", np.array([batch, 10], np.int64))])
    return n.model(n.op("Softmax", [flat]), batch, 8)


def inception(batch: int) -> onnx.ModelProto:
    """LRN, an inception block (1x1, 3x3, 5x5 and pooled branches joined by Concat), a scale
    made with Unsqueeze (attribute axes), a fixed 8x8 AveragePool and the classifier."""
    n = Net(4)
    x = n.op("Relu", [n.conv("data", 3, 16, 5, 2)])
    x = n.op(
        "LRN",
        [n.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])],
        size=5,
        alpha=1e-4,
        beta=0.75,
        bias=1.0,
    )
    b1 = n.op("Relu", [n.conv(x, 16, 8, 1)])
    b3 = n.op("Relu", [n.conv(n.op("Relu", [n.conv(x, 16, 8, 1)]), 8, 8, 3)])
    b5 = n.op("Relu", [n.conv(n.op("Relu", [n.conv(x, 16, 4, 1)]), 4, 8, 5)])
    bp = n.op("Relu", [n.conv(n.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1] * 4), 16, 8, 1)])
    x = n.op("Concat", [b1, b3, b5, bp], axis=1)
    scale = n.weight("scale", np.linspace(0.5, 1.5, 32).astype(np.float32))
    x = n.op("Mul", [x, n.op("Unsqueeze", [scale], axes=[0, 2, 3])])
    pooled = n.op("AveragePool", [x], kernel_shape=[8, 8], strides=[1, 1])
    return n.model(n.classifier(pooled, 32, batch), batch, 8)


def vgg(batch: int) -> onnx.ModelProto:
    """Plain 3x3 convolutions and max pools, then Reshape to [batch, -1] of the whole
    feature map and two fully connected layers with Dropout."""
    n = Net(5)
    x, cin = "data", 3
    for cout in (8, 16, 16):
        x = n.op(
            "MaxPool", [n.op("Relu", [n.conv(x, cin, cout)])], kernel_shape=[2, 2], strides=[2, 2]
        )
        cin = cout
    flat = n.op("Reshape", [x, n.weight("shape", np.array([batch, -1], np.int64))])
    w = n.rng.standard_normal((32, 16 * 4 * 4)).astype(np.float32) * 0.05
    fc = n.op(
        "Relu",
        [
            n.op(
                "Gemm",
                [flat, n.weight("fc", w), n.weight("fcb", np.zeros(32, np.float32))],
                transB=1,
            )
        ],
    )
    return n.model(n.classifier(fc, 32, batch), batch, 9)


NETS: dict[str, Callable[[int], onnx.ModelProto]] = {
    "resnet": resnet,
    "shufflenet": shufflenet,
    "squeezenet": squeezenet,
    "inception": inception,
    "vgg": vgg,
}
