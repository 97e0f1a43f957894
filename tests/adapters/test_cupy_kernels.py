"""Our CuPy kernels == the core torch step, bit for bit.

The sources compile with NVRTC and the glue checks its arguments (no GPU needed). The equality
tests run each kernel through the full glue (flattening, dtype dispatch, argument packing,
autograd Functions) on two targets: ``emulated`` compiles the same sources with g++ and runs
every block x thread of the grid on the CPU (needs only g++; runs in CI), ``cupy`` runs them on a
CUDA GPU (marked ``cuda``, skipped without one). The reference is the core step function
(``snn_encodings.functional``), which shares no code with the kernels."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from typing import NamedTuple

import numpy
import pytest
import torch
from conftest import SPEC_EXAMPLES, require

from snn_encodings.errors import SpecError
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz, Radix
from snn_encodings.testing import assert_same_trace, run_core

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = [torch.float16, torch.float32, torch.float64]
SHAPES = [(1,), (3, 5), (2, 3, 43)]
"""N = 1, 15 and 258 neurons: one partial block, and two blocks of 256 threads, the second
almost empty (N is not a multiple of the block size)."""

ICRATE_EXAMPLES = [s for s in SPEC_EXAMPLES if isinstance(s, ICRate)]
RADIX_EXAMPLES = [s for s in SPEC_EXAMPLES if isinstance(s, Radix)]
QUARTZ_EXAMPLES = [s for s in SPEC_EXAMPLES if isinstance(s, Quartz)]


def _kernels():
    require("spikingjelly")
    from snn_encodings.adapters.spikingjelly import kernels

    return kernels


def test_kernel_sources_are_shipped_for_every_kernel_spec() -> None:
    kernels = _kernels()
    for name in kernels.KERNEL_SOURCES.values():
        assert 'extern "C" __global__' in kernels.source(name)


def test_kernel_sources_inline_the_common_header() -> None:
    kernels = _kernels()
    for name in kernels.KERNEL_SOURCES.values():
        text = kernels.source(name)
        assert not any(line.lstrip().startswith('#include "') for line in text.splitlines())
        assert "struct Storage<half_bits>" in text


def test_every_spec_example_has_a_kernel_signed_icrate_included() -> None:
    kernels = _kernels()
    assert all(kernels.has_kernel(spec) for spec in SPEC_EXAMPLES)
    assert {type(spec) for spec in SPEC_EXAMPLES} == set(kernels.KERNEL_SOURCES)
    signed = ICRate(steps=8, signed=True)
    assert kernels.has_kernel(signed)
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.multi_step(signed, torch.zeros(3, 2), (torch.zeros(2), torch.zeros(2)))
    with pytest.raises(SpecError, match=r"need the state \(v, count\)"):
        kernels.multi_step(signed, torch.zeros(3, 2), (torch.zeros(2),))
    from snn_encodings.adapters.spikingjelly import ICRateNode

    with kernels.use_launcher(kernels.EMULATED):
        node = ICRateNode(signed, step_mode="m", backend="cupy")
    assert node.backend == "cupy"


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("icrate.cu", ("forward", "backward", "signed_forward", "signed_backward")),
        ("radix.cu", ("forward", "backward")),
        ("quartz.cu", ("forward",)),
    ],
)
def test_kernel_sources_compile_with_nvrtc(name, kinds) -> None:
    kernels = _kernels()
    require("cupy_backends.cuda.libs.nvrtc")
    try:
        ptx = kernels.compile_ptx(name)
    except RuntimeError as error:
        if "libnvrtc" in str(error) or "NVRTC library" in str(error):
            pytest.skip(f"the NVRTC library is not installed: {error}")
        raise
    prefix = name.removesuffix(".cu")
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert entries == {
        f"{prefix}_{kind}_{dtype}" for kind in kinds for dtype in ("f16", "f32", "f64")
    }
    forwards = tuple(f"{prefix}_{kind}_" for kind in kinds if kind.endswith("forward"))
    forward_bodies = [
        body for body in ptx.split(".entry")[1:] if body.lstrip().startswith(forwards)
    ]
    assert len(forward_bodies) == 3 * len(forwards)
    assert not any("fma" in body for body in forward_bodies), "forward kernels must not use FMA"


def test_surrogate_kind_maps_spikingjelly_surrogates() -> None:
    kernels = _kernels()
    from spikingjelly.activation_based import surrogate

    assert kernels.surrogate_kind(surrogate.Sigmoid(alpha=3.0)) == (0, 3.0)
    assert kernels.surrogate_kind(surrogate.ATan()) == (1, 2.0)
    assert kernels.surrogate_kind(None) == (2, 0.0)
    with pytest.raises(SpecError, match="surrogate.Sigmoid, surrogate.ATan"):
        kernels.surrogate_kind(surrogate.PiecewiseQuadratic())


def test_icrate_kernel_rejects_cpu_tensors() -> None:
    kernels = _kernels()
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.icrate_multi_step(torch.zeros(3, 2), torch.zeros(2), 1.0)
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.signed_icrate_multi_step(torch.zeros(3, 2), torch.zeros(2), torch.zeros(2), 1.0)


def test_quartz_kernel_rejects_cpu_tensors() -> None:
    kernels = _kernels()
    from snn_encodings.functional import quartz_initial_state

    spec = Quartz(t_max=2)
    state = tuple(quartz_initial_state(spec, torch.zeros(2)))
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.quartz_multi_step(torch.zeros(8, 2), state, spec)


def test_radix_kernel_rejects_cpu_tensors() -> None:
    kernels = _kernels()
    from snn_encodings.functional import radix_initial_state

    spec = Radix(steps=3)
    state = tuple(radix_initial_state(spec, torch.zeros(2)))
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.radix_multi_step(torch.zeros(6, 2), state, spec)
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.multi_step(spec, torch.zeros(6, 2), state)


@pytest.mark.parametrize(
    ("currents", "fragment"),
    [
        (torch.zeros(6, 2, dtype=torch.int32), "supports float16, float32 and float64"),
        (torch.zeros(6, 2, dtype=torch.bfloat16), "supports float16, float32 and float64"),
        (torch.zeros(6, 3), r"must be \(T, \*state shape\)"),
        (torch.zeros(2), r"must be \(T, \*state shape\)"),
    ],
    ids=["int32", "bfloat16", "shape", "no time axis"],
)
def test_kernels_reject_bad_currents(currents, fragment) -> None:
    kernels = _kernels()
    from snn_encodings.functional import quartz_initial_state, radix_initial_state

    radix, quartz = Radix(steps=3), Quartz(t_max=2)
    like = torch.zeros(2)
    with pytest.raises(SpecError, match=fragment):
        kernels.radix_multi_step(currents, tuple(radix_initial_state(radix, like)), radix)
    with pytest.raises(SpecError, match=fragment):
        kernels.quartz_multi_step(currents, tuple(quartz_initial_state(quartz, like)), quartz)
    with pytest.raises(SpecError, match=fragment):
        kernels.icrate_multi_step(currents, like, 1.0)
    with pytest.raises(SpecError, match=fragment):
        kernels.signed_icrate_multi_step(currents, like, like, 1.0)


def test_radix_kernel_rejects_state_fields_of_another_shape() -> None:
    kernels = _kernels()
    state = (torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(SpecError, match="every state field of that shape"):
        kernels.radix_multi_step(torch.zeros(6, 2), state, Radix(steps=3))


def test_radix_kernel_rejects_non_radix_setting_and_unknown_surrogate() -> None:
    kernels = _kernels()
    from spikingjelly.activation_based import surrogate

    from snn_encodings.functional import radix_initial_state

    state = tuple(radix_initial_state(Radix(steps=3), torch.zeros(2)))
    with pytest.raises(SpecError, match="leak = threshold = 1/base, got leak=0.7"):
        kernels.radix_multi_step(torch.zeros(6, 2), state, Radix(steps=3, leak=0.7))
    with pytest.raises(SpecError, match="implements the surrogates"):
        kernels.radix_multi_step(
            torch.zeros(6, 2), state, Radix(steps=3), surrogate.PiecewiseQuadratic()
        )


def test_every_node_has_a_kernel_and_cupy_without_gpu_names_the_fix() -> None:
    kernels = _kernels()
    from snn_encodings.adapters.spikingjelly import NEURONS

    assert set(kernels.KERNEL_SOURCES) == set(ALL_SPECS)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    specs = (
        ICRate(steps=8, signed=True),
        Radix(steps=4),
        Radix(steps=3, base=3, mode="paper"),
        Quartz(mode="paper"),
    )
    for spec in specs:
        assert kernels.has_kernel(spec)
        with pytest.raises(RuntimeError, match="backend='torch'"):
            NEURONS[type(spec)](spec, step_mode="m", backend="cupy")


def test_multi_step_rejects_specs_without_kernel() -> None:
    kernels = _kernels()
    with pytest.raises(SpecError, match="has no kernel"):
        kernels.multi_step(object(), torch.zeros(3, 2), (torch.zeros(2),))  # type: ignore[arg-type]


def test_require_cupy_without_gpu_names_the_fix() -> None:
    kernels = _kernels()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="backend='torch'"):
        kernels.require_cupy()


# --- The two targets of the equality tests --------------------------------------------------
class Target(NamedTuple):
    kernels: object
    launcher: object
    device: str


@pytest.fixture(scope="session")
def host_kernels():
    """The kernels module with every source compiled for the CPU once per session (g++)."""
    kernels = _kernels()
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        if os.environ.get("SNN_ENCODINGS_REQUIRE_EXTRAS") == "1":
            pytest.fail(f"the emulated kernel launch needs {compiler}, which is not installed")
        pytest.skip(f"the emulated kernel launch needs {compiler}")
    for name in kernels.KERNEL_FUNCTIONS:
        kernels.EMULATED.library(name)
    return kernels


@pytest.fixture(
    params=[
        pytest.param("emulated", id="emulated"),
        pytest.param("cupy", id="cupy", marks=[pytest.mark.cuda, GPU]),
    ]
)
def target(request: pytest.FixtureRequest) -> Target:
    """Where the kernels run: ``emulated`` (CPU build, CPU tensors) or ``cupy`` (CUDA)."""
    if request.param == "emulated":
        kernels = request.getfixturevalue("host_kernels")
        return Target(kernels, kernels.EMULATED, "cpu")
    kernels = _kernels()
    require("cupy")
    return Target(kernels, kernels.CUPY, "cuda")


def test_host_build_is_the_gpu_source_plus_launch_entries(host_kernels) -> None:
    for name, functions in host_kernels.KERNEL_FUNCTIONS.items():
        text = host_kernels.host_source(name)
        assert text.startswith(host_kernels.source(name))
        assert re.findall(r"^EMULATED_ENTRY\((\w+)\)$", text, re.MULTILINE) == list(functions)


def _half_conversion_inputs() -> torch.Tensor:
    """float32 values around every float16: each finite float16, the midpoints between
    neighbours (ties go to the even one), one float32 step either side of each midpoint,
    values past the largest float16 (65520 is where inf starts), and random float32 bits."""
    bits = torch.arange(0, 0x7C00, dtype=torch.int32).to(torch.int16)
    positive = bits.view(torch.float16).float()
    upper = torch.cat([positive[1:], torch.tensor([65520.0])])
    middle = (positive.double() + upper.double()).div(2).float()
    around = torch.cat(
        [
            middle,
            torch.nextafter(middle, torch.tensor(0.0)),
            torch.nextafter(middle, torch.tensor(float("inf"))),
        ]
    )
    extremes = torch.tensor([65504.0, 65519.99, 65520.0, 1e6, float("inf"), 2.0**-25, 2.0**-26])
    generator = torch.Generator().manual_seed(0)
    random = torch.randint(
        -(2**31), 2**31 - 1, (200_000,), generator=generator, dtype=torch.int64
    ).to(torch.int32)
    finite = random.view(torch.float32)
    values = torch.cat([positive, around, extremes, finite[torch.isfinite(finite)]])
    return torch.cat([values, -values])


def test_host_float16_conversions_match_torch_on_every_float16(host_kernels) -> None:
    import ctypes

    library = host_kernels.EMULATED.library("icrate.cu")
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    every = every[~torch.isnan(every.view(torch.float16))]
    widened = torch.empty(every.shape, dtype=torch.float32)
    library.emulated_half_to_float(
        ctypes.c_void_p(every.data_ptr()),
        ctypes.c_void_p(widened.data_ptr()),
        ctypes.c_longlong(every.numel()),
    )
    want = every.view(torch.float16).float()
    assert torch.equal(widened.view(torch.int32), want.view(torch.int32))

    values = _half_conversion_inputs()
    narrowed = torch.empty(values.shape, dtype=torch.int16)
    library.emulated_float_to_half(
        ctypes.c_void_p(values.data_ptr()),
        ctypes.c_void_p(narrowed.data_ptr()),
        ctypes.c_longlong(values.numel()),
    )
    want_bits = values.half().view(torch.int16)
    assert torch.equal(narrowed, want_bits), values[narrowed != want_bits][:5].tolist()


_CONVERT = r"""
extern "C" __global__ void widen(const half_bits* in, float* out, const long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = load(in[i]);
}
extern "C" __global__ void narrow(const float* in, half_bits* out, const long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = Storage<half_bits>::store(in[i]);
}
"""


@pytest.mark.cuda
@GPU
def test_ptx_float16_conversions_match_torch_on_every_float16_on_gpu() -> None:
    kernels = _kernels()
    require("cupy")
    import cupy

    module = cupy.RawModule(code=kernels.source("common.cuh") + _CONVERT)
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    every = every[~torch.isnan(every.view(torch.float16))].cuda()
    values = _half_conversion_inputs().cuda()
    for name, data, out, want in (
        ("widen", every, torch.empty(every.shape, device="cuda"), every.view(torch.float16)),
        ("narrow", values, torch.empty(values.shape, dtype=torch.int16, device="cuda"), values),
    ):
        n = data.numel()
        module.get_function(name)(
            ((n + 255) // 256,), (256,), (cupy.from_dlpack(data), cupy.from_dlpack(out), n)
        )
        if name == "widen":
            assert torch.equal(out.view(torch.int32), want.float().view(torch.int32))
        else:
            assert torch.equal(out, want.half().view(torch.int16))


def test_emulated_launch_checks_argument_types(host_kernels) -> None:
    kernels = host_kernels
    x = torch.zeros(2, 3)
    args = (x, x[0], x, x, x, numpy.int32(0), numpy.float64(1.0), numpy.int32(2), numpy.int64(3))
    with pytest.raises(RuntimeError, match=r"takes \(p4 p4 p4 p4 p4 i4 f4 i4 i8\)"):
        kernels.EMULATED.launch("icrate.cu", "icrate_forward_f32", 1, 256, args)
    with pytest.raises(RuntimeError, match="must be a contiguous cpu tensor"):
        kernels._launch(kernels.EMULATED, "icrate.cu", "icrate_forward_f32", 3, (x.t(),))


def test_use_launcher_selects_the_emulated_launch(host_kernels) -> None:
    kernels = host_kernels
    currents = torch.full((4, 2), 0.6)
    with kernels.use_launcher(kernels.EMULATED):
        spikes, _ = kernels.icrate_multi_step(currents, torch.zeros(2), 1.0)
    assert kernels.current_launcher() is kernels.CUPY
    assert spikes[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(SpecError, match="needs CUDA tensors"):
        kernels.icrate_multi_step(currents, torch.zeros(2), 1.0)


# --- Forward: spikes, membranes and every state field equal the torch step ---------------------
def _assert_same_state(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> None:
    for field, expected in zip(got, want, strict=True):
        assert field.dtype == expected.dtype and torch.equal(field, expected)


def _bursts(currents: torch.Tensor) -> torch.Tensor:
    """Currents for signed IC-rate neurons: the samples times 3 at even steps and times -2 at
    odd ones, bursts of several thresholds of either sign with a positive net drive, so that
    neurons fire and then take spikes back."""
    step = torch.arange(currents.shape[0], device=currents.device)
    gain = torch.where(step % 2 == 0, 3.0, -2.0).double().view(-1, *[1] * (currents.dim() - 1))
    return (currents.double() * gain).to(currents.dtype)


def _with_ties(currents: torch.Tensor, unit: float) -> torch.Tensor:
    """The currents of every other neuron rounded to multiples of ``unit`` at every step, so
    that their membranes land exactly on thresholds (the spike condition's ``>=`` is then
    tested, not just ``>``); the other neurons keep arbitrary float currents."""
    flat = currents.reshape(currents.shape[0], -1).clone()
    flat[:, ::2] = (flat[:, ::2].double() / unit).round().mul(unit).to(currents.dtype)
    return flat.reshape(currents.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spec", ICRATE_EXAMPLES, ids=repr)
@pytest.mark.parametrize("one_step", [False, True], ids=["T>1", "T=1"])
def test_icrate_kernel_matches_torch_step(target, spec, one_step, shape, dtype, make_currents):
    from snn_encodings.functional import simulate

    steps = 1 if one_step else spec.steps + 5
    currents = make_currents(shape, steps=steps, dtype=dtype)
    if spec.signed:
        currents = _bursts(currents)
    currents = _with_ties(currents, 0.25).to(target.device)
    want = simulate(spec, currents, record=True)
    v = torch.full(shape, spec.default_v0, dtype=dtype, device=target.device)
    state = (v, torch.zeros_like(v)) if spec.signed else (v,)
    spikes, final, membranes = target.kernels.multi_step(
        spec, currents, state, launcher=target.launcher
    )
    assert_same_trace((spikes, membranes), (want.spikes, want.states.v))
    _assert_same_state(final, tuple(want.state))
    if spec.signed and not one_step:
        assert (spikes == -1).any(), "the currents must make some neurons take a spike back"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("rectify", [True, False], ids=["rectify", "no-rectify"])
@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("spec", QUARTZ_EXAMPLES, ids=repr)
def test_quartz_kernel_matches_torch_step(target, spec, mode, rectify, shape, dtype, make_currents):
    from snn_encodings.functional import quartz_initial_state, simulate

    spec = dataclasses.replace(spec, mode=mode)
    currents = make_currents(shape, steps=spec.steps_per_layer + 3, dtype=dtype)
    currents = _with_ties(currents, 0.25).to(target.device)
    want = simulate(spec, currents, record=True, rectify=rectify)
    early = want.spikes[: spec.read_step].any()
    assert bool(early) == (mode == "paper"), "the currents must cross the threshold early"
    state = tuple(quartz_initial_state(spec, currents[0]))
    spikes, final, membranes = target.kernels.quartz_multi_step(
        currents, state, spec, rectify=rectify, launcher=target.launcher
    )
    assert_same_trace((spikes, membranes), (want.spikes, want.states.v))
    _assert_same_state(final, tuple(want.state))


def _radix_currents(spec: Radix, make_currents, shape, steps, dtype, seed=0) -> torch.Tensor:
    """Currents in the units of ``RadixState.v``: up to the window's range in exact mode
    (:math:`r^{-T}` units, so every digit is exercised), a few digits' worth in paper mode."""
    scale = spec.levels / spec.steps_per_layer if spec.mode == "exact" else float(spec.base)
    return make_currents(shape, steps=steps, dtype=torch.float64, seed=seed).mul(scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("spec", RADIX_EXAMPLES, ids=repr)
def test_radix_kernel_matches_torch_step(target, spec, mode, shape, dtype, make_currents) -> None:
    from snn_encodings.functional import radix_initial_state, simulate

    spec = dataclasses.replace(spec, mode=mode)
    steps = 2 * spec.steps_per_layer + 3
    currents = _radix_currents(spec, make_currents, shape, steps, dtype)
    currents = _with_ties(currents, 1.0).to(target.device)
    start = radix_initial_state(spec, currents[0], v0=0.5)
    k = torch.arange(start.k.numel(), device=target.device).view(shape) % 5
    start = start._replace(k=k)
    want = simulate(spec, currents, start, record=True)
    spikes, final, membranes = target.kernels.radix_multi_step(
        currents, tuple(start), spec, launcher=target.launcher
    )
    assert_same_trace((spikes, membranes), (want.spikes, want.states.v))
    _assert_same_state(final, tuple(want.state))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPEC_EXAMPLES, ids=repr)
