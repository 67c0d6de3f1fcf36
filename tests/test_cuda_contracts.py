"""What a CUDA run needs of the code, checked on the CPU: random draws on the generator's
device (a stand-in generator that says it lives on CUDA), cuDNN's algorithm search."""

from __future__ import annotations

import functools

import pytest
import torch

import ddlib
from ddlib import engine, mechanism
from ddlib.methods import METHODS
from ddlib.methods.base import Method


class CudaGeneratorStandIn(torch.Generator):
    """A CPU generator that reports `cuda` as its device, as the run's generator does on a
    GPU (`Method` makes it on the run's device)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")


RANDOM_FACTORIES = ("rand", "randn", "randint", "randperm", "normal", "bernoulli",
                    "multinomial", "poisson")
RANDOM_IN_PLACE = ("uniform_", "normal_", "random_", "bernoulli_", "exponential_",
                   "cauchy_", "log_normal_", "geometric_")


def _refuse_off_device(draw, where):
    """`draw` refusing, as torch does, a generator that lives elsewhere than the output
    (`where(args, kwargs)`); a stand-in's draw then runs on the CPU."""
    @functools.wraps(draw)
    def checked(*args, **kwargs):
        generator = kwargs.get("generator")
        if isinstance(generator, CudaGeneratorStandIn):
            device = torch.device(where(args, kwargs))
            if device.type != "cuda":
                raise RuntimeError(f"Expected a '{device.type}' device type for generator "
                                   "but found 'cuda'")
            kwargs.pop("device", None)
        return draw(*args, **kwargs)
    return checked


def _factory_device(args, kwargs):
    if kwargs.get("device") is not None:
        return kwargs["device"]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return tensors[0].device if tensors else "cpu"


