"""onnxruntime sessions with the best provider that loads here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from onnxmtl.errors import ConfigError

ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)  # what a session or a run raises

# More threads than this many per usable core only wait on each other, and far more than
# the system allows kill the process inside the OpenMP runtime instead of raising.
THREADS_PER_CORE = 4


def quiet() -> ort.RunOptions:
    """Run options that log nothing: where a run fails, the caller says so in one line."""
    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def checked_threads(threads: int) -> int:
    """`threads`, refused with a ConfigError where it is more than THREADS_PER_CORE per
    usable core of this machine."""
    cores = usable_cores()
    most = THREADS_PER_CORE * cores
    if threads > most:
        raise ConfigError(
            f"threads={threads} on a machine with {cores} usable core(s); give at most {most} "
            "(0: every core)."
        )
    return threads


def available_providers(prefer_cuda: bool = True) -> list[str]:
    """CUDA first where a CUDA device and its libraries load, the CPU always."""
    providers = ["CPUExecutionProvider"]
    if prefer_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            import torch

            if torch.cuda.is_available():
                providers.insert(0, "CUDAExecutionProvider")
        except ImportError:
            pass
    return providers


def session(
    model: onnx.ModelProto | str,
    providers: list[str] | None = None,
    threads: int = 0,
    spinning: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession for `model` (a ModelProto or a path), quiet unless it fails.
    `spinning=False` stops idle worker threads from busy-waiting, which matters when several
    sessions take turns on the same cores."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = checked_threads(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=providers or available_providers())


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to `threads` inside the block (0: left as they are),
    restored after it: a run can leave cores to other jobs without changing its caller's
    setting. onnxruntime sessions take their thread count when they are made."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(checked_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
