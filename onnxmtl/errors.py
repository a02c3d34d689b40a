"""Exception types. Each message says what was expected, what was found, and what to do next."""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 2


def shown(value: Any) -> str:
    """`value`'s repr cut short, for messages: a value a user gave may be huge (a YAML alias
    bomb expands to millions of items) and an error stays one readable line."""
    return _SHORT.repr(value)


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name where it says nothing: the
    libraries we call (onnx, onnxruntime, torch's exporter, YAML) put stacks of frames or
    dumps after it, and an error of ours is one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxMtlError(Exception):
    """Base class of every error onnxmtl raises on bad input or an unmet expectation."""


class ModelFileError(OnnxMtlError):
    """The ONNX file is missing, unreadable, invalid, or not a vision backbone we can take."""


class FixedBatchError(ModelFileError):
    """The file fixes the batch at 1 in a way the load stage cannot make dynamic safely;
    `node` names the first node the rewrite could not get past, where one is known."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class UnsupportedOpError(OnnxMtlError):
    """One or more nodes use an (domain, op, opset) that the lowering has no converter for."""

    def __init__(self, model: str, unsupported: list[tuple[str, str, int, list[str]]]):
        self.unsupported = unsupported
        parts = [
            f"{op_label(domain, op, opset)} (nodes: {_names(nodes)})"
            for domain, op, opset, nodes in unsupported
        ]
        super().__init__(
            f"{model}: {len(unsupported)} unsupported op(s): {'; '.join(parts)}. "
            "Re-export the model with a different opset, or register a converter with "
            "onnxmtl.lower.register_converter."
        )


class LoweringError(OnnxMtlError):
    """A supported op could not be turned into a torch module for this particular node."""


class FeatureError(OnnxMtlError):
    """The requested feature output(s) cannot be found or chosen automatically."""


class ShapeError(OnnxMtlError):
    """A shape the pipeline needs is unknown or invalid (for example symbolic H and W);
    `reason` is what failed without the file's name, where a caller may quote it."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ExportMismatchError(OnnxMtlError):
    """An exported or lowered model disagrees with its reference beyond the tolerance."""


class DynamicBatchError(ExportMismatchError):
    """An export with a dynamic batch fails on a batch other than the one it was traced with
    (the backbone's graph keeps that batch somewhere); one with a fixed batch may pass."""


class ConfigError(OnnxMtlError):
    """An option or configuration value is invalid."""


class DataError(OnnxMtlError):
    """A dataset folder or file is missing or malformed; `kind` names the kind of problem
    (for `onnxmtl data check`, which lists them by kind)."""

    def __init__(self, message: str, kind: str = "data") -> None:
        super().__init__(message)
        self.kind = kind


class OutputError(OnnxMtlError):
    """A file cannot be written: its folder is read-only or missing, a folder is in the way,
    or the disk is full."""


class RunFolderError(OnnxMtlError):
    """A run folder cannot be used as asked: it is not onnxmtl's run, another process holds
    it, its checkpoint cannot be read, or a resume asks for other settings than it has."""


class TrainingError(OnnxMtlError):
    """Training cannot go on: a loss or a weight stopped being finite."""


def op_label(domain: str, op: str, opset: int) -> str:
    """How messages name an op: `ai.onnx::Gelu-20`."""
    return f"{domain or 'ai.onnx'}::{op}-{opset}"


def _names(nodes: list[str], limit: int = 5) -> str:
    shown = ", ".join(nodes[:limit])
    return shown + (f", ... {len(nodes) - limit} more" if len(nodes) > limit else "")
