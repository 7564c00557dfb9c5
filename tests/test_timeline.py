"""The step is the loop's one clock: epoch, place in the data order and lr follow from it, and
checkpoints written before that (or under another world size or dataset) still resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from cgdistill import paths
from cgdistill.data.unpaired import EpochSampler
from cgdistill.train.config import TeacherConfig
from cgdistill.train.loop import Observer, build_loader
from cgdistill.train.runtime import Runtime
from cgdistill.train.state import Position
from cgdistill.train.stopping import TrainingInterrupted
from cgdistill.train.teacher import train_teacher
from cgdistill.train.timeline import Timeline
from teacher_runs import weights


class Numbers(Dataset):
    """Item i is {"A": tensor([i])}: what a batch holds shows where in the order the loader is."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"A": torch.tensor([key[1]])}


class Messages(Observer):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def message(self, text: str) -> None:
        self.texts.append(text)


def cpu_runtime(rank: int = 0, world_size: int = 1) -> Runtime:
    return Runtime(torch.device("cpu"), None, False, False, False, 0, rank=rank, world_size=world_size)


def test_the_position_after_a_step_count_is_its_epoch_and_samples_consumed():
    timeline = Timeline(samples_per_epoch=6, batch_size=4, epochs=1, epochs_decay=1)
    assert timeline.steps_per_epoch == 2 and timeline.total_steps == 4
    assert [timeline.position(done) for done in range(5)] == [
        Position(0, 0, 0), Position(1, 0, 4), Position(2, 1, 0), Position(3, 1, 4), Position(4, 2, 0)
    ]  # fmt: skip
    assert [timeline.epoch(step) for step in range(4)] == [0, 0, 1, 1]
    assert Timeline(6, 4, 1, 1, max_steps=3).total_steps == 3


@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(6, 1, 1), (7, 2, 1), (7, 3, 2), (5, 8, 1)])
def test_the_derived_position_is_where_the_loader_stands(n, batch_size, world_size):
    config = TeacherConfig(batch_size=batch_size, epochs=2, epochs_decay=0)
    timeline = Timeline.for_run(config, n, world_size)
    for rank in range(world_size):
        loader, sampler = build_loader(Numbers(n), config, cpu_runtime(rank, world_size))
        sampler.set_epoch(1)
        batches = [batch["A"] for batch in loader]
        assert len(batches) == timeline.steps_per_epoch
        consumed = 0
        for done_in_epoch, batch in enumerate(batches, start=1):
            consumed += len(batch)
            position = timeline.position(timeline.steps_per_epoch + done_in_epoch)
            if done_in_epoch < len(batches):
                assert (position.epoch, position.offset) == (1, consumed)
                # Entering the epoch at the derived offset gives the batches that follow.
                sampler.set_epoch(1, start=position.offset)
                assert torch.equal(next(iter(loader))["A"], batches[done_in_epoch])
            else:
                assert (position.epoch, position.offset, consumed) == (2, 0, timeline.samples_per_epoch)


def test_stored_positions_agree_with_the_derived_ones_unless_the_epoch_length_changed():
    timeline = Timeline(samples_per_epoch=6, batch_size=1, epochs=1, epochs_decay=1)
    assert timeline.agrees_with(Position(4, 0, 4))
    assert timeline.agrees_with(Position(6, 1, 0))
    assert timeline.agrees_with(Position(6, 0, 6))  # how the loop before issue 14 stored an epoch's end
    assert not timeline.agrees_with(Position(6, 0, 5))
    # The same checkpoint resumed by two processes: each has 3 samples an epoch, step 6 is epoch 2's start.
    two_ranks = Timeline(samples_per_epoch=3, batch_size=1, epochs=1, epochs_decay=1)
    assert not two_ranks.agrees_with(Position(6, 1, 0))


def tiny(**overrides) -> TeacherConfig:
    settings = dict(
        data="toy", blocks=1, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2,
        epochs=1, epochs_decay=1, save_every=1000, sample_every=1000, log_every=1, seed=3,
        device="cpu", amp=False,  # bitwise resume is an fp32 CPU promise (docs/training.md)
    )  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def stored_position(run: Path) -> dict:
    pointer = json.loads((run / "state" / "latest.json").read_text())
    return json.loads((run / "state" / pointer["checkpoint"] / "trainer.json").read_text())["position"]


def test_an_epoch_end_stored_the_old_way_resumes_bitwise_and_without_a_note(toy, interrupt_after):
    # 6 images, batch 1: step 6 ends epoch 1. The loop before issue 14 stored that as epoch 0, offset 6.
    straight = train_teacher(tiny(max_steps=9, name="straight"))
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=9, name="split"), observer=interrupt_after(6))
    split = paths.run_path("split")
    assert stored_position(split) == {"step": 6, "epoch": 1, "offset": 0}
    state = split / "state" / json.loads((split / "state" / "latest.json").read_text())["checkpoint"]
    trainer = json.loads((state / "trainer.json").read_text())
    trainer["position"] = {"step": 6, "epoch": 0, "offset": 6}
    (state / "trainer.json").write_text(json.dumps(trainer))

    messages = Messages()
    train_teacher(tiny(max_steps=9, name="split"), resume=True, observer=messages)
    assert messages.texts[-1] == "Resuming split at step 6 (epoch 2)."
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_whose_epoch_length_changed_continues_where_its_step_falls(toy, interrupt_after, monkeypatch):
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=8, name="shrunk"), observer=interrupt_after(4))
    run = paths.run_path("shrunk")
    assert stored_position(run) == {"step": 4, "epoch": 0, "offset": 4}
    for domain in "AB":  # 3 images a domain now: an epoch is 3 steps, and step 4 falls at sample 1 of epoch 2
        for image in sorted((toy / f"train{domain}").iterdir())[3:]:
            image.unlink()
    entered = []
    real = EpochSampler.set_epoch
    monkeypatch.setattr(EpochSampler, "set_epoch", lambda self, epoch, start=0: (entered.append((epoch, start)), real(self, epoch, start)))  # fmt: skip

    messages = Messages()
    train_teacher(tiny(max_steps=8, name="shrunk"), resume=True, observer=messages)
    assert any(
        "stood at sample 4 of epoch 1" in text and "falls at sample 1 of epoch 2" in text for text in messages.texts
    )
    assert entered[0] == (1, 1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 2 epochs of 3 steps now end the run at step 6, before --max-steps 8; the log follows the step.
    assert [(r["step"], r["epoch"]) for r in records] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]
    assert stored_position(run) == {"step": 6, "epoch": 2, "offset": 0}


def test_loader_workers_cross_an_epoch_boundary_and_resume_exactly(toy, interrupt_after):
    # Persistent worker processes, as on CUDA by default: the batch stream runs on into epoch 2 in both runs.
    straight = train_teacher(tiny(max_steps=9, workers=2, name="straight"))
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=9, workers=2, name="split"), observer=interrupt_after(5))
    split = train_teacher(tiny(max_steps=9, workers=2, name="split"), resume=True)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
