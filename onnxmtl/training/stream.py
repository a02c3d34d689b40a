"""Endless, seeded, resumable batches over a subset of a dataset."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from onnxmtl.data import MultiTaskDataset
from onnxmtl.errors import DataError


def collate(dataset: MultiTaskDataset, indices) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    samples = [dataset[int(i)] for i in indices]
    images = torch.stack([s[0] for s in samples])
    targets = {k: torch.stack([s[1][k] for s in samples]) for k in samples[0][1]}
    return images, targets


class BatchStream:
    """Batches in a fresh seeded order every epoch (the last partial batch dropped). Its
    position (epoch, offset) is saved in checkpoints, so a resumed run sees the same data.
    With `world` processes each batch of `batch_size` is split among them: this one gets the
    samples `rank`, `rank + world`, ..."""

    def __init__(
        self,
        dataset,
        indices: np.ndarray,
        batch_size: int,
        seed: int,
        name: str,
        rank: int = 0,
        world: int = 1,
    ):
        if len(indices) < batch_size:
            raise DataError(
                f"split '{name}' has {len(indices)} samples, fewer than batch_size={batch_size}; "
                "use more data or a smaller batch."
            )
        self.dataset, self.indices, self.batch_size = dataset, np.asarray(indices), batch_size
        self.key = [seed, zlib.crc32(name.encode())]
        self.rank, self.world = rank, world
        self.epoch, self.offset = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        rng = np.random.default_rng([*self.key, self.epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def next(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.offset + self.batch_size > len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._make_order()
        batch = self._order[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return collate(self.dataset, batch[self.rank :: self.world])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._make_order()
