"""Our CuPy kernels: the sources compile with NVRTC and the glue checks its arguments (no GPU
needed); on a GPU they equal the core torch step spike for spike and membrane for membrane, and
their backward equals autograd through the torch step (tests marked ``cuda``, skipped without
one)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from conftest import require

from snn_encodings.errors import SpecError
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz, Radix
from snn_encodings.testing import assert_same_trace, run_core

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
        assert not any(line.lstrip().startswith("#include") for line in text.splitlines())
        assert "struct Storage<half_bits>" in text


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("icrate.cu", ("forward", "backward")),
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
    forward_bodies = [
        body for body in ptx.split(".entry")[1:] if body.lstrip().startswith(f"{prefix}_forward")
    ]
    assert len(forward_bodies) == 3
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
    for spec in (Radix(steps=4), Radix(steps=3, base=3, mode="paper"), Quartz(mode="paper")):
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


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1,), (3, 5), (4, 3, 8, 8), (257, 129)], ids=str)
def test_icrate_kernel_matches_torch_step_on_gpu(spec, shape, dtype, make_currents) -> None:
    kernels = _kernels()
    require("cupy")
    if not isinstance(spec, ICRate):
        pytest.skip("no kernel for this spec")
    currents = make_currents(shape, steps=spec.steps + 5, dtype=dtype).cuda()
    want = run_core(spec, currents)
    v = torch.full(shape, spec.default_v0, dtype=dtype, device="cuda")
    got = kernels.icrate_multi_step(currents, v, spec.threshold)
    assert_same_trace(got, want)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_icrate_kernel_gradient_matches_torch_on_gpu(dtype, make_currents) -> None:
    kernels = _kernels()
    require("cupy")
    from spikingjelly.activation_based import surrogate

    from snn_encodings.functional import simulate

    spec = ICRate(steps=16)
    for sg in (surrogate.Sigmoid(), surrogate.ATan(), None):
        currents = make_currents((8, 33), steps=16, dtype=dtype).cuda().requires_grad_(True)
        weights = torch.rand_like(currents)
        v = torch.full((8, 33), 0.5, dtype=dtype, device="cuda")
        spikes, membranes = kernels.icrate_multi_step(currents, v, 1.0, sg)
        (grad,) = torch.autograd.grad((spikes * weights).sum() + membranes[-1].sum(), currents)
        out = simulate(spec, currents, record=True, surrogate=sg)
        loss = (out.spikes * weights).sum() + out.state.v.sum()
        (want,) = torch.autograd.grad(loss, currents)
        tolerance = 1e-2 if dtype == torch.float16 else 1e-5
        assert torch.allclose(grad.float(), want.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.cuda
@GPU
def test_icrate_node_cupy_backend_matches_single_steps_on_gpu(make_currents) -> None:
    require("cupy")
    from snn_encodings.adapters.spikingjelly import ICRateNode
    from spikingjelly.activation_based import functional

    spec = ICRate(steps=12)
    currents = make_currents((16, 3, 4), steps=12).cuda()
    node = ICRateNode(spec, step_mode="m", backend="cupy", store_v_seq=True)
    spikes = node(currents)
    assert_same_trace((spikes, node.v_seq), run_core(spec, currents))
    functional.reset_net(node)
    spikes = node(currents[:, :5])
    assert torch.equal(spikes, run_core(spec, currents[:, :5]).spikes)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1,), (3, 5), (4, 3, 8, 8), (257, 129)], ids=str)
@pytest.mark.parametrize("rectify", [True, False])
@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_quartz_kernel_matches_torch_step_on_gpu(spec, shape, dtype, rectify, mode, make_currents):
    kernels = _kernels()
    require("cupy")
    from snn_encodings.functional import quartz_initial_state, simulate

    if not isinstance(spec, Quartz):
        pytest.skip("Quartz kernel")
    spec = dataclasses.replace(spec, mode=mode)
    currents = make_currents(shape, steps=spec.steps_per_layer + 3, dtype=dtype).cuda()
    want = simulate(spec, currents, record=True, rectify=rectify)
    early = want.spikes[: spec.read_step].any()
    assert bool(early) == (mode == "paper"), "the currents must cross the threshold early"
    state = tuple(quartz_initial_state(spec, currents[0]))
    spikes, final, membranes = kernels.quartz_multi_step(currents, state, spec, rectify=rectify)
    assert_same_trace((spikes, membranes), (want.spikes, want.states.v))
    for got, expected in zip(final, want.state, strict=True):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.cuda
@GPU
def test_quartz_node_cupy_backend_matches_torch_backend_on_gpu(make_currents) -> None:
    require("cupy")
    from snn_encodings.adapters.spikingjelly import QuartzNode
    from spikingjelly.activation_based import functional

    spec = Quartz(t_max=4)
    currents = make_currents((16, 3, 4), steps=spec.steps_per_layer).cuda()
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


def _radix_currents(spec: Radix, make_currents, shape, steps, dtype, seed=0) -> torch.Tensor:
    """Currents in the units of ``RadixState.v``: up to the window's range in exact mode
    (:math:`r^{-T}` units, so every digit is exercised), a few digits' worth in paper mode."""
    scale = spec.levels / spec.steps_per_layer if spec.mode == "exact" else float(spec.base)
    return make_currents(shape, steps=steps, dtype=torch.float64, seed=seed).mul(scale).to(dtype)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1,), (3, 5), (4, 3, 8, 8), (257, 129)], ids=str)
