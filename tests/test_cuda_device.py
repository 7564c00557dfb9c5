"""`--device auto` on a CUDA machine, proven on the CPU: every command asks for an indexed GPU.

No GPU here, so the tests fake one: ``torch.cuda`` reports GPUs (``set_device`` refuses an
unindexed device, as the real one does), and the first time anything asks for memory on a CUDA
device the command stops with :class:`CudaRequested`, which records the device it asked for. A
command that reaches that point with ``cuda:0`` would have run on the GPU; the bug this guards
against (``auto`` meaning a bare ``cuda``) stopped every command before it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from cgdistill import paths
from cgdistill.data.toy import make_toy_dataset
from cgdistill.device import pick_device
from cgdistill.errors import CgdistillError
from cgdistill.nets import ResnetGenerator
from cgdistill.train import runtime as runtime_module
from cgdistill.train import state as state_module
from cgdistill.train.config import TeacherConfig
from cgdistill.weights import save_generator


class CudaRequested(BaseException):  # noqa: N818 - not an error: the point the test runs to
    """Something asked for memory on ``device``. A BaseException, so no ``except Exception`` hides it."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(str(device))
        self.device = device


def _cuda_device_in(value) -> torch.device | None:
    if isinstance(value, torch.device) and value.type == "cuda":
        return value
    if isinstance(value, str) and value.startswith("cuda"):
        return torch.device(value)
    return None


class StopAtCuda(TorchFunctionMode):
    """Raise :class:`CudaRequested` at the first torch call that names a CUDA device (``.to``, factories)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.device:  # naming a device allocates nothing
            return func(*args, **kwargs)
        for value in itertools.chain(args, kwargs.values()):
            device = _cuda_device_in(value)
            if device is not None:
                raise CudaRequested(device)
        return func(*args, **kwargs)


class FakeGpus:
    """``torch.cuda`` as a machine with ``count`` Hopper GPUs shows it, up to the first allocation."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int = 2, capability: tuple[int, int] = (9, 0)):
        self.current = 0
        self.set_calls: list[int] = []
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "is_initialized", lambda: False)
        monkeypatch.setattr(cuda, "device_count", lambda: count)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "set_device", self.set_device)
        monkeypatch.setattr(cuda, "get_device_name", lambda device=None: "Fake GPU")
        monkeypatch.setattr(cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        # setup_runtime sets these for CUDA; restore() puts them back.
        self.flags = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
                      (torch.backends.cudnn, "deterministic"), (torch.backends.cuda.matmul, "allow_tf32")]  # fmt: skip
        self.saved = [getattr(owner, name) for owner, name in self.flags]

    def restore(self) -> None:
        for (owner, name), value in zip(self.flags, self.saved, strict=True):
            setattr(owner, name, value)

    def set_device(self, device) -> None:
        if isinstance(device, torch.device):
            if device.index is None:
                raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
            device = device.index
        self.set_calls.append(int(device))
        self.current = int(device)


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    fake = FakeGpus(monkeypatch)
    yield fake
    fake.restore()


@pytest.fixture
def volta(monkeypatch: pytest.MonkeyPatch):
    """A V100 (compute capability 7.0): ``is_bf16_supported()`` says yes, but bf16 is emulated there."""
    fake = FakeGpus(monkeypatch, count=1, capability=(7, 0))
    yield fake
    fake.restore()


