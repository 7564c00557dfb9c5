"""The teacher's networks and losses carry the reference implementation's names (D_A judges domain B,
idt_A = |G_A2B(b) - b|), and runs made before that rename still resume, distill and plot right."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.losses import cycle_loss, discriminator_loss, gan_loss, identity_loss
from cgdistill.nets import unwrap
from cgdistill.runs import discriminator_judging
from cgdistill.train.config import TeacherConfig
from cgdistill.train.runtime import setup_runtime
from cgdistill.train.state import latest_checkpoint
from cgdistill.train.stopping import TrainingInterrupted
from cgdistill.train.teacher import CycleGANRecipe, train_teacher
from cgdistill.train.teacher_loading import load_teacher
from cgdistill.weights import read_info
from teacher_runs import weights

# How a teacher run logged its losses before the rename, by today's names (written out here, not
# taken from the code under test): D_A then was the discriminator of domain A, today's D_B.
OLD_NAMES = {"G_A": "G_A2B", "G_B": "G_B2A", "D_A": "D_B", "D_B": "D_A", "idt_A": "idt_B", "idt_B": "idt_A"}


def tiny(**overrides) -> TeacherConfig:
    settings = dict(
        data="toy", blocks=2, ngf=4, ndf=4, image_size=24, load_size=28, pool_size=2,
        epochs=1, epochs_decay=1, save_every=1000, sample_every=1000, log_every=1, seed=3,
        device="cpu", amp=False,  # bitwise resume is an fp32 CPU promise (docs/training.md)
    )  # fmt: skip
    settings.update(overrides)
    return TeacherConfig(**settings)


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_each_logged_loss_means_what_the_reference_implementations_does(toy):
    config = tiny()
    recipe = CycleGANRecipe(config, setup_runtime(config), "toy")
    G_A2B, G_B2A, D_A, D_B = (copy.deepcopy(unwrap(recipe.modules[n])) for n in ("G_A2B", "G_B2A", "D_A", "D_B"))
    draw = torch.Generator().manual_seed(0)
    a, b = (torch.rand(1, 3, 24, 24, generator=draw) * 2 - 1 for _ in range(2))
    lambda_idt = config.lambda_identity * config.lambda_cycle
    with torch.no_grad():  # the networks before the step; the pools hand back the step's own fakes at first
        fake_B, fake_A = G_A2B(a), G_B2A(b)
        expected = {
            "D_A": discriminator_loss(D_A(b), D_A(fake_B)),
            "G_A": gan_loss(D_A(fake_B), True),
            "cycle_A": cycle_loss(G_B2A(fake_B), a) * config.lambda_cycle,
            "idt_A": identity_loss(G_A2B(b), b) * lambda_idt,
            "D_B": discriminator_loss(D_B(a), D_B(fake_A)),
            "G_B": gan_loss(D_B(fake_A), True),
            "cycle_B": cycle_loss(G_A2B(fake_A), b) * config.lambda_cycle,
            "idt_B": identity_loss(G_B2A(a), a) * lambda_idt,
        }
    logged = recipe.train_step({"A": a, "B": b})
    assert list(logged) == ["D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"]
    # The same computations, at most summed in another order by another kernel: a few fp32 ulps of
    # sums over ~2,000 terms, far below 1e-4 relative. The old meanings differ by far more.
    for name, value in expected.items():
        assert math.isclose(logged[name].item(), value.item(), rel_tol=1e-4), name
    for new, old in (("idt_A", "idt_B"), ("D_A", "D_B"), ("G_A", "G_B")):
        assert not math.isclose(logged[new].item(), expected[old].item(), rel_tol=1e-2), new


def test_each_discriminator_file_records_the_domain_it_judges(toy):
    run = train_teacher(tiny(max_steps=1))
    assert read_info(run / "D_A.safetensors").judges == "B"
    assert read_info(run / "D_B.safetensors").judges == "A"
    assert discriminator_judging(run, "B") == run / "D_A.safetensors"
    assert discriminator_judging(run, "A") == run / "D_B.safetensors"


def write_as_before_the_rename(path: Path, target: Path) -> None:
    """``path``'s discriminator as a run made before the rename stored it: under ``target``, without ``judges``."""
    meta = metadata(path)
    del meta["judges"]
    save_file(load_file(str(path)), str(target), metadata=meta)