def test_every_kernel_matches_torch_step_over_one_step(target, spec, dtype, make_currents):
    """T = 1 from a mid-run state (the counters past the window's start, signed neurons'
    counts) through multi_step."""
    from snn_encodings.functional import simulate

    currents = make_currents((3, 5), steps=spec.steps_per_layer + 2, dtype=dtype)
    if getattr(spec, "signed", False):
        currents = _bursts(currents)
    currents = currents.to(target.device)
    middle = simulate(spec, currents[:-1]).state
    want = simulate(spec, currents[-1:], middle, record=True)
    spikes, final, membranes = target.kernels.multi_step(
        spec, currents[-1:], tuple(middle), launcher=target.launcher
    )
    assert_same_trace((spikes, membranes), (want.spikes, want.states[0]))
    _assert_same_state(final, tuple(want.state))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_signed_icrate_kernel_follows_a_hand_worked_trace(target, dtype) -> None:
    """Two signed neurons, threshold 1, values exact in every dtype, worked out by hand:

    neuron 0 from v = 0, n = 0:  h = 2.5 fires (v 1.5, n 1); h = -0.25 takes it back (v 0.75,
    n 0); h = -0.5 cannot (n = 0); h = 1.5 fires; h = -0.25 takes back; h = 1.25 fires.
    neuron 1 from v = 0.5, n = 2:  h = 0 is not below zero (no take-back); h = -1 takes one
    back (v 0, n 1); h = -3 takes only one more back (v -2, n 0); h = -1.5 none left; h = 1
    fires on the threshold (v 0, n 1); h = 0 nothing."""
    currents = torch.tensor(
        [[2.5, -0.5], [-1.75, -1.0], [-1.25, -3.0], [2.0, 0.5], [-0.75, 2.5], [0.5, 0.0]],
        dtype=dtype,
        device=target.device,
    )
    v = torch.tensor([0.0, 0.5], dtype=dtype, device=target.device)
    count = torch.tensor([0.0, 2.0], dtype=dtype, device=target.device)
    spikes, membranes, count_last = target.kernels.signed_icrate_multi_step(
        currents, v, count, 1.0, launcher=target.launcher
    )
    assert spikes.t().tolist() == [[1, -1, 0, 1, -1, 1], [0, -1, -1, 0, 1, 0]]
    assert membranes.t().tolist() == [
        [1.5, 0.75, -0.5, 0.5, 0.75, 0.25],
        [0.0, 0.0, -2.0, -1.5, 0.0, 0.0],
    ]
    assert count_last.tolist() == [1.0, 1.0]
    assert spikes.dtype == membranes.dtype == count_last.dtype == dtype


