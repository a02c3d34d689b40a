"""Importing onnxmtl changes no global state: matplotlib, torch, numpy, warnings, logging,
streams or the environment are as the user left them."""

from __future__ import annotations

import json
import subprocess
import sys

# Third-party packages onnxmtl imports. They are imported before the first snapshot, so that
# the test sees what onnxmtl's own code does: some set state of their own when first imported
# (sympy, through onnx_ir, adds a warnings filter for its deprecations; torch._dynamo, through
# torchvision, sets TORCHINDUCTOR_CACHE_DIR), as they would in any program importing them.
DEPENDENCIES = (
    "PIL",
    "matplotlib",
    "numpy",
    "onnx",
    "onnx2torch",
    "onnx_ir",
    "onnxruntime",
    "torch",
    "torchvision",
    "tqdm",
    "yaml",
)

SNAPSHOT = """
import importlib, json, logging, os, sys, warnings
for name in sys.argv[1].split(","):
    importlib.import_module(name)
import matplotlib, numpy, torch

def snapshot():
    loggers = logging.root.manager.loggerDict.items()
    return {
        "matplotlib backend": repr(matplotlib.get_backend(auto_select=False)),
        "matplotlib rcParams": sorted(  # reading 'backend' would resolve it
            (k, repr(matplotlib.rcParams[k])) for k in matplotlib.rcParams if k != "backend"
        ),
        "pyplot imported": "matplotlib.pyplot" in sys.modules,
        "torch threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "torch default dtype": str(torch.get_default_dtype()),
        "torch grad mode": torch.is_grad_enabled(),
        "torch anomaly mode": torch.is_anomaly_enabled(),
        "torch deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch matmul precision": torch.get_float32_matmul_precision(),
        "torch cudnn": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
        "torch rng": torch.random.get_rng_state().tolist(),
        "numpy errors": sorted(numpy.geterr().items()),
        "numpy print options": repr(numpy.get_printoptions()),
        "numpy rng": repr(numpy.random.get_state()[1].tolist()),
        "warnings filters": [repr(f) for f in warnings.filters],
        "logging root": [logging.root.level, [repr(h) for h in logging.root.handlers]],
        "logging disabled below": logging.root.manager.disable,
        "logger settings": sorted(
            (n, lg.level, len(lg.handlers), lg.propagate, lg.disabled)
            for n, lg in loggers
            if isinstance(lg, logging.Logger) and (lg.level or lg.handlers or lg.disabled)
        ),
        "streams": [repr(sys.stdout), repr(sys.stderr), repr(sys.excepthook)],
        "environment": sorted(os.environ.items()),
    }

before = snapshot()
import onnxmtl
import onnxmtl.benchmark.plots
import onnxmtl.cli
print(json.dumps([before, snapshot()]))
"""


def test_import_changes_no_global_state():
    """A fresh interpreter snapshots the global state, imports onnxmtl (its plots and CLI
    too), and snapshots it again; every entry must be unchanged."""
    done = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, ",".join(DEPENDENCIES)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    before, after = json.loads(done.stdout.splitlines()[-1])
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"import onnxmtl changed: {', '.join(changed)}"
