"""train/plan.py: a run's final settings from the flags and the stored run, decided in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.train import plan as plan_module
from cgdistill.train.config import DistillConfig, TeacherConfig
from cgdistill.train.plan import plan_distill, plan_teacher
from cgdistill.train.session import write_config


@dataclass
class FakeTeacher:
    """What the plan reads of a loaded teacher, without loading one."""

    source: str = "horses"
    direction: str = "A2B"
    dataset: str | None = "toy"
    step: int | None = 40
    ngf: int = 64


class Loader:
    """A teacher loader that records what it was asked for."""

    def __init__(self, teacher: FakeTeacher | None = None) -> None:
        self.teacher = teacher or FakeTeacher()
        self.calls: list[tuple[str | None, str | None]] = []

    def __call__(self, spec: str | None, direction: str | None) -> FakeTeacher:
        self.calls.append((spec, direction))
        return replace(self.teacher, direction=direction or self.teacher.direction)


def store_run(name: str, kind: str, config, data_dir: Path) -> Path:
    run_dir = paths.run_path(name)
    run_dir.mkdir(parents=True)
    write_config(run_dir, kind, config, data_dir)
    return run_dir


def test_teacher_resume_keeps_the_stored_settings_that_may_not_change(toy):
    store_run("r", "teacher", TeacherConfig(name="r", data="toy", epochs=3), toy)
    plan = plan_teacher(TeacherConfig(name="r", epochs=7), resume=True, given={"epochs"})
    assert plan.config.epochs == 3


def test_teacher_resume_takes_a_changeable_flag(toy):
    store_run("r", "teacher", TeacherConfig(name="r", data="toy", max_steps=10), toy)
    plan = plan_teacher(TeacherConfig(name="r", max_steps=20), resume=True, given={"max_steps"})
    assert plan.config.max_steps == 20


def test_teacher_resume_trains_in_the_folder_named_not_the_stored_name(toy):
    store_run("copy", "teacher", TeacherConfig(name="original", data="toy"), toy)
    plan = plan_teacher(TeacherConfig(name="copy"), resume=True, given=set())
    assert (plan.config.name, plan.run_dir) == ("copy", paths.run_path("copy"))


def test_teacher_without_data_takes_the_newest_dataset_says_so_and_is_named_after_it(toy):
    plan = plan_teacher(TeacherConfig())
    assert (plan.config.data, plan.data_dir, plan.config.name) == ("toy", toy, "toy")
    assert plan.notes[0].startswith("No --data given: using toy, the only dataset")


def test_the_plan_leaves_the_callers_config_as_it_was(toy):
    flags = TeacherConfig()
    plan_teacher(flags)
    assert (flags.data, flags.name) == (None, None)


def test_distill_fills_the_objectives_weights_and_the_presets_shape():
    plan = plan_distill(DistillConfig(data=".", preset="fast"), Loader())
    config = plan.config
    assert (config.lambda_gan, config.lambda_cycle, config.lambda_identity) == (0.0, 0.0, 0.0)  # fidelity
    assert (config.blocks, config.ngf, config.lr, config.echo) == (3, 32, 1e-3, 2)


def test_distill_names_the_run_after_the_teacher_direction_depth_and_preset():
    plan = plan_distill(DistillConfig(data=".", preset="fast", blocks=2), Loader(), given={"blocks"})
    assert plan.config.name == "horses-A2B-2b-fast"


def test_distill_trains_on_the_teachers_dataset_by_default(toy):
    plan = plan_distill(DistillConfig(), Loader())
    assert (plan.config.data, plan.data_dir, plan.domains) == ("toy", toy, ("A", "B"))


def test_distill_resolves_data_once(toy, monkeypatch):
    calls = []
    real = paths.resolve_data
    monkeypatch.setattr(paths, "resolve_data", lambda spec: calls.append(spec) or real(spec))
    plan_distill(DistillConfig(), Loader())
    assert calls == ["toy"]


def test_distill_without_the_target_domain_trains_on_the_source_alone(tmp_path):
    (tmp_path / "trainB").mkdir()
    plan = plan_distill(DistillConfig(data=str(tmp_path), direction="B2A"), Loader())
    assert plan.domains == ("B",)


def test_distill_resume_loads_the_stored_teacher_and_reads_config_json_once(toy, monkeypatch):
    stored = DistillConfig(name="s", teacher="horses", direction="B2A", data="toy", lambda_gan=0.0)
    store_run("s", "student", stored, toy)
    reads = []
    real = plan_module.read_run_config
    monkeypatch.setattr(plan_module, "read_run_config", lambda *args: reads.append(args) or real(*args))
    loader = Loader()
    plan = plan_distill(DistillConfig(name="s", teacher="zebras", direction="A2B"), loader, resume=True, given=set())
    assert loader.calls == [("horses", "B2A")]
    assert len(reads) == 1
    assert (plan.config.teacher, plan.config.direction) == ("horses", "B2A")


def test_distill_resume_keeps_the_stored_teacher_step():
    # A student started against step 40 of a teacher now at step 90 keeps 40: distill() reports the gap.
    data = Path(".").resolve()
    store_run("s", "student", DistillConfig(name="s", teacher="horses", direction="A2B", data=str(data),
                                           teacher_step=40), data)  # fmt: skip
    plan = plan_distill(DistillConfig(name="s"), Loader(FakeTeacher(step=90)), resume=True, given=set())
    assert (plan.config.teacher_step, plan.teacher.step) == (40, 90)


def test_a_new_distill_run_records_the_teachers_step():
    plan = plan_distill(DistillConfig(data="."), Loader(FakeTeacher(step=90)))
    assert plan.config.teacher_step == 90


def test_a_resume_plan_records_config_json_as_it_read_it(toy):
    run_dir = store_run("r", "teacher", TeacherConfig(name="r", data="toy"), toy)
    plan = plan_teacher(TeacherConfig(name="r"), resume=True, given=set())
    assert plan.config_stamp == plan_module.config_stamp(run_dir) is not None
    assert plan_teacher(TeacherConfig(name="new")).config_stamp is None


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_a_resume_is_refused_when_another_process_rewrote_config_json_before_the_lock(toy, monkeypatch, kind):
    """The plan reads config.json before the run's lock is taken; a rewrite in between (another
    resume with other flags, or a run that finished) must not be trained on with stale settings."""
    if kind == "teacher":
        from cgdistill.train import teacher as module

        stored, flags = TeacherConfig(name="r", data="toy", max_steps=10), TeacherConfig(name="r")
        run = module.train_teacher
    else:
        from cgdistill.train import distill as module

        stored = DistillConfig(name="r", teacher="horses", direction="A2B", data="toy", max_steps=10)
        flags = DistillConfig(name="r")
        monkeypatch.setattr(module, "load_teacher", lambda *args, **kwargs: FakeTeacher())
        run = module.distill
    run_dir = store_run("r", kind, stored, toy)
    real_plan = getattr(module, f"plan_{'teacher' if kind == 'teacher' else 'distill'}")

    def plan_then_rewrite(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        write_config(run_dir, kind, replace(stored, max_steps=12345), toy)  # the other process
        return plan

    monkeypatch.setattr(module, real_plan.__name__, plan_then_rewrite)
    with pytest.raises(CgdistillError, match="changed by another process.*run the command again"):
        run(flags, resume=True, given=set())
