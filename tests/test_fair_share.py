"""The fair share: torch's threads follow the cores other processes leave idle, measured as the
machine's busy time less this process's own (clocks and /proc/stat replaced by a script)."""

from __future__ import annotations

import pytest
import torch

from onnxmtl.training import fair_share
from onnxmtl.training.fair_share import FairShare


class Machine:
    """A 4-core machine whose clocks advance only when told: `run(seconds, own, others)`
    passes `seconds` of wall time in which this process used `own` cores and others used
    `others`."""

    def __init__(self) -> None:
        self.wall = self.busy = self.own = 0.0

    def run(self, seconds: float, own: float, others: float) -> None:
        self.wall += seconds
        self.own += own * seconds
        self.busy += (own + others) * seconds


@pytest.fixture
def machine(monkeypatch):
    m = Machine()
    monkeypatch.setattr(fair_share, "usable_cores", lambda: 4)
    monkeypatch.setattr(fair_share, "_busy_seconds", lambda cores: m.busy)
    monkeypatch.setattr(fair_share.time, "monotonic", lambda: m.wall)
    monkeypatch.setattr(fair_share.time, "process_time", lambda: m.own)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield m
    torch.set_num_threads(before)


def test_threads_follow_the_cores_others_leave_idle(machine):
    share = FairShare(every=2.0)
    share.step()  # the first measure starts the window
    machine.run(1.0, own=4, others=3)
    share.step()  # under 2 s: not re-measured yet
    assert torch.get_num_threads() == 4
    machine.run(1.5, own=4, others=3)
    share.step()
    assert torch.get_num_threads() == 1  # 3 of 4 cores busy elsewhere
    machine.run(2.0, own=1, others=2)
    share.step()
    assert torch.get_num_threads() == 2
    machine.run(2.0, own=2, others=0.2)  # a shell's noise still counts as idle
    share.step()
    assert torch.get_num_threads() == 4
    assert share.changes == [1, 2, 4]


def test_never_above_what_the_caller_chose_and_given_back_at_the_end(machine):
    torch.set_num_threads(2)  # e.g. a test worker's share of the cores
    share = FairShare(every=1.0)
    share.step()
    machine.run(1.0, own=2, others=0)
    share.step()
    assert torch.get_num_threads() == 2  # 4 idle cores, but the caller gave it 2
    machine.run(1.0, own=2, others=4)
    share.step()
    assert torch.get_num_threads() == 1
    share.close()
    assert torch.get_num_threads() == 2


def test_without_the_machine_s_busy_time_nothing_changes(machine, monkeypatch):
    monkeypatch.setattr(fair_share, "_busy_seconds", lambda cores: None)
    share = FairShare(every=1.0)
    for _ in range(3):
        share.step()
        machine.run(1.0, own=4, others=4)
    assert torch.get_num_threads() == 4 and share.changes == []


def test_proc_stat_of_a_host_with_other_cpus_is_not_read(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0\n")
    monkeypatch.setattr(fair_share, "PROC_STAT", stat)
    ticks = fair_share.os.sysconf("SC_CLK_TCK")
    assert fair_share._busy_seconds(1) == pytest.approx(200 / ticks)
    assert fair_share._busy_seconds(2) is None  # it lists 1 CPU; this process may use 2
