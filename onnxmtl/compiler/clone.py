"""`clone_module`: the deep copy `copy.deepcopy` makes of a module, made several times faster.

Compiling gives every unit one copy of its operators per task. `copy.deepcopy` reaches each
module's state through the generic pickling protocol (`__reduce_ex__`, one reconstruction per
hook dictionary, parameter and submodule), which took most of the compile time of large
backbones. Here a module's parameters, buffers and submodules are copied directly, its empty
hook containers are made anew, and only its other attributes go through `copy.deepcopy`,
with the same memo, so tensors shared within the module stay shared within the copy. A plain
dense parameter or buffer is cloned as torch's own `Parameter.__deepcopy__` clones a
parameter (two of them viewing one storage are copied apart, as parameters are); any other
tensor goes through `copy.deepcopy`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

_ATOMIC = (type(None), bool, int, float, str)
_CONTAINERS = (dict, OrderedDict, list, set)
_TENSORS = ("_parameters", "_buffers")
_PICKLING = ("__reduce_ex__", "__reduce__")


def clone_module(module: ModuleT) -> ModuleT:
    """A deep copy of `module`, equal to `copy.deepcopy(module)`: new parameters and buffers
    holding the same values, new submodules, and copies of every other attribute."""
    return _clone(module, {})


def _clone(module: ModuleT, memo: dict[int, Any]) -> ModuleT:
    if id(module) in memo:
        copied: ModuleT = memo[id(module)]
        return copied
    cls = type(module)
    if not _plain(cls):
        deep: ModuleT = copy.deepcopy(module, memo)
        return deep
    new = cls.__new__(cls)
    memo[id(module)] = new
    state = module.__getstate__()
    for key, value in state.items():
        if key in _TENSORS:
            state[key] = type(value)((k, _copy_tensor(t, memo)) for k, t in value.items())
        elif key == "_modules":
            state[key] = type(value)(
                (k, None if m is None else _clone(m, memo)) for k, m in value.items()
            )
        elif type(value) in _ATOMIC:
            continue
        elif type(value) in _CONTAINERS and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    new.__setstate__(state)
    return new


def _copy_tensor(tensor: torch.Tensor | None, memo: dict[int, Any]) -> torch.Tensor | None:
    if tensor is None:
        return None
    if id(tensor) in memo:
        copied: torch.Tensor = memo[id(tensor)]
        return copied
    kind = type(tensor)
    plain = (
        (kind is nn.Parameter or (kind is torch.Tensor and not tensor.requires_grad))
        and tensor.layout == torch.strided
        and not tensor.is_quantized
        and tensor.device.type in ("cpu", "cuda")
        and tensor.grad is None
        and not vars(tensor)
    )
    if not plain:
        deep: torch.Tensor = copy.deepcopy(tensor, memo)
        return deep
    data = tensor.detach().clone(memory_format=torch.preserve_format)
    new = nn.Parameter(data, tensor.requires_grad) if kind is nn.Parameter else data
    memo[id(tensor)] = new
    return new


def _plain(cls: type) -> bool:
    """Whether `cls` copies through nn.Module's own state protocol (no copy hook of its own),
    the case `_clone` reproduces; others are left to `copy.deepcopy`."""
    inherited = all(getattr(cls, name) is getattr(object, name) for name in _PICKLING)
    return inherited and getattr(cls, "__deepcopy__", None) is None
