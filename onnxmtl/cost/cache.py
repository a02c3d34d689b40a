"""Latency tables cached per device, provider, batch, threads and model structure: measured
once, then read."""

from __future__ import annotations

import json
from pathlib import Path

from onnxmtl.benchmark.bench import resolve_providers
from onnxmtl.compiler import SuperModel
from onnxmtl.cost.key import device_name, table_key
from onnxmtl.cost.measure import measure_latency_table
from onnxmtl.cost.table import LatencyTable
from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write_text, default_cache


def latency_table(
    model: SuperModel,
    provider: str = "auto",
    batch: int = 1,
    threads: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> LatencyTable:
    """The latency table of `model` on this machine: read from the cache (per device,
    provider, batch, threads and model structure) or measured and cached."""
    if batch < 1 or threads < 0:
        raise ConfigError("latency table: latency_batch must be >= 1 and latency_threads >= 0.")
    providers = resolve_providers(provider)
    key = table_key(model, device_name(providers), providers, batch, threads)
    path = Path(cache_dir) if cache_dir else default_cache() / "latency"
    path = path / f"{key}.json"
    if path.is_file():
        try:
            return LatencyTable.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError):
            pass  # an older or damaged table is measured again
    table = measure_latency_table(model, provider, batch, threads, progress=progress)
    atomic_write_text(path, json.dumps(table.to_dict(), indent=1))
    return table
