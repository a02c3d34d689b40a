"""`check_source`: what `onnxmtl data check` reports about a dataset before a run trains on it,
every problem listed rather than the first raised."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from onnxmtl.data.base import MultiTaskDataset
from onnxmtl.data.labelled_folder import LabelledFolder, is_labelled_folder
from onnxmtl.data.registry import load_dataset
from onnxmtl.data.summary import summarize
from onnxmtl.errors import DataError
from onnxmtl.tasks import load_tasks

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataCheck:
    """Each split's summary lines, and every problem found as (kind, message)."""

    source: str
    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """How many problems of each kind, in the order first found."""
        return dict(Counter(kind for kind, _ in self.problems))


def check_source(
    source: str | Path, tasks: str | Path | None = None, size: int | None = None
) -> DataCheck:
    """Read both splits of `source` (a bundled dataset's name or a labelled folder) for `tasks`
    (a YAML task list; None: the dataset's own). A task the data does not label at all raises
    DataError; a labelled folder's bad files and values are collected as problems."""
    options = {"size": size} if size else {}
    check = DataCheck(str(source))
    for split in SPLITS:
        dataset: MultiTaskDataset
        if is_labelled_folder(Path(source)):
            folder = LabelledFolder(source, split, strict=False, **options)
            check.problems.extend(folder.problems)
            dataset = folder
        else:
            dataset = load_dataset(str(source), split, **options)
        wanted = load_tasks(tasks) if tasks else dataset.tasks()
        labelled = {t.name for t in dataset.tasks()}
        unlabelled = [t.name for t in wanted if t.name not in labelled]
        if unlabelled:
            raise DataError(f"{source}: does not label task(s) {', '.join(unlabelled)}.")
        try:
            dataset.check(wanted)
        except DataError as exc:
            check.problems.append(("bad value" if exc.kind == "data" else exc.kind, str(exc)))
        check.lines.extend(summarize(split, dataset, wanted))
    return check