# --- Backward: gradients equal autograd through the torch step --------------------------------
SURROGATES = ["Sigmoid", "ATan", None]

SIGMOID_TOLERANCE = {torch.float16: 4e-3, torch.float32: 4e-6, torch.float64: 1e-14}
"""Relative to the largest gradient: torch's sigmoid uses its own vectorised exp on the CPU
(up to 4 float32 ulps from the C library's, which the emulated kernel calls), so only the
Sigmoid surrogate's gradients may differ in the last bits; every other case is bit for bit."""


def _surrogate(name):
    from spikingjelly.activation_based import surrogate

    return None if name is None else getattr(surrogate, name)()


def _assert_same_gradient(got, want, surrogate_name, dtype) -> None:
    want = [torch.zeros_like(g) if w is None else w for g, w in zip(got, want, strict=True)]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if surrogate_name == "Sigmoid":
            scale = w.abs().max().double().clamp(min=1.0)
            tolerance = SIGMOID_TOLERANCE[dtype]
            assert torch.allclose(g.double() / scale, w.double() / scale, atol=tolerance, rtol=0)
        else:
            assert torch.equal(g, w), f"{(g != w).sum().item()} of {g.numel()} entries differ"


@pytest.mark.parametrize("surrogate_name", SURROGATES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (2, 3, 43)], ids=str)
@pytest.mark.parametrize("spec", ICRATE_EXAMPLES, ids=repr)
def test_icrate_kernel_gradient_matches_torch(
    target, spec, shape, dtype, surrogate_name, make_currents
) -> None:
    """Signed neurons start from counts of 1 to 3 and get bursts of both signs, so that spikes
    are taken back (the take-back's surrogate term and its count mask are exercised)."""
    from snn_encodings.functional import ICRateState, SignedICRateState, simulate

    sg = _surrogate(surrogate_name)
    steps = spec.steps + 3
    currents = make_currents(shape, steps=steps, dtype=dtype)
    if spec.signed:
        currents = _bursts(currents)
    currents = currents.to(target.device)
    weights = make_currents(shape, steps=steps, dtype=dtype, seed=1).to(target.device)
    v0 = make_currents(shape, steps=1, dtype=dtype, seed=2)[0].to(target.device)
    count0 = (torch.arange(v0.numel(), device=target.device).view(shape) % 3 + 1).to(dtype)

    def loss(spikes: torch.Tensor, membranes: torch.Tensor) -> torch.Tensor:
        return (spikes * weights).sum() + (membranes * weights.flip(0)).sum()

    def start(v: torch.Tensor) -> ICRateState | SignedICRateState:
        return SignedICRateState(v, count0) if spec.signed else ICRateState(v)

    got_leaves = [t.clone().requires_grad_(True) for t in (currents, v0)]
    spikes, _, membranes = target.kernels.multi_step(
        spec, got_leaves[0], tuple(start(got_leaves[1])), sg, launcher=target.launcher
    )
    got = torch.autograd.grad(loss(spikes, membranes), got_leaves)
    want_leaves = [t.clone().requires_grad_(True) for t in (currents, v0)]
    out = simulate(spec, want_leaves[0], start(want_leaves[1]), record=True, surrogate=sg)
    want = torch.autograd.grad(loss(out.spikes, out.states.v), want_leaves, allow_unused=True)
    _assert_same_gradient(got, want, surrogate_name, dtype)
    if spec.signed:
        assert (spikes == -1).any(), "the currents must make some neurons take a spike back"


