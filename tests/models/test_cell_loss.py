"""The Q-Former cell loss (model.qformer.cell_classes): query k learns grid cell k's content."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import mean_loss, tiny_model_config
from tinygpt.models.build import build_model

IMG = "<Img><ImageHere></Img>"


def _model(root, cell_classes):
    cfg = tiny_model_config(root)
    cfg.qformer.train = True
    cfg.qformer.cell_classes = cell_classes
    cfg.qformer.cell_loss_weight = 0.5
    torch.manual_seed(0)
    return build_model(cfg, "cpu", load_weights=False).eval()  # eval: no dropout, forwards compare exactly


def _batch(model, cells=None):
    g = torch.Generator().manual_seed(1)
    size = model.cfg.vision.image_size
    batch = {"image": torch.randn(2, 3, size, size, generator=g),
             "instruction_input": [f"{IMG} [vqa] where is the circle?"] * 2, "answer": ["top left", "bottom"]}
    if cells is not None:
        batch["cell_labels"] = cells
    return batch


def test_loss_adds_the_weighted_cross_entropy_of_each_querys_cell(tiny_root):
    model = _model(tiny_root, cell_classes=5)
    cells = torch.tensor([[0, 3, 0, 1], [2, 0, 4, 0]])  # tiny config: 4 queries, 4 cells
    plain = mean_loss(model, _batch(model))
    total = mean_loss(model, _batch(model, cells))
    queries = model.query_features(_batch(model)["image"])
    expected = F.cross_entropy(model.cell_head(queries).flatten(0, 1), cells.flatten())
    torch.testing.assert_close(total, plain + 0.5 * expected)
    total.backward()
    assert model.cell_head.weight.grad.abs().sum() > 0
    assert model.query_tokens.grad.abs().sum() > 0  # the loss trains the Q-Former's queries


def test_without_a_head_cell_labels_are_ignored_and_too_many_cells_are_refused(tiny_root):
    model = _model(tiny_root, cell_classes=0)
    assert model.cell_head is None
    cells = torch.zeros(2, 4, dtype=torch.long)
    torch.testing.assert_close(mean_loss(model, _batch(model, cells)), mean_loss(model, _batch(model)))
    with_head = _model(tiny_root, cell_classes=5)
    with pytest.raises(ValueError, match="cell_labels name 9 cells but model.qformer.num_query_tokens is 4"):
        with_head(_batch(with_head, torch.zeros(2, 9, dtype=torch.long)))


def test_the_head_trains_with_the_qformer_and_is_a_training_aid(tiny_root):
    model = _model(tiny_root, cell_classes=5)
    assert model.cell_head.weight.requires_grad
    assert all(name.startswith(model.training_aid_prefixes)
               for name, _ in model.named_parameters() if "cell_head" in name)


def test_a_checkpoint_without_the_head_loads_and_a_partial_head_is_refused(tiny_root, tmp_path):
    from tinygpt.common.checkpoint import save_weights
    from tinygpt.models.weights import load_checkpoint
    from tinygpt.models.weights.report import WeightLoadError

    source = _model(tiny_root, cell_classes=5)
    trained = {n: p.detach() for n, p in source.named_parameters() if p.requires_grad}
    final = {n: t for n, t in trained.items() if not n.startswith(source.training_aid_prefixes)}
    assert set(trained) - set(final) == {"cell_head.weight", "cell_head.bias"}
    save_weights(final, str(tmp_path / "final.safetensors"))  # what the runner's checkpoint_final holds
    target = _model(tiny_root, cell_classes=5)
    report = load_checkpoint(target, str(tmp_path / "final.safetensors"))
    assert "training aids" in report.kept
    assert torch.equal(target.query_tokens, source.query_tokens)
    save_weights({**final, "cell_head.weight": trained["cell_head.weight"]}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightLoadError, match="cell_head.bias"):
        load_checkpoint(_model(tiny_root, cell_classes=5), str(tmp_path / "partial.safetensors"))
