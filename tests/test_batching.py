"""xailib.batching: chunks under a memory cap, the choice of a batched way, and an injected out-of-memory error
that must reach the caller instead of silently switching to another way of computing (gAP and its ground truth)."""

import pytest
import torch
from tiny_models import TinyInception, TinyVGG, image, make
from torch import nn

from xailib.batching import chunked, class_scores, first_supported, is_batching_error, predict
from xailib.gap import GAP, Neuron, ground_truth_contributions
from xailib.gap.gradients import decision_gradients
from xailib.layers import count_hooks, model_state


def test_is_batching_error_only_for_batching_messages():
    assert is_batching_error(RuntimeError("Sizes of tensors must match except in dimension 1. Expected size 3"))
    assert is_batching_error(RuntimeError("vmap: inplace arithmetic(self, *extra_args) is not possible"))
    assert not is_batching_error(RuntimeError("boom"))
    assert not is_batching_error(ValueError("Sizes of tensors must match"))  # not a RuntimeError
    assert not is_batching_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_batching_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    # an out-of-memory message that also mentions vmap is still an out-of-memory error
    assert not is_batching_error(RuntimeError("CUDA out of memory while running vmap"))


def test_first_supported_moves_on_only_for_batching_errors():
    tried = []

    def attempt(way):
        tried.append(way)
        if way == "fast":
            raise RuntimeError("Batching rule not implemented for aten::foo")
        return way.upper()

    assert first_supported(["fast", "plain"], attempt) == ("plain", "PLAIN") and tried == ["fast", "plain"]
    with pytest.raises(RuntimeError, match="out of memory"):
        first_supported(["fast", "plain"], lambda way: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))
    with pytest.raises(ValueError, match="at least one way"):
        first_supported([], attempt)


def test_chunked_concatenates_and_respects_the_cap():
    model = nn.Linear(3, 3)
    calls = []

    def run(sl):
        calls.append(sl.stop - sl.start)
        x = torch.arange(sl.start, sl.stop, dtype=torch.float32)
        return [x, 2 * x]

    a, b = chunked(5, run, model, None)
    assert calls == [5] and torch.equal(a, torch.arange(5.0)) and torch.equal(b, 2 * torch.arange(5.0))
    calls.clear()
    a, _ = chunked(5, run, model, max_batch_bytes=8, item_bytes=4)  # first chunk: 1 item; then 8 // 4 = 2
    assert calls == [1, 2, 2] and torch.equal(a, torch.arange(5.0))
    with pytest.raises(ValueError, match="max_batch_bytes"):
        chunked(5, run, model, max_batch_bytes=0)


def test_class_scores_and_predict_by_hand():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
    x = torch.tensor([[[[3.0, 0], [0, 1.0]]], [[[0.0, 0], [0, 2.0]]]])  # [2, 1, 2, 2]
    model.train()
    torch.testing.assert_close(class_scores(model, x, batch_size=1), torch.tensor([[3.0, 1.0], [0.0, 2.0]]))
    assert predict(model, x).tolist() == [0, 1] and model.training  # mode restored
    with pytest.raises(ValueError, match=r"class scores \[B, C\]"):
        class_scores(nn.Flatten(0), x)


class OOMOnce(nn.Module):
    """Identity that raises an out-of-memory RuntimeError once: on its first call with at least ``rows`` rows.

    A transient allocation failure: the old gAP engine caught it as a RuntimeError, switched silently to a
    slower way, and returned as if nothing had happened.
    """

    def __init__(self, rows=1):
        super().__init__()
        self.rows, self.fired = rows, False

    def forward(self, x):
        if not self.fired and x.shape[0] >= self.rows:
            self.fired = True
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")
        return x


def test_injected_out_of_memory_reaches_the_caller_in_gap():
    model = make(TinyInception, double=False)
    model.stem.append(OOMOnce())  # fires in the first (fastest) way: one forward, then a batched backward
    x = image(double=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    channels, positions = torch.tensor([0, 1, 2]), torch.tensor([[1, 1], [2, 2], [0, 3]])  # 3 neurons of inc2

    def engine():  # Eq. (2) for three decisions of one image, as one level of a decomposition runs it
        with model_state(model, train=False, requires_grad=False):
            return decision_gradients(model, x, "inc1", "inc2", channels, positions, torch.zeros(3, dtype=torch.long),
                                      max_batch_bytes=None)

    with pytest.raises(RuntimeError, match="out of memory"):
        engine()
    assert count_hooks(model) == 0 and model.training is False
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    g, _, _ = engine()  # without the injected error it works, and equals one decision at a time
    ref = [GAP(model).attribute(x, target=Neuron("inc2", int(c), int(p[0]), int(p[1])), layer="inc1").gradients
           for c, p in zip(channels, positions)]
    torch.testing.assert_close(g, torch.cat(ref), rtol=0, atol=1e-6)


def test_injected_out_of_memory_reaches_the_caller_in_ground_truth():
    model = make(TinyVGG, double=False)
    model.stages.stage3.append(OOMOnce(rows=2))  # above the ablated layer: the ablated copies are rows there
    with pytest.raises(RuntimeError, match="out of memory"):
        ground_truth_contributions(model, image(double=False), 0, "stages.stage2", use_segment=False)
    assert count_hooks(model) == 0


def test_batching_errors_move_on_to_the_next_way_and_give_the_same_numbers(monkeypatch):
    """The first way (one forward, then a vmapped backward) is made to fail as an op without a vmap rule does; the
    second (expanding one branch's output of an Inception block) really fails at the concatenation. The engine
    then repeats the image, keeps that way for the call, and gives one decision at a time's gradients."""
    from xailib.gap import gradients

    def no_vmap_rule(*args, **kwargs):
        raise RuntimeError("Batching rule not implemented for aten::some_op (simulated by the test)")

    chosen = []
    call = gradients._DecisionBatches.__call__

    def spy(self, sl):
        out = call(self, sl)
        chosen.append(self.way)
        return out

    monkeypatch.setattr(gradients, "_batched_vjp", no_vmap_rule)
    monkeypatch.setattr(gradients._DecisionBatches, "__call__", spy)
    model = make(TinyInception)
    x = image()
    channels, positions = torch.tensor([0, 2, 5]), torch.tensor([[1, 1], [2, 3], [0, 0]])
    with model_state(model, train=False, requires_grad=False):
        g, _, _ = decision_gradients(model, x, "inc1.b1", "inc2", channels, positions, torch.zeros(3, dtype=torch.long),
                                     max_batch_bytes=None)
    assert chosen == ["rows"]
    ref = [GAP(model).attribute(x, target=Neuron("inc2", int(c), int(p[0]), int(p[1])), layer="inc1.b1").gradients
           for c, p in zip(channels, positions)]
    torch.testing.assert_close(g, torch.cat(ref), rtol=0, atol=1e-12)
    assert count_hooks(model) == 0