class FakeProcessGroup:
    """torchrun's environment for one rank of ``world_size``, with the process group faked (no peers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int = 2) -> None:
        self.backend: str | None = None
        for key, value in dict(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world_size, LOCAL_WORLD_SIZE=world_size).items():
            monkeypatch.setenv(key, str(value))
        monkeypatch.setattr(dist, "init_process_group", self.init)
        monkeypatch.setattr(dist, "is_initialized", lambda: self.backend is not None)
        monkeypatch.setattr(dist, "get_world_size", lambda *args: world_size)
        monkeypatch.setattr(dist, "get_backend", lambda *args: self.backend)
        monkeypatch.setattr(dist, "destroy_process_group", lambda *args: None)

    def init(self, backend: str, **kwargs) -> None:
        self.backend = backend


def stopped_at(cli, *args: str) -> torch.device:
    """Run the CLI until it first asks for CUDA memory; the device it asked for."""
    with pytest.raises(CudaRequested) as stop, StopAtCuda():
        cli(*args)
    return stop.value.device


@pytest.fixture
def toy(home: Path) -> Path:
    return make_toy_dataset(paths.dataset_path("toy"), size=32, n_train=2, n_test=2)


@pytest.fixture
def models(home: Path, toy: Path) -> tuple[Path, Path]:
    """A teacher and a student generator file for the toy data."""
    folder = home / "models"
    folder.mkdir()
    teacher, student = folder / "teacher.safetensors", folder / "student.safetensors"
    save_generator(ResnetGenerator(blocks=2, ngf=4), teacher, direction="A2B", dataset="toy", image_size=32)
    save_generator(ResnetGenerator(blocks=1, ngf=4), student, direction="A2B", dataset="toy", image_size=32)
    return teacher, student


TINY = ("--max-steps", "1", "--image-size", "32", "--load-size", "32", "--ngf", "4", "--ndf", "4", "--blocks", "1")


# --- the device rule itself


def test_auto_is_the_current_gpu_with_its_index(gpus):
    gpus.current = 1
    assert pick_device("auto") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda", 1)


def test_under_torchrun_auto_and_cuda_are_the_local_ranks_gpu(gpus):
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert pick_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # an explicit index is obeyed


def test_more_ranks_than_gpus_is_one_clear_sentence(gpus):
    with pytest.raises(CgdistillError, match="local rank 2, but this machine has 2 CUDA GPU"):
        pick_device("auto", local_rank=2)


def test_one_explicit_gpu_for_several_ranks_on_a_node_is_refused(gpus, monkeypatch):
    FakeProcessGroup(monkeypatch, rank=0)
    with pytest.raises(CgdistillError, match="--device cuda:0 would put all 2 processes"):
        runtime_module.process_device("cuda:0")


def test_the_runtime_sets_an_indexed_device(gpus):
    rt = runtime_module.setup_runtime(TeacherConfig(device="auto"))
    assert rt.device == torch.device("cuda", 0)
    assert gpus.set_calls == [0]


def test_torchrun_ranks_join_nccl_on_their_own_gpu(gpus, monkeypatch):
    group = FakeProcessGroup(monkeypatch, rank=1)
    rt = runtime_module.setup_runtime(TeacherConfig(device="auto"))
    assert (rt.device, rt.rank, rt.world_size, group.backend) == (torch.device("cuda", 1), 1, 2, "nccl")
    assert set(gpus.set_calls) == {1}  # every set_device names the rank's GPU


def test_the_fake_gpu_refuses_a_bare_cuda_device_like_the_real_one(gpus):
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))


# --- precision: what the GPU runs natively


def test_an_ampere_or_newer_gpu_trains_in_bf16_without_loss_scaling(gpus):
    rt = runtime_module.setup_runtime(TeacherConfig(device="auto"))
    assert rt.amp_dtype == torch.bfloat16 and rt.scaler("G") is None


def test_a_gpu_before_ampere_trains_in_fp16_though_it_reports_bf16_support(volta):
    assert torch.cuda.is_bf16_supported()
    assert runtime_module.setup_runtime(TeacherConfig(device="auto")).amp_dtype == torch.float16


def test_amp_dtype_overrides_the_gpus_default(volta):
    assert runtime_module.setup_runtime(TeacherConfig(device="auto", amp_dtype="bf16")).amp_dtype == torch.bfloat16


def test_translate_runs_fp16_on_a_gpu_before_ampere(volta, monkeypatch):
    from cgdistill import engines

    monkeypatch.setattr(engines, "prepare_generator", lambda generator, device: generator)  # no GPU to move to
    engine = engines.torch_engine(ResnetGenerator(blocks=1, ngf=4), torch.device("cuda", 0))
    assert isinstance(engine.model, engines.Autocast) and engine.model.autocast().fast_dtype == torch.float16


def test_the_torch_engine_on_an_ampere_or_newer_gpu_runs_the_bf16_autocast_it_reports(gpus, monkeypatch):
    from cgdistill import engines

    monkeypatch.setattr(engines, "prepare_generator", lambda generator, device: generator)  # no GPU to move to
    engine = engines.torch_engine(ResnetGenerator(blocks=1, ngf=4), torch.device("cuda", 0))
    assert "autocast" in engine.reason
    assert (engine.model.device_type, engine.model.autocast().fast_dtype) == ("cuda", torch.bfloat16)


def test_the_distillers_evaluation_on_a_gpu_runs_at_the_engines_precision(gpus):
    from cgdistill.engines import Autocast, at_inference_precision

    generator = ResnetGenerator(blocks=1, ngf=4)
    wrapped = at_inference_precision(generator, torch.device("cuda", 0))
    assert isinstance(wrapped, Autocast) and wrapped.generator is generator and wrapped.dtype == torch.bfloat16
    assert at_inference_precision(wrapped, torch.device("cuda", 0)) is wrapped  # an engine's model keeps its own


# --- every command reaches its first CUDA allocation on cuda:0


def test_train_teacher_auto_allocates_on_cuda_0(cli, gpus, toy):
    assert stopped_at(cli, "train-teacher", "--data", "toy", "--name", "t", *TINY) == torch.device("cuda", 0)
    assert gpus.set_calls == [0]


@pytest.mark.parametrize("rank", [0, 1])
def test_train_teacher_under_torchrun_allocates_on_the_local_ranks_gpu(cli, gpus, toy, monkeypatch, rank):
    group = FakeProcessGroup(monkeypatch, rank=rank)
    assert stopped_at(cli, "train-teacher", "--data", "toy", "--name", "t", *TINY) == torch.device("cuda", rank)
    assert group.backend == "nccl" and set(gpus.set_calls) == {rank}


def test_train_teacher_under_torchrun_with_one_process_allocates_on_cuda_0(cli, gpus, toy, monkeypatch):
    for key, value in dict(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, LOCAL_WORLD_SIZE=1).items():
        monkeypatch.setenv(key, str(value))
    assert stopped_at(cli, "train-teacher", "--data", "toy", "--name", "t", *TINY) == torch.device("cuda", 0)


def test_distill_auto_allocates_on_cuda_0(cli, gpus, models):
    teacher, _ = models
    args = ("distill", "--teacher", str(teacher), "--data", "toy", "--name", "s", *TINY)
    assert stopped_at(cli, *args) == torch.device("cuda", 0)
    assert gpus.set_calls == [0]


@pytest.mark.parametrize("rank", [0, 1])
def test_distill_under_torchrun_allocates_on_the_local_ranks_gpu(cli, gpus, models, monkeypatch, rank):
    FakeProcessGroup(monkeypatch, rank=rank)
    teacher, _ = models
    args = ("distill", "--teacher", str(teacher), "--data", "toy", "--name", "s", *TINY)
    assert stopped_at(cli, *args) == torch.device("cuda", rank)


def test_translate_auto_allocates_on_cuda_0(cli, gpus, models, toy, tmp_path):
    _, student = models
    image = next((toy / "testA").iterdir())
    args = ("translate", str(image), "--model", str(student), "--output", str(tmp_path / "out"))
    assert stopped_at(cli, *args) == torch.device("cuda", 0)


def test_compare_auto_allocates_on_cuda_0(cli, gpus, models):
    teacher, student = models
    args = ("compare", "--teacher", str(teacher), "--student", str(student), "--data", "toy")
    assert stopped_at(cli, *args) == torch.device("cuda", 0)


def test_demo_auto_allocates_on_cuda_0(cli, gpus, tmp_path):
    assert stopped_at(cli, "demo", "--quick", "--device", "auto", "--output", str(tmp_path / "demo")) == torch.device(
        "cuda", 0
    )
    assert gpus.set_calls == [0]


# --- determinism, and resuming on a machine with other GPUs


def test_deterministic_turns_off_cudnn_autotuning_and_sets_the_cublas_workspace(gpus, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kw: calls.append((mode, kw)))
    rt = runtime_module.setup_runtime(TeacherConfig(device="auto", deterministic=True))
    assert calls == [(True, {"warn_only": True})]
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "deterministic" in rt.describe()


def test_cudnn_autotunes_by_default(gpus):
    runtime_module.setup_runtime(TeacherConfig(device="auto"))
    assert torch.backends.cudnn.benchmark


def rng_marker(value: int) -> torch.Tensor:
    return torch.full((16,), value, dtype=torch.uint8)


@pytest.fixture
def gpu_rng(gpus, monkeypatch) -> list[tuple[int, int]]:
    """The fake GPUs' generators: get_rng_state reads (current device + 1), set_rng_state is recorded."""
    restored: list[tuple[int, int]] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": rng_marker(gpus.current + 1))
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((gpus.current, int(state[0])))
    )
    return restored