@pytest.mark.parametrize("surrogate_name", SURROGATES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("spec", RADIX_EXAMPLES, ids=repr)
def test_radix_kernel_gradient_matches_torch(
    target, spec, mode, dtype, surrogate_name, make_currents
) -> None:
    from snn_encodings.functional import RadixState, simulate

    sg = _surrogate(surrogate_name)
    spec = dataclasses.replace(spec, mode=mode)
    shape, steps = (2, 3, 43), 2 * spec.steps_per_layer + 1
    currents = _radix_currents(spec, make_currents, shape, steps, dtype)
    if mode == "paper":  # integer currents also reach the tie v - 1 == digit - 1 of the minimum
        currents[::2] = currents[::2].round()
    currents = currents.to(target.device)
    weights = make_currents(shape, steps=steps, dtype=dtype, seed=1).to(target.device)
    v0 = _radix_currents(spec, make_currents, shape, 1, dtype, seed=2)[0].to(target.device)
    acc0 = make_currents(shape, steps=1, dtype=dtype, seed=3)[0].to(target.device)
    k0 = torch.arange(v0.numel(), device=target.device).view(shape) % 4

    def loss(spikes: torch.Tensor, membranes: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        return (spikes * weights).sum() + (membranes * weights.flip(0)).sum() + acc.sum()

    got_leaves = [t.clone().requires_grad_(True) for t in (currents, v0, acc0)]
    spikes, final, membranes = target.kernels.radix_multi_step(
        got_leaves[0], (got_leaves[1], got_leaves[2], k0), spec, sg, launcher=target.launcher
    )
    got = torch.autograd.grad(loss(spikes, membranes, final[1]), got_leaves)
    want_leaves = [t.clone().requires_grad_(True) for t in (currents, v0, acc0)]
    out = simulate(
        spec, want_leaves[0], RadixState(*want_leaves[1:], k0), record=True, surrogate=sg
    )
    want = torch.autograd.grad(
        loss(out.spikes, out.states.v, out.state.acc), want_leaves, allow_unused=True
    )
    _assert_same_gradient(got, want, surrogate_name, dtype)


# --- The nodes with backend="cupy", on both targets (the launcher chosen when they run) ---------
def test_icrate_node_cupy_backend_matches_single_steps(target, make_currents) -> None:
    from snn_encodings.adapters.spikingjelly import ICRateNode
    from spikingjelly.activation_based import functional

    spec = ICRate(steps=12)
    currents = make_currents((16, 3, 4), steps=12).to(target.device)
    with target.kernels.use_launcher(target.launcher):
        node = ICRateNode(spec, step_mode="m", backend="cupy", store_v_seq=True)
        spikes = node(currents)
        assert_same_trace((spikes, node.v_seq), run_core(spec, currents))
        functional.reset_net(node)
        spikes = node(currents[:, :5])
    assert torch.equal(spikes, run_core(spec, currents[:, :5]).spikes)


def test_signed_icrate_node_cupy_backend_matches_torch_backend(target, make_currents) -> None:
    """A split sequence (the count carried from one call to the next), spikes of -1, and
    gradients through the surrogate gain."""
    from snn_encodings.adapters.spikingjelly import ICRateNode
    from spikingjelly.activation_based import functional

    from snn_encodings.functional import simulate

    spec = ICRate(steps=12, signed=True)
    currents = _bursts(make_currents((3, 4), steps=12)).to(target.device)
    want = simulate(spec, currents, record=True)
    assert (want.spikes == -1).any()
    grads = {}
    with target.kernels.use_launcher(target.launcher):
        for backend in ("cupy", "torch"):
            node = ICRateNode(spec, step_mode="m", backend=backend, store_v_seq=True)
            leaf = currents.clone().requires_grad_(True)
            spikes = torch.cat([node(leaf[:5]), node(leaf[5:])])
            assert_same_trace((spikes[5:], node.v_seq), (want.spikes[5:], want.states.v[5:]))
            assert torch.equal(spikes, want.spikes)
            _assert_same_state((node.v, node.count), tuple(want.state))
            (grads[backend],) = torch.autograd.grad(spikes.sum() + node.v.sum(), leaf)
            functional.reset_net(node)
            assert torch.equal(node(currents[:, :2]), want.spikes[:, :2])
    _assert_same_gradient([grads["cupy"]], [grads["torch"]], "Sigmoid", torch.float32)


def test_quartz_node_cupy_backend_matches_torch_backend(target, make_currents) -> None:
    from snn_encodings.adapters.spikingjelly import QuartzNode
    from spikingjelly.activation_based import functional

    spec = Quartz(t_max=4)
    currents = make_currents((16, 3, 4), steps=spec.steps_per_layer).to(target.device)
    with target.kernels.use_launcher(target.launcher):
        node = QuartzNode(spec, step_mode="m", backend="cupy", store_v_seq=True)
        with torch.no_grad():
            spikes = node(currents[:10])
            spikes = torch.cat([spikes, node(currents[10:])])
        want = run_core(spec, currents)
        assert_same_trace((spikes[10:], node.v_seq), (want.spikes[10:], want.membranes[10:]))
        assert torch.equal(spikes, want.spikes)
        functional.reset_net(node)
        with pytest.raises(SpecError, match="forward only"):
            node(currents.clone().requires_grad_(True))


@pytest.mark.parametrize("spec", [Radix(steps=4), Radix(steps=3, base=3, mode="paper")], ids=repr)
def test_radix_node_cupy_backend_matches_torch_backend(target, spec, make_currents) -> None:
    from snn_encodings.adapters.spikingjelly import RadixNode

    steps, split = 2 * spec.steps_per_layer + 1, spec.steps_per_layer - 1
    currents = _radix_currents(spec, make_currents, (3, 4), steps, torch.float32)
    currents = currents.to(target.device)
    want = run_core(spec, currents)
    grads = {}
    with target.kernels.use_launcher(target.launcher):
        for backend in ("cupy", "torch"):
            node = RadixNode(spec, step_mode="m", backend=backend, store_v_seq=True)
            leaf = currents.clone().requires_grad_(True)
            spikes = torch.cat([node(leaf[:split]), node(leaf[split:])])
            assert_same_trace(
                (spikes[split:], node.v_seq), (want.spikes[split:], want.membranes[split:])
            )
            assert torch.equal(spikes, want.spikes)
            (grads[backend],) = torch.autograd.grad(spikes.sum() + node.v.sum(), leaf)
    _assert_same_gradient([grads["cupy"]], [grads["torch"]], "Sigmoid", torch.float32)
