"""CPU thread counts: the cores a process may use, less those others keep busy, re-chosen as the load
changes; ``--threads`` and OMP_NUM_THREADS fix the count (issue 21: two jobs fought 9.4x slower)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import typer.main

from cgdistill import threads
from cgdistill.cli.app import app
from cgdistill.threads import (
    CHECK_EVERY_S,
    Governor,
    Sample,
    cgroup_cpu_limit,
    choose_threads,
    others_busy,
    parse_cfs,
    parse_cpu_max,
    read_busy,
    usable_cores,
)
from cgdistill.train.config import TeacherConfig
from cgdistill.train.runtime import setup_runtime


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Each test leaves torch's count (conftest: 1) and the process's policy as it found them."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {"first": None, "governor": None})
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_cpu_max_gives_the_quota_in_cores():
    assert parse_cpu_max("150000 100000\n") == 1.5


def test_cgroup_v2_cpu_max_of_max_is_no_limit():
    assert parse_cpu_max("max 100000\n") is None


def test_cgroup_v1_quota_of_minus_one_is_no_limit_and_otherwise_quota_over_period():
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("200000\n", "100000\n") == 2.0


def test_a_quota_on_an_ancestor_cgroup_applies(tmp_path: Path):
    own = tmp_path / "cgroup"
    own.write_text("0::/job/step\n")
    root = tmp_path / "fs"
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "cpu.max").write_text("100000 100000\n")
    (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, own) == 1.0


def test_a_cgroup_v1_cfs_quota_is_read(tmp_path: Path):
    own = tmp_path / "cgroup"
    own.write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    folder = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("50000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "fs", own) == 0.5


def test_no_cgroup_file_means_no_limit(tmp_path: Path):
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None


def test_usable_cores_round_a_quota_and_never_exceed_the_cpus():
    assert usable_cores(4, None) == 4
    assert usable_cores(4, 1.5) == 2
    assert usable_cores(4, 0.3) == 1
    assert usable_cores(2, 8.0) == 2


def test_an_idle_machine_gets_every_core():
    assert choose_threads(2, None, others_busy=0.05) == 2


def test_a_neighbour_on_one_core_leaves_the_other():
    assert choose_threads(2, None, others_busy=1.0) == 1


def test_a_busy_machine_still_gets_one_thread():
    assert choose_threads(2, None, others_busy=3.7) == 1


def test_light_background_load_does_not_cost_a_core():
    assert choose_threads(2, None, others_busy=0.3) == 2


def test_a_quota_caps_the_count_on_an_idle_machine():
    assert choose_threads(8, 2.0, others_busy=0.0) == 2


def test_busy_time_counts_only_our_cpus_and_not_idle_or_io_wait(tmp_path: Path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    lines = [
        "cpu  9999 0 0 0 0 0 0 0 0 0",
        "cpu0 100 10 20 5000 300 1 2 3 0 0",
        "cpu1 7000 0 0 0 0 0 0 0 0 0",
        "intr 1",
    ]
    stat.write_text("\n".join(lines) + "\n")
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    assert read_busy({0}, stat) == pytest.approx((100 + 10 + 20 + 1 + 2 + 3) / ticks_per_s)


def test_others_busy_is_all_busy_time_less_our_own():
    before, after = Sample(busy=10.0, own=1.0, at=100.0), Sample(busy=14.0, own=3.0, at=102.0)
    assert others_busy(before, after) == pytest.approx(1.0)  # 4 s busy in 2 s, 2 of them ours


class FakeMachine:
    """A load that the test sets: each sample advances the clock and the busy time by what others do."""

    def __init__(self) -> None:
        self.at, self.busy, self.others = 0.0, 0.0, 0.0
        self.set_to: list[int] = []
        self.samples = 0

    def sample(self) -> Sample:
        self.samples += 1
        return Sample(self.busy, 0.0, self.at)

    def advance(self, seconds: float) -> None:
        self.at += seconds
        self.busy += self.others * seconds

    def governor(self, **kw) -> Governor:
        options = {"fixed": None, "follow_load": True, "cpus": {0, 1}, "limit": None}
        return Governor(**{**options, **kw}, set_threads=self.set_to.append, sample=self.sample, sleep=self.advance)


def test_the_first_count_is_measured_over_a_short_window():
    machine = FakeMachine()
    machine.others = 1.0
    assert machine.governor().start() == 1
    assert machine.at >= threads.MIN_WINDOW_S  # it waited for a window /proc/stat can resolve


def test_a_job_starting_beside_us_takes_a_core_at_the_next_check():
    machine = FakeMachine()
    governor = machine.governor()
    governor.start()
    machine.others = 1.0
    machine.advance(CHECK_EVERY_S)
    governor.tick(machine.at)
    assert governor.threads == 1 and machine.set_to[-1] == 1


def test_cores_freed_by_a_neighbour_are_taken_back_after_two_checks_agree():
    machine = FakeMachine()
    machine.others = 1.0
    governor = machine.governor()
    governor.start()
    machine.others = 0.0
    machine.advance(CHECK_EVERY_S)
    governor.tick(machine.at)
    assert governor.threads == 1  # a neighbour's pause (a checkpoint) is not its end
    machine.advance(CHECK_EVERY_S)
    governor.tick(machine.at)
    assert governor.threads == 2


def test_between_checks_a_tick_reads_nothing():
    machine = FakeMachine()
    governor = machine.governor()
    governor.start()
    read = machine.samples
    machine.advance(CHECK_EVERY_S / 2)
    governor.tick(machine.at)
    assert machine.samples == read


def test_a_fixed_count_stays_whatever_the_load():
    machine = FakeMachine()
    governor = machine.governor(fixed=2)
    governor.start()
    machine.others = 2.0
    machine.advance(CHECK_EVERY_S)
    governor.tick(machine.at)
    assert machine.set_to == [2] and governor.threads == 2


def test_not_following_the_load_takes_every_usable_core():
    machine = FakeMachine()
    machine.others = 2.0
    assert machine.governor(follow_load=False).start() == 2


def test_threads_option_sets_torchs_count_and_does_not_adapt(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.configure(2) == 2
    assert torch.get_num_threads() == 2
    assert not threads.adapting()


def test_omp_num_threads_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert threads.configure() == 1
    assert not threads.adapting()


def test_without_a_setting_the_count_follows_the_load(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if threads.read_busy(threads.allowed_cpus()) is None:
        pytest.skip("no /proc/stat here: the count stays at the usable cores")
    count = threads.configure()
    assert threads.adapting()
    assert 1 <= count <= len(threads.allowed_cpus())
    assert torch.get_num_threads() == count


def test_a_training_run_uses_its_threads_field(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    setup_runtime(TeacherConfig(device="cpu", threads=2))
    assert torch.get_num_threads() == 2 and not threads.adapting()


def test_a_deterministic_run_keeps_one_thread_per_usable_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    setup_runtime(TeacherConfig(device="cpu", deterministic=True))
    assert torch.get_num_threads() == threads.usable_cores(len(threads.allowed_cpus()), threads.cgroup_cpu_limit())
    assert not threads.adapting()


@pytest.mark.parametrize("command", ["translate", "compare", "export", "demo"])
def test_each_cpu_command_takes_a_threads_option(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    assert params["threads"].opts == ["--threads"]
    assert params["threads"].default is None


def test_training_checks_the_load_before_every_step(toy, monkeypatch):
    from cgdistill.train.teacher import train_teacher

    ticks = []
    monkeypatch.setattr(threads, "tick", lambda: ticks.append(1))
    config = TeacherConfig(data="toy", name="ticks", blocks=1, ngf=4, ndf=4, image_size=32, load_size=36,
                           max_steps=3, device="cpu", amp=False)  # fmt: skip
    train_teacher(config)
    assert len(ticks) == 3


def test_translate_checks_the_load_before_every_batch(tmp_path: Path, monkeypatch):
    from PIL import Image

    from cgdistill.nets import GeneratorConfig, ResnetGenerator
    from translating import translate_folder

    files = []
    for index, size in enumerate([(32, 32), (32, 32), (40, 32)]):
        files.append(tmp_path / f"{index}.png")
        Image.new("RGB", size, (index * 40, 90, 160)).save(files[-1])
    ticks = []
    monkeypatch.setattr(threads, "tick", lambda: ticks.append(1))
    generator = ResnetGenerator(GeneratorConfig(blocks=1, ngf=4))
    result = translate_folder(generator, files, tmp_path / "out", batch_size=2)
    assert len(result.written) == 3
    assert len(ticks) == 2  # one batch of the two 32x32 images, one of the 40x32 image
