"""Field-to-field students (students.fno, students.unet): shapes, the output-shape rules, the FNO's
discretisation invariance, and that each can memorise a tiny batch, as a student must."""

import math

import pytest
import torch
import torch.nn as nn

from students import STUDENTS

FIELD_STUDENTS = ["fno", "unet"]
SMALL = {"fno": dict(width=8, depth=2, modes=4), "unet": dict(width=8, depth=2)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are too small to gain from intra-op threads, and on a loaded machine threads
    waiting on each other at every small op turned a few seconds of training into half a minute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_fields(batch: int, grid, seed: int = 0) -> torch.Tensor:
    """[batch, 1, *grid]: random low-frequency periodic fields sampled at i/N on each axis."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(n) / n for n in grid], indexing="ij")
    out = torch.zeros(batch, 1, *grid)
    for k in range(1, 4):
        for axis in axes:
            a, b = torch.randn(2, batch, 1, *[1] * len(grid), generator=g) / k
            out += a * torch.sin(2 * math.pi * k * axis) + b * torch.cos(2 * math.pi * k * axis)
    return out


# (input_shape, output_shape or None, num_outputs)
CASES = [
    ((1, 64), None, 64),  # inferred: one field on the input grid
    ((2, 50), None, 150),  # inferred: three fields; 50 is not a multiple of 2**depth
    ((1, 64), [2, 16], 32),  # coarser output grid
    ((1, 32), [1, 48], 48),  # finer output grid
    ((1, 16, 16), None, 256),
    ((2, 20, 12), [3, 10, 6], 180),  # non-square, not a multiple of 2**depth, coarser
    ((1, 16, 16), [1, 24, 32], 768),  # finer, and a different aspect
]


@pytest.mark.parametrize("name", FIELD_STUDENTS)
@pytest.mark.parametrize("input_shape, output_shape, num_outputs", CASES)
def test_output_is_flat_fields(name, input_shape, output_shape, num_outputs):
    model = STUDENTS.build(name, input_shape=input_shape, num_outputs=num_outputs, output_shape=output_shape,
                           **SMALL[name])
    y = model(torch.randn(3, *input_shape))
    assert y.shape == (3, num_outputs)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", FIELD_STUDENTS)
def test_mismatched_output_shape_is_refused_naming_the_shapes(name):
    with pytest.raises(ValueError, match=r"multiple of 64.*output_shape"):
        STUDENTS.build(name, input_shape=(1, 64), num_outputs=10)  # 10 outputs are not fields on 64 points
    with pytest.raises(ValueError, match=r"\[2, 16\].*num_outputs = 30"):
        STUDENTS.build(name, input_shape=(1, 64), num_outputs=30, output_shape=[2, 16])
    with pytest.raises(ValueError, match=r"2 grid axes"):
        STUDENTS.build(name, input_shape=(1, 8, 8), num_outputs=64, output_shape=[1, 64])


@pytest.mark.parametrize("name", FIELD_STUDENTS)
@pytest.mark.parametrize("input_shape", [(1, 256), (1, 64, 64)])
def test_defaults_have_no_dropout_or_batchnorm_and_eval_equals_train(name, input_shape):
    cells = math.prod(input_shape[1:])
    model = STUDENTS.build(name, input_shape=input_shape, num_outputs=cells)
    banned = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)
    assert not [m for m in model.modules() if isinstance(m, banned)]
    x = torch.randn(2, *input_shape)
    with torch.no_grad():
        assert torch.equal(model.train()(x), model.eval()(x))


def test_fno_is_discretisation_invariant():
    """The same weights on 64 and 128 points of the same smooth input agree at the shared points:
    the spectral layers see the same Fourier coefficients, everything else is pointwise."""
    torch.manual_seed(0)
    model = STUDENTS.build("fno", input_shape=(1, 64), num_outputs=64, width=16, depth=3, modes=8).eval()
    with torch.no_grad():
        for layer in model.spectral:  # make the spectral path dominate, so the check is not vacuous
            layer.weight.normal_(0.0, 0.5)
        coarse = model(smooth_fields(4, (64,)))
        fine = model(smooth_fields(4, (128,)))
        for layer in model.spectral:
            layer.weight.zero_()
        pointwise_only = model(smooth_fields(4, (64,)))
    assert fine.shape == (4, 128)  # the output grid follows the input's resolution
    spread = coarse.std().item()
    assert (coarse - pointwise_only).abs().max() > 0.5 * spread  # the spectral layers matter
    assert (coarse - fine[:, ::2]).abs().max() < 1e-3 * spread


def test_fno_2d_is_discretisation_invariant():
    torch.manual_seed(0)
    model = STUDENTS.build("fno", input_shape=(1, 16, 16), num_outputs=256, width=8, depth=2, modes=4).eval()
    with torch.no_grad():
        for layer in model.spectral:
            layer.weight.normal_(0.0, 0.5)
        coarse = model(smooth_fields(2, (16, 16))).view(2, 16, 16)
        fine = model(smooth_fields(2, (32, 32))).view(2, 32, 32)
    assert (coarse - fine[:, ::2, ::2]).abs().max() < 1e-3 * coarse.std()


def heat_problem(n: int = 64, batch: int = 8):
    """Initial fields and the exact solution of u_t = nu u_xx on the periodic unit interval at
    nu t = 0.002: each Fourier mode k decays by exp(-(2 pi k)^2 nu t)."""
    g = torch.Generator().manual_seed(1)
    x = torch.arange(n) / n
    k = torch.arange(1, 5).view(1, 4, 1)
    a, b = torch.randn(2, batch, 4, 1, generator=g) / k
    modes = a * torch.sin(2 * math.pi * k * x) + b * torch.cos(2 * math.pi * k * x)
    u0 = modes.sum(1, keepdim=True)
    ut = (modes * torch.exp(-(2 * math.pi * k) ** 2 * 0.002)).sum(1, keepdim=True)
    return u0, ut.flatten(1)


@pytest.mark.parametrize("name, kwargs, lr", [
    ("fno", dict(width=16, depth=2, modes=8), 3e-3),
    ("unet", dict(width=8, depth=2, periodic=True), 1e-2),
])
def test_student_memorises_a_tiny_batch(name, kwargs, lr):
    torch.manual_seed(0)
    u0, target = heat_problem()
    model = STUDENTS.build(name, input_shape=(1, 64), num_outputs=64, **kwargs)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(300):  # stops as soon as the loss has fallen a hundredfold (tens of steps)
        loss = (model(u0) - target).square().mean()
        first = first if first is not None else loss.item()
        if loss.item() < first / 100:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < first / 100, f"loss fell only from {first:.3g} to {loss.item():.3g}"
