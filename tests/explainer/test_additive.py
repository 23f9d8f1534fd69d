import math

import pytest
import torch

from xailib.explainer.additive import (
    AdditiveExplainer,
    AlphaNet,
    _floor_init,
    distillation_loss,
    prior_loss,
    prior_loss_reference,
    prior_weight,
    train_explainer,
)
from xailib.explainer.evaluation import relative_deviation
from xailib.metrics import spearman


def test_prior_loss_by_hand():
    alpha, w = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]])
    # cross-entropy of (1/4, 3/4) against (1/2, 1/2): ln 2
    assert float(prior_loss(alpha, w, positive=True)) == pytest.approx(math.log(2), rel=1e-6)
    # L2: || (1, 1)/sqrt 2 - (1, 3)/sqrt 10 ||^2 = 2 - 2 * 4 / sqrt 20
    assert float(prior_loss(alpha, w, positive=False)) == pytest.approx(2 - 8 / math.sqrt(20), rel=1e-6)
    # the case split of Eq. (4) by default: negative alpha -> the L2 form
    assert float(prior_loss(-alpha, w)) == pytest.approx(2 + 8 / math.sqrt(20), rel=1e-6)
    # a zero prior is left out of the mean
    two = prior_loss(torch.tensor([[1.0, 1.0], [5.0, 1.0]]), torch.tensor([[1.0, 3.0], [0.0, 0.0]]), positive=True)
    assert float(two) == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="clip the priors"):
        prior_loss(alpha, -w, positive=True)


@pytest.mark.parametrize("positive", [True, False])
def test_prior_loss_equals_literal_reference(positive):
    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(6, 5, generator=g, dtype=torch.float64) + 0.01
    w = torch.rand(6, 5, generator=g, dtype=torch.float64)
    if not positive:
        alpha, w = alpha - 0.5, w - 0.5
    w[2] = 0.0
    assert float(prior_loss(alpha, w, positive=positive)) == pytest.approx(prior_loss_reference(alpha, w, positive),
                                                                           rel=1e-10)


def test_distillation_loss_and_lambda_by_hand():
    y_hat = torch.tensor([3.0, 0.0])
    alpha = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    y = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # image 1: 3 - 3 - 0.5 = -0.5; image 2: 0 - 2 - 0.5 = -2.5 -> mean of squares (0.25 + 6.25) / 2
    assert float(distillation_loss(y_hat, alpha, y, 0.5)) == pytest.approx(3.25)
    assert prior_weight(1, 10.0) == 10.0 and prior_weight(4, 10.0) == 5.0 and prior_weight(9, 0.2) == pytest.approx(0.2 / 3)


def test_additive_explainer_is_eq1():
    torch.manual_seed(0)
    g = AlphaNet(4, 3, width=8, depth=1)
    ex = AdditiveExplainer(g).eval()
    x, y = torch.randn(5, 4, 3, 3), torch.rand(5, 3)
    a = g(x)
    assert bool((a > 0).all())
    torch.testing.assert_close(ex(x, y), (a * y).sum(1) + ex.b)
    torch.testing.assert_close(ex.contributions(x, y).sum(1) + ex.b, ex(x, y))
    with pytest.raises(ValueError, match=r"concepts must be y \[B, n\]"):
        ex(x, y[:, :2])
    with pytest.raises(ValueError, match="g takes inputs"):
        g(torch.randn(5, 3, 3, 3))


