"""Experiment 2 of Chen et al. (Sec. 4.2) on ConceptWorld: attributes explain another attribute.

The paper trains a VGG-16 on CelebA's 40 face attributes, takes one *global* attribute (attractive, heavy
makeup, male, young) as the target ``y_hat`` and the other 39 as the concepts ``y_i``, with Case 2 priors on the
first fully connected layer's output, ``beta = 0.2`` and the L2 prior loss. Here one multi-label performer (the
VGG-16-like build of :mod:`xailib.explainer.performers`) predicts ConceptWorld's 34 attributes and its four
*derived* ones (:data:`xailib.data.conceptworld.DERIVED_ATTRIBUTES`), which are the global targets:

* ``part_score``, a weighted sum of seven ``has_<part>`` attributes (real-valued; its output is trained by
  squared error): the ground truth no paper had, since its contribution from each part attribute is known;
* ``patterned``, ``warm``, ``outdoor``: 1 where any of the named texture, colour or context attributes is 1.

:func:`train_attribute_performer` trains it (``make performers``, checksummed like the binary performers);
:func:`attribute_concepts` gives Case 2's concepts and priors for one target; :func:`truth_errors` checks an
explainer of ``part_score`` against its definition.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from xailib.checks import check_choice, check_positive_int
from xailib.data.conceptworld import DERIVED_ATTRIBUTES, ConceptWorld
from xailib.explainer.performers import ARCHS, ATTRIBUTE_PERFORMER, CHECKPOINTS, RECIPE, write_table
from xailib.explainer.priors import Concepts, case2_priors
from xailib.layers import capture, model_state
from xailib.models.checkpoints import load_state_dict, read_manifest, save_checkpoint, write_manifest
from xailib.models.train import deterministic, model_seed
from xailib.models.zoo import WIDTHS, build_model
from xailib.utils import make_generator, resolve_device, seed_everything

__all__ = ["ATTRIBUTE_RECIPE", "BETA_ATTRIBUTES", "NAME", "SHARED_LAYER", "TARGETS", "AttributeData",
           "attribute_concepts", "attribute_data", "attribute_names", "attribute_study", "build_attribute_performer",
           "capacity_curve", "load_attribute_performer", "target_metrics", "train_attribute_performer",
           "truth_errors"]

#: Chen et al.'s beta for Experiment 2 (with the L2 prior loss).
BETA_ATTRIBUTES = 0.2

#: The checkpoint's name.
NAME = ATTRIBUTE_PERFORMER
#: The global targets, explained one at a time by the other outputs.
TARGETS = list(DERIVED_ATTRIBUTES)
#: Case 2's shared feature ``x``: the first fully connected layer's output, after its ReLU (VGG's fc6).
SHARED_LAYER = "head.relu"
#: The explainer's input (``g``): the top conv map, as in Experiment 1 (footnote 5).
G_LAYER = ARCHS["vgg-16"].top_relu
#: Training recipe: scenes per class (train, test), epochs, Adam.
ATTRIBUTE_RECIPE = {"n_per_class": 300, "n_test_per_class": 60, "epochs": 30, "batch_size": 50, "lr": 2e-3,
                    "weight_decay": 5e-4}


def attribute_names(world: ConceptWorld | None = None) -> list[str]:
    """The performer's outputs: ConceptWorld's 34 attributes, then the derived ones."""
    world = ConceptWorld(size=RECIPE["size"], seed=RECIPE["world_seed"]) if world is None else world
    return list(world.attribute_names) + list(world.derived_attribute_names)


class AttributeData(tuple):
    """``(images [N, 3, S, S], targets [N, A], labels [N])``: rendered scenes, every attribute, the class."""

    @property
    def images(self) -> torch.Tensor:
        return self[0]

    @property
    def targets(self) -> torch.Tensor:
        return self[1]

    @property
    def labels(self) -> torch.Tensor:
        return self[2]


def attribute_data(n_per_class: int, split: str = "train", seed: int = 0) -> AttributeData:
    """``n_per_class`` scenes of every ConceptWorld class, rendered, with all attributes (:func:`attribute_names`)."""
    n_per_class = check_positive_int(n_per_class, "n_per_class")
    world = ConceptWorld(size=RECIPE["size"], seed=RECIPE["world_seed"])
    recipes = world.sample(n_per_class * len(world.class_names), split=split, seed=seed)
    images = world.render(recipes).images
    targets = torch.cat([world.attributes(recipes), world.derived_attributes(recipes)], 1).cpu()
    return AttributeData((images, targets, recipes.label.cpu()))


def _regression_mask(names) -> torch.Tensor:
    return torch.tensor([DERIVED_ATTRIBUTES.get(n, ("any",))[0] == "sum" for n in names])


def build_attribute_performer() -> nn.Module:
    """The untrained multi-label performer: the VGG-16-like build with one output per attribute."""
    spec = ARCHS["vgg-16"]
    widths = WIDTHS[(spec.zoo_arch, "conceptworld", "shallow")]
    return build_model(spec.zoo_arch, "conceptworld", spec.tier, class_names=attribute_names(), widths=widths)


def _loss(out: torch.Tensor, targets: torch.Tensor, regression: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the 0/1 attributes plus squared error over the real-valued ones, both means."""
    bce = F.binary_cross_entropy_with_logits(out[:, ~regression], targets[:, ~regression])
    return bce + F.mse_loss(out[:, regression], targets[:, regression]) if bool(regression.any()) else bce