@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("base", [2, 3])
def test_radix_kernel_matches_torch_step_on_gpu(base, mode, shape, dtype, make_currents) -> None:
    kernels = _kernels()
    require("cupy")
    from snn_encodings.functional import radix_initial_state, simulate

    spec = Radix(steps=4 if base == 2 else 3, base=base, mode=mode)
    steps = 2 * spec.steps_per_layer + 3
    currents = _radix_currents(spec, make_currents, shape, steps, dtype).cuda()
    start = radix_initial_state(spec, currents[0], v0=0.5)
    start = start._replace(k=torch.arange(start.k.numel(), device="cuda").view(shape) % 5)
    want = simulate(spec, currents, start, record=True)
    spikes, final, membranes = kernels.radix_multi_step(currents, tuple(start), spec)
    assert_same_trace((spikes, membranes), (want.spikes, want.states.v))
    for got, expected in zip(final, want.state, strict=True):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("base", [2, 3])
def test_radix_kernel_gradient_matches_torch_on_gpu(base, mode, dtype, make_currents) -> None:
    kernels = _kernels()
    require("cupy")
    from spikingjelly.activation_based import surrogate

    from snn_encodings.functional import RadixState, simulate

    spec = Radix(steps=3, base=base, mode=mode)
    shape, steps = (8, 33), 2 * spec.steps_per_layer + 1
    currents = _radix_currents(spec, make_currents, shape, steps, dtype).cuda()
    if mode == "paper":  # integer currents also reach the tie v - 1 == digit - 1 of the minimum
        currents[::2] = currents[::2].round()
    weights = make_currents(shape, steps=steps, dtype=dtype, seed=1).cuda()
    v0 = _radix_currents(spec, make_currents, shape, 1, dtype, seed=2)[0].cuda()
    acc0 = make_currents(shape, steps=1, dtype=dtype, seed=3)[0].cuda()
    k0 = torch.zeros(shape, dtype=torch.int64, device="cuda")

    def loss(spikes: torch.Tensor, membranes: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        return (spikes * weights).sum() + (membranes * weights.flip(0)).sum() + acc.sum()

    for sg in (surrogate.Sigmoid(), surrogate.ATan(), None):
        got_leaves = [t.clone().requires_grad_(True) for t in (currents, v0, acc0)]
        spikes, final, membranes = kernels.radix_multi_step(
            got_leaves[0], (got_leaves[1], got_leaves[2], k0), spec, sg
        )
        got = torch.autograd.grad(loss(spikes, membranes, final[1]), got_leaves)
        want_leaves = [t.clone().requires_grad_(True) for t in (currents, v0, acc0)]
        out = simulate(
            spec, want_leaves[0], RadixState(*want_leaves[1:], k0), record=True, surrogate=sg
        )
        want = torch.autograd.grad(
            loss(out.spikes, out.states.v, out.state.acc), want_leaves, allow_unused=True
        )
        tolerance = 1e-2 if dtype == torch.float16 else 1e-5
        for g, w, leaf in zip(got, want, want_leaves, strict=True):
            _assert_close_gradient(g, torch.zeros_like(leaf) if w is None else w, tolerance)


@pytest.mark.cuda
@GPU
@pytest.mark.parametrize("spec", [Radix(steps=4), Radix(steps=3, base=3, mode="paper")], ids=repr)
def test_radix_node_cupy_backend_matches_torch_backend_on_gpu(spec, make_currents) -> None:
    require("cupy")
    from snn_encodings.adapters.spikingjelly import RadixNode

    steps, split = 2 * spec.steps_per_layer + 1, spec.steps_per_layer - 1
    currents = _radix_currents(spec, make_currents, (3, 4), steps, torch.float32).cuda()
    want = run_core(spec, currents)
    grads = {}
    for backend in ("cupy", "torch"):
        node = RadixNode(spec, step_mode="m", backend=backend, store_v_seq=True)
        leaf = currents.clone().requires_grad_(True)
        spikes = torch.cat([node(leaf[:split]), node(leaf[split:])])
        assert_same_trace(
            (spikes[split:], node.v_seq), (want.spikes[split:], want.membranes[split:])
        )
        assert torch.equal(spikes, want.spikes)
        (grads[backend],) = torch.autograd.grad(spikes.sum() + node.v.sum(), leaf)
    _assert_close_gradient(grads["cupy"], grads["torch"], 1e-5)


def _assert_close_gradient(got: torch.Tensor, want: torch.Tensor, tolerance: float) -> None:
    """Equal within ``tolerance`` relative to the largest entry (at least 1) of ``want``."""
    scale = want.abs().max().double().clamp(min=1.0)
    assert torch.allclose(got.double() / scale, want.double() / scale, atol=tolerance, rtol=0)