def _correlated_task(n=256, concepts=8, seed=0):
    """Every concept is a noisy copy of one signal and the performer sums them all: one concept alone explains the
    performer almost as well as all of them (the setting of bias-interpreting), while the true weights are equal."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.rand(n, 1, generator=g) + 0.5
    y = signal * (1 + 0.05 * torch.randn(n, concepts, generator=g))
    feats = y[:, :, None, None].expand(n, concepts, 2, 2).contiguous() + 0.01 * torch.randn(n, concepts, 2, 2, generator=g)
    y_hat = y.sum(1)
    return feats, y, y_hat


def test_training_is_deterministic_and_logs_eq3():
    feats, y, y_hat = _correlated_task(n=64)
    w = torch.ones_like(y)
    runs = [train_explainer(feats, y, y_hat, w, beta=10.0, width=8, depth=1, epochs=3, batch_size=16, seed=5,
                            progress=False) for _ in range(2)]
    torch.testing.assert_close(runs[0].predict(feats, y), runs[1].predict(feats, y), rtol=0, atol=0)
    h = runs[0].history
    assert list(h["epoch"]) == [1, 2, 3]
    assert h["lambda"].tolist() == pytest.approx([10.0, 10 / math.sqrt(2), 10 / math.sqrt(3)])
    assert bool((h["prior"] > 0).all())
    base = train_explainer(feats, y, y_hat, None, width=8, depth=1, epochs=2, progress=False)
    assert base.beta == 0.0 and bool((base.history["lambda"] == 0).all()) and bool((base.history["prior"] == 0).all())


def test_distillation_fits_and_the_prior_decides_between_equal_fits():
    """Any weights summing to 8 fit the correlated task: distillation alone cannot tell them apart (the
    ill-posedness behind bias-interpreting), the prior loss picks the ones proportional to w."""
    feats, y, y_hat = _correlated_task()
    w = torch.arange(1.0, 9.0).expand_as(y)
    kw = dict(width=16, depth=1, epochs=30, batch_size=32, lr=1e-2, seed=0, progress=False)
    base = train_explainer(feats, y, y_hat, None, **kw)
    ours = train_explainer(feats, y, y_hat, w, beta=10.0, **kw)
    for run in (base, ours):
        rel = relative_deviation(y_hat, run.predict(feats, y)).mean()
        assert float(rel) < 0.02                           # both distil the performer
    a_base, a_ours = (run.explainer.alpha(feats).detach() for run in (base, ours))
    assert float(spearman(a_ours.mean(0)[None], w[:1])[0]) == 1.0
    assert float(spearman(a_base.mean(0)[None], w[:1])[0]) < 0.5
    assert float(prior_loss(a_ours, w)) < float(prior_loss(a_base, w)) - 0.1


def test_training_bad_input():
    feats, y, y_hat = _correlated_task(n=8)
    with pytest.raises(ValueError, match=r"y_hat must be the performer's scores \[N\]"):
        train_explainer(feats, y, y_hat[:, None], progress=False)
    with pytest.raises(ValueError, match="clip the priors"):
        train_explainer(feats, y, y_hat, -torch.ones_like(y), progress=False)
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_explainer(feats, bad, y_hat, progress=False)
    with pytest.raises(ValueError, match="beta"):
        train_explainer(feats, y, y_hat, beta=-1.0, progress=False)


def test_training_warns_on_probabilities_and_checks_g_width():
    feats, y, y_hat = _correlated_task(n=8)
    probs = torch.sigmoid(y_hat)
    with pytest.warns(UserWarning, match="before it"):
        train_explainer(feats, y, probs, epochs=1, progress=False)
    g = AlphaNet(feats.shape[1], y.shape[1] + 1)
    g.train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(ValueError, match=f"output width must equal the number of concepts.*n_concepts={y.shape[1]}"):
        train_explainer(feats, y, y_hat, g=g, progress=False)
    assert g.training
    for k, v in g.state_dict().items():
        torch.testing.assert_close(v, before[k])          # the check's forward changed no running statistic
    with pytest.raises(ValueError, match="init"):
        train_explainer(feats, y, y_hat, init="mean", progress=False)
    with pytest.raises(ValueError, match="positive=False"):
        train_explainer(feats, y, y_hat, init="floor", positive=False, beta=0.0, progress=False)


def test_floor_init_by_hand():
    # y_hat = (1, 3, 5), sum_i y_i = (1, 2, 3): b = min y_hat = 1, then a = sum (y_hat - b) s / sum s^2
    # = (0 + 4 + 12) / (1 + 4 + 9) = 16 / 14
    feats = torch.rand(3, 2, 2, 2)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0]])
    y_hat = torch.tensor([1.0, 3.0, 5.0])
    e = AdditiveExplainer(AlphaNet(2, 2), positive=True)
    with torch.no_grad():
        _floor_init(e, y, y_hat)
    assert e.b.item() == pytest.approx(1.0)
    assert torch.nn.functional.softplus(e.g.fc.bias.detach()).mean().item() == pytest.approx(16 / 14, rel=1e-5)
