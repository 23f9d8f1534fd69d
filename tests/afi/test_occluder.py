"""Tests of AfI's global feature occluders (xailib.afi.occluder; Sec. 3.1.1, Eqs. 4-5).

Hand-computed answers come from a linear model ``Z(x) = W flatten(x)``: the gradient of ``Z(x - delta)[y]``
with respect to ``delta`` is ``-W[y]`` for every image, so Adam's steps can be written down; with a constant
gradient every Adam step is ``lr * sign(grad)`` (times ``|g| / (|g| + eps)``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tiny_models import TinyInception, TinyResNet, TinyVGG, make, same_state
from xailib.afi.occluder import (
    ADAM_EPS,
    OccluderResult,
    Transform,
    evaluate_occluders,
    finetune_occluders,
    learn_occluder_reference,
    learn_occluders,
    random_transform,
    unmatched_accuracy,
)
from xailib.batching import predict
from xailib.layers import count_hooks

STEP = 1 / (1 + ADAM_EPS)  # Adam's step on a constant gradient of magnitude 1, in units of lr


class LinearNet(nn.Module):
    """``Z(x) = W flatten(x)``, no bias."""

    def __init__(self, W: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(W.shape[1], W.shape[0], bias=False).double()
        with torch.no_grad():
            self.fc.weight.copy_(W)

    def forward(self, x):
        return self.fc(x.flatten(1))


def two_class():
    """Class 0 reads pixels 0, 1; class 1 reads pixels 2, 3 (images 1 x 2 x 2).

    Class 0's image has margin 1.0 - 0.8 = 0.2: with lr = 0.03 it flips once 2 * 0.03 * t > 0.2, after 4 steps.
    Class 1's image has margin 1.0 - 0.6 = 0.4: it flips after 7 steps.
    """
    W = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float64)
    x = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.5, 0.5]], dtype=torch.float64).view(2, 1, 2, 2)
    return LinearNet(W).eval(), x, torch.tensor([0, 1])


PLAIN = dict(transform=False, progress=False)


# --------------------------------------------------------------------------------------------------
# Hand-computed answers
# --------------------------------------------------------------------------------------------------


def test_first_adam_step_is_lr_times_sign_of_the_logit_gradient():
    W = torch.tensor([[2.0, -0.5, 0.0, 1.0], [-1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.5]], dtype=torch.float64)
    model = LinearNet(W).eval()
    x = torch.tensor([[0.9, 0.2, 0.5, 0.6], [0.8, 0.3, 0.1, 0.7]], dtype=torch.float64).view(2, 1, 2, 2)
    assert predict(model, x).tolist() == [0, 0]
    lr, lam = 0.01, 0.3
    res = learn_occluders(model, x, [0, 0], lam=lam, lr=lr, max_iter=1, **PLAIN)
    # d/d delta of (1/N) sum_i Z(x_i - delta)[0] is -W[0]; |delta| has gradient 0 at 0, so Adam's first step is
    # delta_1 = lr * g / (|g| + eps) = lr * sign(W[0]) (to 1e-8 relative), and 0 where W[0] is 0
    want1 = lr * W[0] / (W[0].abs() + ADAM_EPS)
    assert want1.tolist() == pytest.approx([0.01, -0.01, 0.0, 0.01], rel=1e-7)
    torch.testing.assert_close(res.occluders.flatten(), want1, rtol=0, atol=1e-15)
    assert res.iterations == [1] and res.stopped == [False] and res.n_kept == [2]
    assert res.loss_history[0][0] == pytest.approx(float((x.flatten(1) @ W[0]).mean()))

    # second step: g1 = -w, g2 = -w + lam * sign(delta_1); Adam's bias-corrected moments by hand
    res2 = learn_occluders(model, x, [0, 0], lam=lam, lr=lr, max_iter=2, **PLAIN)
    want2 = []
    for w, d1 in zip(W[0].tolist(), want1.tolist()):
        g1, g2 = -w, -w + lam * (d1 > 0) - lam * (d1 < 0)
        m = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9 ** 2)
        v = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
        want2.append(d1 - lr * m / (math.sqrt(v) + ADAM_EPS))
    torch.testing.assert_close(res2.occluders.flatten(), torch.tensor(want2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert res2.occluders.flatten()[[0, 3]].tolist() != pytest.approx((2 * want1[[0, 3]]).tolist())  # lam acted


def test_stop_rule_iterations_and_frozen_class_by_hand():
    model, x, y = two_class()
    res = learn_occluders(model, x, y, lam=0.0, lr=0.03, max_iter=20, **PLAIN)
    assert res.classes == [0, 1] and res.iterations == [4, 7] and res.stopped == [True, True]
    assert res.success_rate == [1.0, 1.0] and res.success_plain == [1.0, 1.0]
    assert all(math.isnan(s) for s in res.success_transformed)
    # class 0 froze after 4 steps while class 1 went on to 7
    want = torch.tensor([[0.12, 0.12, 0, 0], [0, 0, 0.21, 0.21]], dtype=torch.float64) * STEP
    torch.testing.assert_close(res.occluders.flatten(1), want, rtol=0, atol=1e-12)
    # Eq. (5) at every evaluation: Z(x - delta_t)[y] = 1 - 2 * 0.03 * t
    assert res.loss_history[0] == pytest.approx([1 - 0.06 * t for t in range(5)], abs=1e-6)
    assert len(res.loss_history[1]) == 8
    for k in (0, 1):  # batched == one class at a time, exactly here
        one = learn_occluders(model, x, y, classes=[k], lam=0.0, lr=0.03, max_iter=20, **PLAIN)
        assert one.iterations == [res.iterations[k]]
        assert torch.equal(one.occluders[0], res.occluders[k])

    short = learn_occluders(model, x, y, lam=0.0, lr=0.03, max_iter=5, **PLAIN)
    assert short.iterations == [4, 5] and short.stopped == [True, False] and short.success_rate == [1.0, 0.0]


def test_x_minus_delta_is_clamped_into_the_input_range_in_the_forward():
    W = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.float64)
    model = LinearNet(W).eval()
    x = torch.tensor([0.01, 0.5, 0.1, 0.1], dtype=torch.float64).view(1, 1, 2, 2)  # Z = (0.51, 0.2)
    res = learn_occluders(model, x, [0], lam=0.0, lr=0.03, max_iter=1, **PLAIN)
    # after one step delta = 0.03 on pixels 0, 1: Z0(clamp(x - delta)) = 0 + 0.47, not 0.01 - 0.03 + 0.47
    assert res.loss_history[0] == pytest.approx([0.51, 0.47], abs=1e-9)


def test_a_class_flipped_at_the_start_stops_after_zero_steps():
    model, x, y = two_class()
    init = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    init[0].view(-1)[:2] = 0.2  # Z0 = 1.0 - 0.4 < Z1 = 0.8: class 0's image is already flipped
    res = learn_occluders(model, x, y, lam=0.1, lr=0.03, max_iter=3, init=init, **PLAIN)
    assert res.iterations == [0, 3] and res.stopped == [True, False]
    assert torch.equal(res.occluders[0], init[0]) and len(res.loss_history[0]) == 1
    assert res.loss_history[0][0] == pytest.approx(0.6 + 0.1 * 0.4)  # Z + lam * ||delta||_1


def test_apply_evaluate_and_unmatched_by_hand():
    model, x, y = two_class()
    res = learn_occluders(model, x, y, lam=0.0, lr=0.03, max_iter=20, **PLAIN)
    # held out: class 0 with margin 0.4 (survives delta_0 = 0.12 on pixels 0, 1) and with margin 0.1 (flips)
    held = torch.tensor([[0.6, 0.6, 0.4, 0.4], [0.45, 0.45, 0.4, 0.4], [0.3, 0.3, 0.5, 0.5]],
                        dtype=torch.float64).view(3, 1, 2, 2)
    hy = torch.tensor([0, 0, 1])
    df = evaluate_occluders(model, res, held, hy)
    assert df["n"].tolist() == [2, 1] and df["clean_top1"].tolist() == [1.0, 1.0]
    assert df["occluded_top1"].tolist() == [0.5, 0.0]
    # unmatched: delta_0 on the class-1 image and delta_1 on the class-0 images leave them right
    um = unmatched_accuracy(model, res, held, hy)
    assert um["n"].tolist() == [1, 2] and um["unmatched_top1"].tolist() == [1.0, 1.0]
    # apply clamps x - delta into [0, 1]; apply_class uses one occluder for all
    low = torch.full((1, 1, 2, 2), 0.1, dtype=torch.float64)
    assert res.apply(low, [1]).flatten().tolist() == pytest.approx([0.1, 0.1, 0.0, 0.0])
    assert res.apply_class(held, 0)[:, 0, 0, 0].tolist() == pytest.approx([0.48, 0.33, 0.18])
    with pytest.raises(ValueError, match="no occluder"):
        res.apply(held, [0, 2, 1])


def test_finetuning_reruns_only_the_failing_class_from_its_occluder():
    model, x, y = two_class()
    res = learn_occluders(model, x, y, lam=1e-3, lr=0.03, max_iter=4, **PLAIN)
    assert res.stopped == [True, False] and res.success_rate == [1.0, 0.0]
    ft = finetune_occluders(model, x, y, res, min_success=0.9, progress=False)
    assert ft.finetuned == [1] and ft.stopped == [True, True] and ft.success_rate == [1.0, 1.0]
    assert torch.equal(ft.occluders[0], res.occluders[0])  # class 0 untouched
    # delta_1 went on from about 0.12: 2 * (0.12 + 0.03 t) > 0.4 after t = 3 more steps
    assert ft.iterations == [4, 7]
    assert ft.occluders[1].flatten()[2:].tolist() == pytest.approx([0.21, 0.21], rel=1e-3)
    (log,) = ft.finetune_rounds
    assert log["classes"] == [1] and log["lam"] == pytest.approx(5e-4) and log["adopted"] == [1]
    assert log["success_before"] == [0.0] and log["success_after"] == [1.0]
    assert res.finetuned == [] and res.iterations == [4, 4]  # the input result is not changed
    again = finetune_occluders(model, x, y, ft, progress=False)
    assert again.finetune_rounds == ft.finetune_rounds  # nothing left below min_success


# --------------------------------------------------------------------------------------------------
# Fast path against one class at a time and against the literal reference
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_set():
    """TinyVGG (float64, in-place ReLUs, seed 1) and up to 6 images of each class it predicts, labelled with its
    predictions (random images with a random brightness per channel, so that it predicts four classes)."""
    model = make(TinyVGG, seed=1)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 3, 16, 16, generator=g, dtype=torch.float64)
    x = (x * torch.rand(300, 3, 1, 1, generator=g, dtype=torch.float64)).clamp(0, 1)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    margin = z.topk(2, 1).values.diff(dim=1).neg().squeeze(1)  # the images most clearly of their class
    pick = torch.cat([(torch.nonzero(y == c).squeeze(1)[margin[y == c].argsort(descending=True)])[:6] for c in range(5)])
    return model, x[pick], y[pick]


def _classes_with(y, least=2):
    counts = torch.bincount(y)
    return [c for c in range(len(counts)) if counts[c] >= least]


HYPER = dict(lam=0.01, lr=0.01, max_iter=12, max_degrees=5.0, seed=7, progress=False)


def test_batched_equals_one_class_at_a_time_with_transform(vgg_set):
    model, x, y = vgg_set
    classes = _classes_with(y)
    assert len(classes) >= 3
    res = learn_occluders(model, x, y, classes, **HYPER)
    assert len(set(res.iterations)) > 1 and any(res.stopped)  # classes stop at different iterations
    chunked = learn_occluders(model, x, y, classes, batch_size=5, **HYPER)
    torch.testing.assert_close(chunked.occluders, res.occluders, rtol=0, atol=1e-6)
    assert chunked.iterations == res.iterations
    for i, k in enumerate(classes):
        one = learn_occluders(model, x, y, classes=[k], **HYPER)
        assert one.iterations == [res.iterations[i]] and one.stopped == [res.stopped[i]]
        assert one.n_kept == [res.n_kept[i]] and one.success_rate == [res.success_rate[i]]
        torch.testing.assert_close(one.occluders[0], res.occluders[i], rtol=0, atol=1e-6)
    # the stop rule held on x - delta for every kept image of a class that stopped
    kept = torch.tensor(res.kept)
    assert len(kept) == sum(res.n_kept) and (predict(model, x[kept]) == y[kept]).all()
    for i, k in enumerate(classes):
        if res.stopped[i]:
            xs = x[kept[y[kept] == k]]
            assert (predict(model, res.apply_class(xs, k)) != k).all()


@pytest.mark.parametrize("transform", [False, True])
def test_fast_path_equals_the_literal_reference(vgg_set, transform):
    model, x, y = vgg_set
    classes = _classes_with(y)
    res = learn_occluders(model, x, y, classes, transform=transform, **HYPER)
    for i, k in enumerate(classes):
        ref = learn_occluder_reference(model, x[y == k], k, transform=transform,
                                       **{a: b for a, b in HYPER.items() if a != "progress"})
        assert ref["iterations"] == res.iterations[i] and ref["stopped"] == res.stopped[i]
        assert ref["n_kept"] == res.n_kept[i]
        torch.testing.assert_close(ref["occluder"], res.occluders[i], rtol=0, atol=1e-5)
        assert ref["loss_history"] == pytest.approx(res.loss_history[i], abs=1e-6)


def test_seed_changes_t_and_same_seed_repeats(vgg_set):
    model, x, y = vgg_set
    a = learn_occluders(model, x, y, **HYPER)
    b = learn_occluders(model, x, y, **HYPER)
    c = learn_occluders(model, x, y, **{**HYPER, "seed": 8})
    assert torch.equal(a.occluders, b.occluders)
    assert not torch.equal(a.occluders, c.occluders)


# --------------------------------------------------------------------------------------------------
# The model is left as it was; in-place ReLUs, residual and Inception models
# --------------------------------------------------------------------------------------------------


def _set_up_resnet():
    model = make(TinyResNet)
    model.train()
    model.stages.s1[0].weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    return model, flags, saved


def _assert_untouched(model, flags, saved):
    assert same_state(model, saved)  # parameters and BatchNorm buffers bitwise unchanged
    assert all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert count_hooks(model) == 0


def test_model_is_frozen_and_restored():
    model, flags, saved = _set_up_resnet()
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    res = learn_occluders(model, x, y, lam=0.01, lr=0.05, max_iter=4, progress=True)
    _assert_untouched(model, flags, saved)
    res2 = finetune_occluders(model, x, y, res, min_success=1.0, rounds=1, max_iter=2, progress=False)
    evaluate_occluders(model, res2, x, y)
    unmatched_accuracy(model, res2, x, y)
    _assert_untouched(model, flags, saved)


@pytest.mark.parametrize("cls", [TinyVGG, TinyResNet, TinyInception])
def test_inplace_relu_residual_and_inception_models_run(cls):
    model = make(cls)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = predict(model, x)
    res = learn_occluders(model, x, y, lam=0.01, lr=0.05, max_iter=3, progress=False)
    assert res.occluders.shape == (len(res.classes), 3, 16, 16) and torch.isfinite(res.occluders).all()
    assert res.occluders.abs().sum() > 0 and sum(res.n_kept) <= 6
    assert count_hooks(model) == 0


def test_save_load_round_trip(tmp_path, vgg_set):
    model, x, y = vgg_set
    res = learn_occluders(model, x, y, **{**HYPER, "max_iter": 2})
    pt, js = res.save(tmp_path / "occ")
    assert pt.exists() and js.exists()
    back = OccluderResult.load(tmp_path / "occ.json")
    assert torch.equal(back.occluders, res.occluders)
    assert back.to_dict() == res.to_dict()
    assert list(res.summary().columns[:4]) == ["class", "n_images", "n_kept", "iterations"]


# --------------------------------------------------------------------------------------------------
# The transformation t (Sec. 4)
# --------------------------------------------------------------------------------------------------


def test_transform_defaults_rescale_the_papers_noise():
    assert Transform().noise == pytest.approx(0.02)
    assert Transform(input_range=(-1.0, 1.0)).noise == pytest.approx(0.04)
    assert Transform(noise=0.1).noise == 0.1 and Transform().max_degrees == 5.0


def test_transform_identity_rotation_fill_and_noise_bounds():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = Transform(noise=0.05, max_degrees=5.0)
    zero = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(t.apply(x, torch.zeros_like(x), zero), x, rtol=0, atol=1e-12)
    # a quarter turn of a square image is a permutation of its pixels
    quarter = t.apply(x, torch.zeros_like(x), torch.full((2,), 90.0, dtype=torch.float64))
    assert any(torch.allclose(quarter, torch.rot90(x, k, dims=(2, 3)), atol=1e-9) for k in (1, 3))
    # pixels from outside the image are the middle of the range: a constant mid image stays
    mid = torch.full((1, 1, 6, 10), 0.5, dtype=torch.float64)
    torch.testing.assert_close(t.apply(mid, torch.zeros_like(mid), torch.tensor([30.0])), mid, rtol=0, atol=1e-12)
    # without rotation, t(x) - x is the noise, within +-noise (clamped into [0, 1])
    u, angles = t.draw(x.shape, torch.Generator().manual_seed(1))
    assert u.abs().max() <= 0.05 and u.abs().max() > 0.04 and angles.abs().max() <= 5.0
    torch.testing.assert_close(t.apply(x, u, zero), (x + u).clamp(0, 1), rtol=0, atol=1e-12)
    # the same generator seed gives the same t(x); random_transform is the same function
    a = random_transform(x, 0.05, 5.0, torch.Generator().manual_seed(2))
    assert torch.equal(a, t(x, torch.Generator().manual_seed(2)))
    assert not torch.equal(a, random_transform(x, 0.05, 5.0, torch.Generator().manual_seed(3)))
    assert a.min() >= 0 and a.max() <= 1


def test_clamp_valid_passes_the_gradient_at_the_bounds():
    from xailib.afi.occluder import clamp_valid
    x = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5, float("nan")], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    (g,) = torch.autograd.grad((clamp_valid(x, 0.0, 1.0).nan_to_num() * w).sum(), x)
    assert g.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0, 0.0]          # by hand: w on [0, 1] bounds included, else 0
    # torch.clamp blocks the gradient at the bounds: a pixel at 0 or 1 could never be occluded from delta = 0
    (g_torch,) = torch.autograd.grad((x.clamp(0.0, 1.0).nan_to_num() * w).sum(), x)
    assert g_torch.tolist() == [0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
    out = clamp_valid(x.detach(), 0.0, 1.0)
    assert torch.equal(out[:5], torch.tensor([0.0, 0.0, 0.25, 1.0, 1.0], dtype=torch.float64))
    assert torch.equal(clamp_valid(x, 0.0, 1.0)[:5], out[:5])


def test_transform_draws_noise_in_the_images_dtype():
    t = Transform(noise=0.05)
    x32 = torch.rand(2, 3, 4, 4)
    u32, _ = t.draw(x32.shape, torch.Generator().manual_seed(0))
    u64, _ = t.draw(x32.shape, torch.Generator().manual_seed(0), torch.float64)
    assert u32.dtype == torch.float32 and u64.dtype == torch.float64
    assert t(x32, torch.Generator().manual_seed(0)).dtype == torch.float32


def test_transform_is_differentiable():
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    y = Transform(noise=0.0).apply(x, torch.zeros(1, 1, 5, 5, dtype=torch.float64), torch.tensor([3.0]))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# Bad input: one clear error, no hook left, model unchanged
# --------------------------------------------------------------------------------------------------


def _bad_cases():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    return x


@pytest.mark.parametrize("case, exc, match", [
    ("lam", ValueError, r"lam must be a non-negative"),
    ("range", ValueError, r"outside input_range=\(0, 1\).*input_range=\(lo, hi\)"),
    ("labels", ValueError, r"Got 5 labels for a batch of 6 images"),
    ("classes", ValueError, r"classes \[4\] have no images in labels"),
    ("max_iter", ValueError, r"max_iter must be a positive int"),
    ("float_labels", TypeError, r"label must be a class index"),
    ("model", TypeError, r"model must be a torch.nn.Module"),
    ("range_spec", ValueError, r"input_range must be a pair \(lo, hi\)"),
    ("init", ValueError, r"init must be a float tensor"),
])
def test_bad_input(case, exc, match):
    model, flags, saved = _set_up_resnet()
    x = _bad_cases()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    kw = dict(lam=0.01, max_iter=2, progress=False)
    call = {
        "lam": lambda: learn_occluders(model, x, y, **{**kw, "lam": -1.0}),
        "range": lambda: learn_occluders(model, x * 2 - 0.5, y, **kw),
        "labels": lambda: learn_occluders(model, x, y[:5], **kw),
        "classes": lambda: learn_occluders(model, x, y, classes=[0, 4], **kw),
        "max_iter": lambda: learn_occluders(model, x, y, **{**kw, "max_iter": 0}),
        "float_labels": lambda: learn_occluders(model, x, y.double(), **kw),
        "model": lambda: learn_occluders(lambda z: z, x, y, **kw),
        "range_spec": lambda: learn_occluders(model, x, y, input_range=(1.0, 0.0), **kw),
        "init": lambda: learn_occluders(model, x, y, classes=[0], init=torch.zeros(2, 3, 16, 16), transform=False,
                                        **kw),
    }[case]
    with pytest.raises(exc, match=match):
        call()
    _assert_untouched(model, flags, saved)


def test_a_class_the_model_never_gets_right_is_named():
    model, flags, saved = _set_up_resnet()
    x = _bad_cases()
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    cls = min(set(range(5)) - set(pred.tolist()))  # a class the model predicts for none of the images
    y = pred.clone()
    y[:2] = cls                                     # two images labelled cls: the model gets both wrong
    with pytest.raises(ValueError, match=rf"Class {cls} has 2 image\(s\), but the model misclassifies "
                                         r"every one of them on x or on t\(x\).*transform=False"):
        learn_occluders(model, x, y, classes=[cls], lam=0.01, max_iter=2, progress=False)
    with pytest.raises(ValueError, match=rf"Class {cls} has 2 image"):
        learn_occluders(model, x, y, lam=0.01, max_iter=2, progress=False)
    _assert_untouched(model, flags, saved)


def test_occluder_can_move_pixels_that_sit_at_a_bound():
    # Z(x) = [0.5 - x_0, 0]: class 0 until pixel 0, black (exactly 0, like Fashion-MNIST's background), is
    # brightened past 0.5, i.e. delta_0 < -0.5. With torch.clamp's gradient (0 at the bound) delta_0 never moves.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 0] = -1.0
        model[1].bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    res = learn_occluders(model, x, [0, 0, 0], transform=False, lam=0.0, lr=0.1, max_iter=50, progress=False)
    d = res.occluder(0).flatten()
    assert res.stopped == [True] and float(d[0]) < -0.5
    assert torch.equal(d[1:], torch.zeros(3, dtype=torch.float64))    # no gradient there, lam = 0: untouched
    ref = learn_occluder_reference(model, x, 0, transform=False, lam=0.0, lr=0.1, max_iter=50)
    torch.testing.assert_close(ref["occluder"].flatten(), d, rtol=0, atol=1e-6)


def test_groups_of_classes_equal_the_batched_run(vgg_set):
    """Learning in groups of classes (serially here) gives the one batched run's occluders up to rounding, and the
    same iterations, stops and kept images (mapped back to the positions in the images given)."""
    model, x, y = vgg_set
    classes = _classes_with(y)
    res = learn_occluders(model, x, y, classes, **HYPER)
    for per in (1, 2):
        grouped = learn_occluders(model, x, y, classes, classes_per_task=per, **HYPER)
        torch.testing.assert_close(grouped.occluders, res.occluders, rtol=0, atol=1e-6)
        for name in ("classes", "n_images", "n_kept", "kept", "iterations", "stopped", "success_rate"):
            assert getattr(grouped, name) == getattr(res, name), name
    with pytest.raises(ValueError, match="classes_per_task must be a positive int"):
        learn_occluders(model, x, y, classes, classes_per_task=0, **HYPER)


@pytest.mark.slow
def test_a_dask_client_gives_the_serial_groups_bit_for_bit(vgg_set, dask_client):
    model, x, y = vgg_set
    classes = _classes_with(y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    serial = learn_occluders(model, x, y, classes, classes_per_task=1, **HYPER)
    on_cluster = learn_occluders(model, x, y, classes, client=dask_client, **HYPER)
    assert torch.equal(on_cluster.occluders, serial.occluders)
    for name in ("classes", "kept", "iterations", "stopped", "success_rate", "loss_history"):
        assert getattr(on_cluster, name) == getattr(serial, name), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
