"""Peak host memory of one onnxruntime model, measured in a fresh process.

    python onnxmtl/benchmark/memory.py MODEL.onnx --shape 1,3,224,224 [--providers P,...]

Run as a script so that the measuring process imports only numpy and onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np


def peak_memory_mb(
    path: str, shape: tuple[int, ...], providers: list[str], threads: int = 0
) -> float | None:
    """MB of peak RSS that loading `path` and running three batches of `shape` adds to a fresh
    Python process (after its imports), so that no other model's allocations count; None if
    that process fails."""
    command = [
        sys.executable,
        __file__,
        path,
        "--shape",
        ",".join(map(str, shape)),
        "--providers",
        ",".join(providers),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def _peak_kb() -> int:
    """This process's peak resident set in KB: VmHWM (per address space, so not inherited
    from the parent across exec as ru_maxrss is on Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--shape", required=True)
    parser.add_argument("--providers", default="CPUExecutionProvider")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = args.threads
    before = _peak_kb()
    sess = ort.InferenceSession(args.model, options, providers=args.providers.split(","))
    x = np.zeros(tuple(int(d) for d in args.shape.split(",")), np.float32)
    for _ in range(3):
        sess.run(None, {sess.get_inputs()[0].name: x})
    peak = (_peak_kb() - before) / 1024
    print(json.dumps({"peak_mb": peak}))


if __name__ == "__main__":
    main()