def target_metrics(model: nn.Module, data: AttributeData, batch_size: int = 200) -> pd.DataFrame:
    """Per output: ``accuracy`` (``out > 0`` against the 0/1 attribute) or ``r2`` and ``rmse`` (real-valued)."""
    names = attribute_names()
    reg = _regression_mask(names)
    with model_state(model, train=False), torch.no_grad():
        out = torch.cat([model(data.images[s:s + batch_size]) for s in range(0, len(data.images), batch_size)])
    rows = []
    for j, name in enumerate(names):
        t, o = data.targets[:, j], out[:, j]
        if reg[j]:
            rss, tss = float(((o - t) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
            rows.append({"attribute": name, "accuracy": float("nan"), "r2": 1 - rss / tss,
                         "rmse": float(((o - t) ** 2).mean().sqrt()), "positive_rate": float("nan")})
        else:
            rows.append({"attribute": name, "accuracy": float(((o > 0).float() == t).float().mean()),
                         "r2": float("nan"), "rmse": float("nan"), "positive_rate": float(t.mean())})
    return pd.DataFrame(rows)


def train_attribute_performer(recipe: dict | None = None, seed: int = 0, device="cpu", progress: bool = False):
    """Train the multi-label performer from scratch, deterministically: ``(model, info, history)``."""
    recipe = dict(ATTRIBUTE_RECIPE, **(recipe or {}))
    dev = resolve_device(device)
    s = model_seed(NAME, seed)
    train = attribute_data(recipe["n_per_class"], "train", seed=seed)
    test = attribute_data(recipe["n_test_per_class"], "test", seed=seed)
    seed_everything(s)
    gen = make_generator(s)
    model = build_attribute_performer().to(dev)
    reg = _regression_mask(attribute_names()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    n, bs = len(train.images), recipe["batch_size"]
    if n < bs:
        raise ValueError(f"{n} training images make no batch of {bs}; raise n_per_class.")
    rows, t0 = [], time.perf_counter()
    model.train()
    for epoch in range(1, recipe["epochs"] + 1):
        order, total = torch.randperm(n, generator=gen), 0.0
        for k in range(n // bs):
            idx = order[k * bs:(k + 1) * bs]
            loss = _loss(model(train.images[idx].to(dev)), train.targets[idx].to(dev), reg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        rows.append({"epoch": epoch, "loss": total / (n // bs)})
        if progress:
            print(f"epoch {epoch}: loss {rows[-1]['loss']:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = target_metrics(model, test)
    info = {"arch": "vgg-16", "label": "VGG-16-like, multi-label", "outputs": attribute_names(),
            "params": sum(p.numel() for p in model.parameters()), "n_train": n, "n_test": len(test.images),
            "epochs": recipe["epochs"], "seed": s, "train_seconds": round(seconds, 1), "recipe": recipe,
            "device": str(dev), "threads": torch.get_num_threads(),
            "mean_accuracy": round(float(metrics["accuracy"].mean()), 4),
            "targets": metrics[metrics["attribute"].isin(TARGETS)].round(4).to_dict(orient="records")}
    return model, info, pd.DataFrame(rows)


def load_attribute_performer(device="cpu", folder=None) -> nn.Module:
    """The trained multi-label performer from its checksummed checkpoint (eval mode)."""
    cmd = f"`make performers ONLY={NAME}`, i.e. `python -m xailib.explainer.attributes`"
    state, _ = load_state_dict(NAME, folder=CHECKPOINTS if folder is None else folder, rebuild=cmd)
    model = build_attribute_performer()
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


def attribute_concepts(model: nn.Module, images: torch.Tensor, target: str, concepts=None,
                       batch_size: int = 100) -> tuple[Concepts, torch.Tensor]:
    """Case 2 for one target: the other outputs' scores ``y_i`` and ``w_i = Delta y_hat / Delta y_i`` at
    :data:`SHARED_LAYER`, and ``g``'s input (the top conv map ``[N, C, h, w]``)."""
    names = attribute_names()
    target = check_choice(target, names, "target")
    t = names.index(target)
    idx = [k for k in range(len(names)) if k != t] if concepts is None else [names.index(c) for c in concepts]
    found = case2_priors(model, SHARED_LAYER, images, target=t, concepts=idx, names=names,
                         batch_size=batch_size)
    maps = []
    with model_state(model, train=False), torch.no_grad():
        for s in range(0, len(images), batch_size):
            with capture(model, [G_LAYER], detach=True) as cap:
                model(images[s:s + batch_size])
            maps.append(cap[G_LAYER].cpu())
    return found, torch.cat(maps)


def truth_errors(contributions: torch.Tensor, names, base_attributes: torch.Tensor, base_names,
                 target: str = "part_score") -> dict:
    """An explainer of a ``"sum"`` target against its definition ``sum_a v_a * attr_a``.

    Contributions are compared centred over images (an additive constant per concept moves into ``b``):
    ``error = E_I sum_i |c_i - mean c_i - (t_i - mean t_i)| / E_I sum_i |t_i - mean t_i|``, with ``t_i`` the
    true contribution (``v_a`` times the attribute for a defining concept, 0 for the others), and
    ``off_share``, the share of the centred contributions' total absolute value on concepts outside the
    definition (0 for a perfect explainer).
    """
    kind, weights = DERIVED_ATTRIBUTES[target]
    if kind != "sum":
        raise ValueError(f"{target!r} is not a weighted sum; truth_errors needs one of "
                         f"{[k for k, v in DERIVED_ATTRIBUTES.items() if v[0] == 'sum']}.")
    names, base_names = list(names), list(base_names)
    truth = torch.zeros_like(contributions)
    for a, v in weights.items():
        if a in names:
            truth[:, names.index(a)] = v * base_attributes[:, base_names.index(a)]
    c = contributions - contributions.mean(0)
    t = truth - truth.mean(0)
    defining = torch.tensor([n in weights for n in names])
    scale = t.abs().sum(1).mean()
    return {"error": float((c - t).abs().sum(1).mean() / scale), "per_image": (c - t).abs().sum(1) / scale,
            "off_share": float(c[:, ~defining].abs().sum() / c.abs().sum().clamp(min=1e-12)),
            "n": len(c), "defining": int(defining.sum())}


def _fit_and_score(fit, fit_maps, held, held_maps, labels, *, beta, epochs, seed, device, options, baseline=True):
    """Baseline and ours on one target: their contributions and outputs on the held-out images, and rows."""
    from xailib.explainer.additive import train_explainer
    from xailib.explainer.evaluation import best_threshold, contribution_entropy, relative_deviation

    out, rows = {}, []
    for name, b in (("baseline", 0.0), ("ours", beta))[0 if baseline else 1:]:
        e = train_explainer(fit_maps, fit.concepts, fit.y_hat, fit.priors if b > 0 else None, beta=b, positive=False,
                            epochs=epochs, seed=seed, device=device, progress=False, **options)
        contri, pred = e.contributions(held_maps, held.concepts), e.predict(held_maps, held.concepts)
        row = {"explainer": name, "n": len(pred), "entropy": float(contribution_entropy(contri).mean()),
               "relative_deviation": float(relative_deviation(held.y_hat, pred).mean())}
        if labels is not None:
            row["performer_accuracy"] = float(((held.y_hat > 0).float() == labels).float().mean())
            row["performer_best_accuracy"] = best_threshold(held.y_hat, labels.long())[1]
            row["tau"], row["explainer_accuracy"] = best_threshold(pred, labels.long())
        out[name] = (contri, pred)
        rows.append(row)
    return out, rows


def attribute_study(model: nn.Module, fit: AttributeData, held: AttributeData, targets=None, *,
                    beta: float = BETA_ATTRIBUTES, epochs: int = 30, seed: int = 0, device="cpu", **options) -> dict:
    """Experiment 2: for each target, the baseline and our explainer (Case 2 priors, L2 prior loss), learned on
    ``fit`` and evaluated on ``held``.

    Returns
    -------
    dict
        ``summary`` (one row per target and explainer: entropy, relative deviation, the performer's and the
        explainer's accuracy for 0/1 targets, and ``truth_error`` / ``truth_off_share`` from :func:`truth_errors`
        for a weighted-sum target), ``contributions`` (``{target: {explainer: [N, n]}}``), ``outputs``,
        ``concepts`` (``{target: Concepts}`` on ``held``) and ``truth_per_image`` (``{target: {explainer: [N]}}``,
        weighted-sum targets only).
    """
    names = attribute_names()
    targets = TARGETS if targets is None else list(targets)
    base_names = names[:len(names) - len(TARGETS)]
    summary, contributions, outputs, concepts, truth_per_image = [], {}, {}, {}, {}
    for target in targets:
        t = names.index(target)
        f, f_maps = attribute_concepts(model, fit.images, target)
        h, h_maps = attribute_concepts(model, held.images, target)
        binary = DERIVED_ATTRIBUTES.get(target, ("any",))[0] != "sum"
        labels = held.targets[:, t] if binary else None
        res, rows = _fit_and_score(f, f_maps, h, h_maps, labels, beta=beta, epochs=epochs, seed=seed, device=device,
                                   options=options)
        for row in rows:
            if not binary:
                truth = truth_errors(res[row["explainer"]][0], h.names, held.targets[:, :len(base_names)],
                                     base_names, target)
                row.update(truth_error=truth["error"], truth_off_share=truth["off_share"])
                truth_per_image.setdefault(target, {})[row["explainer"]] = truth["per_image"]
                y = held.targets[:, t]
                row["performer_r2"] = float(1 - ((h.y_hat - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
            summary.append(dict(target=target, **row))
        contributions[target] = {k: v[0] for k, v in res.items()}
        outputs[target] = {k: v[1] for k, v in res.items()}
        concepts[target] = h
    return {"summary": pd.DataFrame(summary), "contributions": contributions, "outputs": outputs,
            "concepts": concepts, "truth_per_image": truth_per_image}


def capacity_curve(model: nn.Module, fit: AttributeData, held: AttributeData, target: str, sizes, *,
                   draws: int = 3, beta: float = BETA_ATTRIBUTES, epochs: int = 30, seed: int = 0, device="cpu",
                   **options) -> pd.DataFrame:
    """Fig. 8: our explainer of ``target`` from ``k`` randomly chosen concepts, for each ``k`` in ``sizes`` and
    ``draws`` draws: one row per draw with ``k``, ``relative_deviation`` and, for a 0/1 target, the accuracy
    drop (the performer's accuracy minus the explainer's)."""
    names = attribute_names()
    t = names.index(target)
    others = [n for n in names if n != target]
    binary = DERIVED_ATTRIBUTES.get(target, ("any",))[0] != "sum"
    gen = torch.Generator().manual_seed(seed)
    rows = []
    f_all, f_maps = attribute_concepts(model, fit.images, target)
    h_all, h_maps = attribute_concepts(model, held.images, target)
    for k in sizes:
        k = check_positive_int(k, "size")
        if k > len(others):
            raise ValueError(f"size {k} exceeds the {len(others)} concepts other than {target!r}.")
        for d in range(draws if k < len(others) else 1):
            pick = torch.randperm(len(others), generator=gen)[:k].sort().values
            sub = [Concepts(c.y_hat, c.concepts[:, pick], c.priors[:, pick], c.features, [c.names[i] for i in pick])
                   for c in (f_all, h_all)]
            labels = held.targets[:, t] if binary else None
            _, res = _fit_and_score(sub[0], f_maps, sub[1], h_maps, labels, beta=beta, epochs=epochs, seed=seed,
                                    device=device, options=options, baseline=False)
            ours = res[0]
            row = {"target": target, "k": k, "draw": d, "relative_deviation": ours["relative_deviation"]}
            if binary:
                row["accuracy_drop"] = ours["performer_accuracy"] - ours["explainer_accuracy"]
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m xailib.explainer.attributes [--epochs N] [--n-per-class N] [--out DIR]``."""
    p = argparse.ArgumentParser(description="Train the multi-label attribute performer (deterministic).")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-per-class", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    folder = args.out or CHECKPOINTS
    override = {k: v for k, v in (("epochs", args.epochs), ("n_per_class", args.n_per_class)) if v is not None}
    t0 = time.perf_counter()
    with deterministic(args.threads):
        model, info, history = train_attribute_performer(override, progress=True)
    info["history"] = history.round(6).to_dict(orient="list")
    save_checkpoint(model, NAME, info, folder=folder)
    manifest = read_manifest(folder)
    manifest["last_attribute_run"] = {"wall_minutes": round((time.perf_counter() - t0) / 60, 1),
                                      "date": time.strftime("%Y-%m-%d %H:%M")}
    write_manifest(manifest, folder)
    write_table(folder)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
