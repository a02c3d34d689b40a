"""Task heads: from the backbone's feature map to one task's output.

Dense heads return a map at the feature resolution; the supermodel resizes it to the input
resolution, so a custom head need not know the image size.
"""

from __future__ import annotations

import torch
from torch import nn

from onnxmtl.errors import ConfigError
from onnxmtl.tasks.task import Task

DEFAULT_HEAD = {"dense": "aspp", "global": "linear"}


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPHead(nn.Module):
    """A light atrous spatial pyramid pooling head (DeepLabv3 style, narrow branches)."""

    def __init__(
        self, in_channels: int, num_outputs: int, width: int = 64, rates=(1, 6, 12, 18)
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            _conv_bn_relu(in_channels, width, 1 if r == 1 else 3, r) for r in rates
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True)
        )
        self.project = _conv_bn_relu(width * (len(rates) + 1), width)
        self.classifier = nn.Conv2d(width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        y = torch.cat([b(x) for b in self.branches] + [pooled], dim=1)
        return self.classifier(self.project(y))


class ConvHead(nn.Module):
    """A 3x3 conv-BN-ReLU followed by a 1x1 classifier."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 64) -> None:
        super().__init__()
        self.body = _conv_bn_relu(in_channels, width, 3)
        self.classifier = nn.Conv2d(width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class LinearHead(nn.Module):
    """Global average pooling followed by a linear layer."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(2).mean(dim=2))


def make_head(task: Task, in_channels: int) -> nn.Module:
    """The head module for `task` on a feature map with `in_channels` channels."""
    if isinstance(task.head, nn.Module):
        return task.head
    name = task.head or DEFAULT_HEAD["dense" if task.dense else "global"]
    if name == "aspp":
        return ASPPHead(in_channels, task.num_outputs)
    if name == "conv":
        return ConvHead(in_channels, task.num_outputs)
    if name == "conv1x1":
        return nn.Conv2d(in_channels, task.num_outputs, 1)
    if name == "linear":
        return LinearHead(in_channels, task.num_outputs)
    raise ConfigError(
        f"task '{task.name}': unknown head {name!r}; expected aspp, conv, conv1x1, linear or an "
        "nn.Module."
    )