@pytest.fixture
def cuda_generator(monkeypatch):
    """Every method's run generator is a stand-in; every random draw checks its device."""
    for name in RANDOM_FACTORIES:
        monkeypatch.setattr(torch, name, _refuse_off_device(getattr(torch, name),
                                                            _factory_device))
    for name in RANDOM_IN_PLACE:
        monkeypatch.setattr(torch.Tensor, name, _refuse_off_device(
            getattr(torch.Tensor, name), lambda args, kwargs: args[0].device))
    init = Method.__init__

    def with_stand_in(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.generator = CudaGeneratorStandIn()

    monkeypatch.setattr(Method, "__init__", with_stand_in)


def test_stand_in_refuses_a_cpu_draw_as_torch_does(cuda_generator):
    with pytest.raises(RuntimeError, match="Expected a 'cpu' device type for generator"):
        torch.randperm(4, generator=CudaGeneratorStandIn())
    with pytest.raises(RuntimeError, match="Expected a 'cpu' device type for generator"):
        torch.zeros(3).uniform_(generator=CudaGeneratorStandIn())
    assert torch.randint(5, (2,), generator=CudaGeneratorStandIn(), device="cuda").shape == (2,)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_draw_of_a_dd_run_is_on_the_generator_device(smoke, cuda_generator, method):
    out = ddlib.run(smoke(method=method, dd=True), verbose=False)
    assert [r["classes_seen"] for r in out["rounds"]] == [5, 10, 15, 20]


# ---- cuDNN picks its fastest convolutions on CUDA runs ---------------------------------

@pytest.mark.parametrize("device, benchmark", [("cuda", True), ("cuda:1", True),
                                               ("cpu", False)])
def test_cudnn_benchmark_is_set_for_cuda_devices_only(monkeypatch, device, benchmark):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    engine.tune_backend(torch.device(device))
    assert torch.backends.cudnn.benchmark is benchmark


def test_every_method_tunes_the_backend_for_its_device(smoke, monkeypatch):
    from ddlib.run import load_scenario

    seen = []
    monkeypatch.setattr(engine, "tune_backend", seen.append)
    cfg = smoke()
    scenario = load_scenario(cfg)
    data = engine.DeviceData.from_arrays(scenario.data, torch.device("cpu"), pad=2,
                                         channels_last=False)
    for method in sorted(METHODS):
        METHODS[method](smoke(method=method), scenario, data)
    assert seen == [torch.device("cpu")] * len(METHODS)


# ---- the test images stay where they are: gathered a batch at a time --------------------

class _GatherWatch(torch.Tensor):
    """Test images that record the size of every gather taken from them."""

    gathered: list[int] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.__getitem__ and type(args[0]) is cls:
            cls.gathered.append(len(out))
        return out


def test_evaluation_never_copies_the_test_images_whole(smoke, monkeypatch):
    """600 test images in round 1 (more than one inference batch of 512): the CNN / NME
    evaluation, the expert's accuracy and the mechanism pages' accuracy gather at most a
    batch of them at once."""
    from ddlib.expert import DiscriminativeDistillation, make_expert
    from ddlib.run import load_scenario

    cfg = smoke(method="icarl", test_per_class=120)
    scenario = load_scenario(cfg)
    data = engine.DeviceData.from_arrays(scenario.data, torch.device("cpu"), pad=2,
                                         channels_last=False)
    method = METHODS["icarl"](cfg, scenario, data)
    rnd = method.make_round(1)
    method.expand(rnd)
    method.update_memory(rnd)
    reference = method.evaluate(rnd)
    monkeypatch.setattr(_GatherWatch, "gathered", [])
    data.test_x = data.test_x.as_subclass(_GatherWatch)
    record = method.evaluate(rnd)
    dd = DiscriminativeDistillation(make_expert(method.model, 5), rnd.new_classes)
    dd.accuracy(method.model, data, method._test_indices(rnd), classifier=True)
    mechanism.accuracy_on(method.model, data, scenario, rnd.new_classes)  # the book's pages
    assert record["confusion_cnn"] == reference["confusion_cnn"]
    assert record["confusion_nme"] == reference["confusion_nme"]
    assert len(method._test_indices(rnd)) == 600
    assert _GatherWatch.gathered and max(_GatherWatch.gathered) <= 512



@pytest.mark.parametrize("jobs, fits", [("1", True), ("4", False)])
def test_packed_jobs_leave_a_dataset_that_fits_once_on_the_disk(monkeypatch, jobs, fits):
    """An 80 GiB GPU, all free: a 19 GiB training set (the ImageNet-Subset) is copied by a
    job alone, not by each of 4 packed jobs (half of a 20 GiB share is 10 GiB)."""
    import numpy as np

    GiB = 2**30
    monkeypatch.setenv("DDLIB_JOBS_ON_GPU", jobs)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GiB, 80 * GiB))
    images = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (19 * GiB,), (0,))
    assert images.nbytes == 19 * GiB
    assert engine._fits(images, torch.device("cuda")) is fits

# ---- one compile per run --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_compiled_graphs_do_not_grow_with_rounds(smoke, monkeypatch, method):
    """Smoke +DD runs of 2 and 4 rounds, compiled with a CompileCounter for a backend: two
    graphs each (the backbone training, the backbone frozen: teacher and expert), no graph
    break. The whole step used to be compiled afresh by every stage (iCaRL+DD: 4 graphs in
    2 rounds, 10 in 4)."""
    from torch._dynamo.testing import CompileCounter
    from torch._dynamo.utils import counters

    counter = CompileCounter()
    monkeypatch.setattr(engine, "compiled", lambda fn, device: torch.compile(
        fn, backend=counter, dynamic=False))
    runs = []
    for classes, superclasses in ((10, 2), (20, 4)):
        counter.clear()
        counters.clear()
        out = ddlib.run(smoke(method=method, dd=True, compile="on", synthetic_classes=classes,
                              synthetic_superclasses=superclasses), verbose=False)
        runs.append((len(out["rounds"]), counter.frame_count, dict(counters["graph_break"])))
    assert runs == [(2, 2, {}), (4, 2, {})]