def test_discriminator_files_from_before_the_rename_judge_the_domain_their_name_says(toy):
    run = train_teacher(tiny(max_steps=1))
    judge_of_a, judge_of_b = run / "D_B.safetensors", run / "D_A.safetensors"
    old = paths.run_path("old")
    old.mkdir()
    write_as_before_the_rename(judge_of_a, old / "D_A.safetensors")
    write_as_before_the_rename(judge_of_b, old / "D_B.safetensors")
    for name in ("G_A2B.safetensors", "G_B2A.safetensors"):
        (old / name).write_bytes((run / name).read_bytes())
    assert discriminator_judging(old, "A") == old / "D_A.safetensors"
    assert discriminator_judging(old, "B") == old / "D_B.safetensors"
    # Distilling A2B trains against the judge of domain B, whichever name the run gives it.
    for teacher_run, judge_file in (("old", old / "D_B.safetensors"), (run.name, judge_of_b)):
        discriminator = load_teacher(teacher_run, "A2B").discriminator
        reference = load_file(str(judge_file))
        assert all(torch.equal(v, reference[k]) for k, v in discriminator.state_dict().items())


def test_a_recorded_domain_wins_over_the_old_naming(toy):
    # A run that a newer version was rewriting when it stopped: D_A already new (judges B), D_B still old.
    run = train_teacher(tiny(max_steps=1))
    write_as_before_the_rename(run / "D_A.safetensors", run / "D_B.safetensors")
    assert discriminator_judging(run, "B") == run / "D_A.safetensors"
    assert discriminator_judging(run, "A") is None


def make_run_from_before_the_rename(run: Path) -> None:
    """Rewrite a stopped run as the code before the rename left it: the latest training state
    (format version 1, the judge of domain A stored as ``D_A``), the discriminator files and the log."""
    folder = latest_checkpoint(run)
    tensors = load_file(str(folder / "tensors.safetensors"))
    swap = {"model.D_A.": "model.D_B.", "model.D_B.": "model.D_A."}
    old = {}
    for key, value in tensors.items():
        prefix = next((p for p in swap if key.startswith(p)), "")
        old[swap.get(prefix, "") + key[len(prefix) :]] = value
    assert old.keys() == tensors.keys() and any(key.startswith("model.D_A.") for key in old)
    save_file(old, str(folder / "tensors.safetensors"))
    meta = json.loads((folder / "trainer.json").read_text())
    meta["format_version"] = 1
    (folder / "trainer.json").write_text(json.dumps(meta))
    new_a, new_b = run / "D_A.safetensors", run / "D_B.safetensors"
    write_as_before_the_rename(new_b, run / "judge_of_a")
    write_as_before_the_rename(new_a, run / "D_B.safetensors")
    (run / "judge_of_a").replace(run / "D_A.safetensors")
    log = run / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({OLD_NAMES.get(k, k): v for k, v in r.items()}) + "\n" for r in records))


def test_a_run_from_before_the_rename_resumes_bitwise_and_logs_under_the_new_names(toy, interrupt_after):
    straight = train_teacher(tiny(max_steps=7, name="straight"))
    with pytest.raises(TrainingInterrupted):
        train_teacher(tiny(max_steps=7, name="split"), observer=interrupt_after(4))
    split = paths.run_path("split")
    make_run_from_before_the_rename(split)
    train_teacher(tiny(max_steps=7, name="split"), resume=True)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_info(split / "D_A.safetensors").judges == "B"
    logs = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, split)
    ]
    assert [r["step"] for r in logs[1]] == list(range(1, 8))
    for x, y in zip(*logs, strict=True):
        assert x.keys() == y.keys()  # one set of names throughout, the old lines renamed
        clocks = ("steps_per_s", "time")  # the wall clock differs between two runs of the same steps
        assert {k: v for k, v in x.items() if k not in clocks} == {k: v for k, v in y.items() if k not in clocks}


def test_the_d_optimizer_keeps_the_judge_of_domain_a_first_as_older_states_expect(toy):
    # A saved optimizer knows its parameters by position only; states written before the rename put
    # the judge of domain A (then D_A, now D_B) first, so it must stay first for them to resume.
    config = tiny()
    recipe = CycleGANRecipe(config, setup_runtime(config), "toy")
    order = recipe.optimizers["D"].param_groups[0]["params"]
    expected = [*recipe.D_B.parameters(), *recipe.D_A.parameters()]
    assert len(order) == len(expected) and all(x is y for x, y in zip(order, expected, strict=True))


def test_a_training_state_from_a_newer_cgdistill_is_refused(toy):
    run = train_teacher(tiny(max_steps=1, name="future"))
    trainer = latest_checkpoint(run) / "trainer.json"
    trainer.write_text(json.dumps({**json.loads(trainer.read_text()), "format_version": 99}))
    with pytest.raises(CgdistillError, match="format version 99, newer than this cgdistill"):
        train_teacher(tiny(max_steps=2, name="future"), resume=True)
