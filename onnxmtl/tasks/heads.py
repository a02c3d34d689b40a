"""Task heads: from the backbone's feature map to one task's output.

Heads are built by factories, (task, in_channels) -> a fresh nn.Module, registered by name in
`HEADS`, so that every compiled model (the search's and each baseline's) owns its head. Dense
heads return a map at the feature resolution; the supermodel resizes it to the input
resolution, so a custom head need not know the image size. A head registered as reading an
early map (`deeplab`) also gets the backbone's low-level, high-resolution map: its factory
receives (early channels, last channels) and its module (early map, ..., last map).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from onnxmtl.errors import ConfigError
from onnxmtl.registry import add
from onnxmtl.tasks.task import HeadFactory, Task

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

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """The branches and the image pooling of `x`, projected to `width` channels."""
        pooled = self.image_pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pyramid(x))


class DeepLabHead(nn.Module):
    """A DeepLabv3+ decoder, narrow: the ASPP pyramid of the last map, upsampled to the early
    map's size and joined with a 1x1 projection of it, then a 3x3 conv-BN-ReLU and the ASPP's
    classifier. The early map brings back the detail (edges, boundaries) that a stride-32 map
    lost."""

    def __init__(
        self, channels: tuple[int, int], num_outputs: int, width: int = 64, early_width: int = 32
    ) -> None:
        super().__init__()
        early_channels, last_channels = channels
        self.aspp = ASPPHead(last_channels, num_outputs, width)
        self.early = _conv_bn_relu(early_channels, early_width)
        self.fuse = _conv_bn_relu(width + early_width, width, 3)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        early, last = feats[0], feats[-1]
        deep = self.aspp.pyramid(last)
        deep = F.interpolate(deep, size=early.shape[2:], mode="bilinear", align_corners=False)
        return self.aspp.classifier(self.fuse(torch.cat([deep, self.early(early)], dim=1)))


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


# name -> factory(task, in_channels); `register_head` adds one.
HEADS: dict[str, HeadFactory] = {
    "aspp": lambda task, in_channels: ASPPHead(in_channels, task.outputs),
    "conv": lambda task, in_channels: ConvHead(in_channels, task.outputs),
    "conv1x1": lambda task, in_channels: nn.Conv2d(in_channels, task.outputs, 1),
    "linear": lambda task, in_channels: LinearHead(in_channels, task.outputs),
    "deeplab": lambda task, channels: DeepLabHead(channels, task.outputs),  # type: ignore[arg-type]
}
# The registered heads that read an early map beside the last one.
EARLY_MAP_HEADS: set[str] = {"deeplab"}


def register_head(
    name: str, factory: HeadFactory, override: bool = False, early_map: bool = False
) -> None:
    """Make `head: NAME` in a task build `factory(task, in_channels)`, a fresh module for each
    model compiled (a name registered already is refused unless `override`). A registered
    head reads the last feature value, which must be an (N, C, H, W) map for a dense task;
    with `early_map` it reads (early map, ..., last map) instead and its factory gets the two
    maps' channel counts, the early one first (the compiler adds an early map, see
    `onnxmtl.ir.multiscale`, where the backbone was cut at one feature value)."""
    add(HEADS, name, factory, "head", override)
    if early_map:
        EARLY_MAP_HEADS.add(name)
    else:
        EARLY_MAP_HEADS.discard(name)


def is_custom_head(task: Task) -> bool:
    """Whether `task`'s head is given as a factory or a module rather than by name: such a head
    receives every feature value (a tuple) when the graph has several, and whatever shape they
    have."""
    return task.head is not None and not isinstance(task.head, str)


def reads_early_map(task: Task) -> bool:
    """Whether `task`'s head is a registered one that reads an early map beside the last."""
    return isinstance(task.head, str) and task.head in EARLY_MAP_HEADS


def reads_all_features(task: Task) -> bool:
    """Whether `task`'s head receives every feature value (a tuple) rather than the last."""
    return is_custom_head(task) or reads_early_map(task)


def head_factory(task: Task) -> HeadFactory:
    """The factory that builds `task`'s head: the registered one for a name (the kind's default
    for None), the given callable, or a deep copy of a given module, so that no two models
    share head weights. An unknown name is a configuration error."""
    head = task.head
    if head is None or isinstance(head, str):
        name = head or DEFAULT_HEAD["dense" if task.dense else "global"]
        if name not in HEADS:
            raise ConfigError(
                f"task '{task.name}': unknown head {name!r}; expected one of {', '.join(HEADS)} "
                "(or one added with onnxmtl.tasks.register_head), a factory or an nn.Module."
            )
        return HEADS[name]
    if isinstance(head, nn.Module):
        return lambda task, in_channels: copy.deepcopy(head)
    if callable(head):
        return head
    raise ConfigError(
        f"task '{task.name}': head {head!r} is neither a head name, a factory "
        "(task, in_channels) -> nn.Module nor an nn.Module."
    )


def make_head(task: Task, in_channels: int | tuple[int, ...]) -> nn.Module:
    """A fresh head module for `task` on feature maps with `in_channels` channels (one count,
    or one per feature value, the last map's last): a head that reads an early map gets the
    first and the last count, any other the last."""
    channels = in_channels if isinstance(in_channels, tuple) else (in_channels,)
    if reads_early_map(task):
        if len(channels) < 2:
            raise ConfigError(
                f"task '{task.name}': head {task.head!r} reads an early feature map beside the "
                "last, but the backbone hands out one feature value; compile it (which adds "
                "one) or name both with --features EARLY,LAST."
            )
        head = head_factory(task)(task, (channels[0], channels[-1]))  # type: ignore[arg-type]
    else:
        head = head_factory(task)(task, channels[-1])
    if not isinstance(head, nn.Module):
        raise ConfigError(
            f"task '{task.name}': the head factory returned {type(head).__name__}, "
            "not an nn.Module."
        )
    return head