def checkpoint(run: Path, monkeypatch, rng: dict[str, torch.Tensor] | None = None) -> None:
    if rng is not None:
        monkeypatch.setattr(state_module, "_rng_tensors", lambda: {"rng.torch": torch.get_rng_state(), **rng})
    state_module.save_state(run, state_module.Position(step=1), modules={}, optimizers={}, pools={}, scalers={})


def resume(run: Path) -> None:
    state_module.load_state(run, modules={}, optimizers={}, pools={}, scalers={}, device=torch.device("cpu"))


def test_a_checkpoint_holds_the_rng_state_of_its_own_gpu_only(gpu_rng, gpus, tmp_path, monkeypatch):
    gpus.current = 1
    checkpoint(tmp_path, monkeypatch)
    tensors = load_file(str(state_module.latest_checkpoint(tmp_path) / "tensors.safetensors"))
    assert sorted(k for k in tensors if k.startswith("rng.cuda")) == ["rng.cuda"]
    assert int(tensors["rng.cuda"][0]) == 2


def test_resume_on_another_gpu_count_restores_the_state_onto_this_processs_gpu(gpu_rng, gpus, tmp_path, monkeypatch):
    checkpoint(tmp_path, monkeypatch, {"rng.cuda": rng_marker(7)})
    gpus.current = 1
    resume(tmp_path)
    assert gpu_rng == [(1, 7)]


def test_resume_from_an_older_eight_gpu_checkpoint_takes_only_a_gpu_that_exists(gpu_rng, gpus, tmp_path, monkeypatch):
    checkpoint(tmp_path, monkeypatch, {f"rng.cuda.{i}": rng_marker(10 + i) for i in range(8)})
    gpus.current = 1  # this machine has two GPUs
    resume(tmp_path)
    assert gpu_rng == [(1, 11)]


def test_a_cpu_checkpoint_resumes_on_a_gpu_without_touching_its_generator(gpu_rng, tmp_path, monkeypatch):
    checkpoint(tmp_path, monkeypatch, {})
    resume(tmp_path)
    assert gpu_rng == []


def test_a_gpu_checkpoint_resumes_on_a_cpu_only_machine(tmp_path, monkeypatch):
    checkpoint(tmp_path, monkeypatch, {"rng.cuda": rng_marker(7), "rng.cuda.3": rng_marker(3)})
    resume(tmp_path)  # no GPU here (and the fakes are off): the GPU states are skipped, nothing fails
