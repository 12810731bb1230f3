"""One error policy for every entry point: a user error is one line naming the file (and key) on
stderr and exit status 2, never a traceback; a config that would train nothing is refused."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tiny import tiny_config
from tinygpt.common.config import ConfigError, load_config, to_yaml
from tinygpt.common.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
STAGE = str(ROOT / "train_configs" / "tiny" / "stage1.yaml")


@pytest.mark.parametrize("option, message", [
    ("run.iters_per_epoch=0", "key 'run.iters_per_epoch' is 0; it must be >= 1"),
    ("run.max_epoch=-1", "key 'run.max_epoch' is -1; it must be >= 1"),
    ("run.accum_grad_iters=0", "key 'run.accum_grad_iters' is 0"),
    ("run.init_lr=-1e-4", "key 'run.init_lr' is -0.0001; it must be > 0.0"),
    ("run.init_lr=.nan", "key 'run.init_lr' is nan"),
    ("run.log_every=0", "key 'run.log_every' is 0"),
    ("run.beta2=1.0", "key 'run.beta2' is 1.0; it must be >= 0.0 and < 1.0"),
    ("model.llm.lora.dropout=1.5", "key 'model.llm.lora.dropout'"),
    ("datasets.laion.batch_size=0", "key 'datasets.laion.batch_size' is 0"),
    # Every number, ranged or not: finite, 64-bit, and in its field's range.
    ("run.init_lr=.inf", "key 'run.init_lr' is inf; it must be a finite number (set by --options)"),
    ("run.weight_decay=.inf", "key 'run.weight_decay' is inf; it must be a finite number"),
    ("run.grad_clip=-.inf", "key 'run.grad_clip' is -inf; it must be a finite number"),
    ("model.qformer.cell_loss_weight=.nan", "key 'model.qformer.cell_loss_weight' is nan"),
    ("run.seed=" + "9" * 31, "key 'run.seed' is a 31-digit integer; it must fit in a 64-bit integer"),
    ("run.seed=4294967296", "key 'run.seed' is 4294967296; it must be >= 0 and <= 4294967295"),
    ("run.max_epoch=" + "9" * 20, "key 'run.max_epoch' is 99999999999999999999; it must fit in a 64-bit integer"),
    ("datasets.laion.vis_processor.image_size=0", "key 'datasets.laion.vis_processor.image_size' is 0"),
    ("datasets.laion.vis_processor.min_scale=0", "key 'datasets.laion.vis_processor.min_scale' is 0.0"),
    ("model.vision.width=0", "key 'model.vision.width' is 0"),
    ("run.seed=" + "9" * 5000, "--options run.seed: the value is not valid YAML"),
])
def test_configs_that_would_train_nothing_are_refused_naming_the_key(option, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(STAGE, [option])


def test_an_infinite_learning_rate_is_refused_by_train_py_before_anything_is_written(tmp_path, capsys):
    from tinygpt import training

    out = tmp_path / "run"
    assert training.main(["--cfg-path", STAGE, "--options", "run.init_lr=.inf", f"run.output_dir={out}"]) == 2
    one_line_error(capsys, "train.py", STAGE, "run.init_lr", "finite")
    assert not out.exists()


def test_an_empty_yaml_is_blamed_not_the_option(tmp_path, capsys):
    from tinygpt import training

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert training.main(["--cfg-path", str(empty), "--options", "run.seed=1"]) == 2
    one_line_error(capsys, "train.py", f"{empty}: the file is empty")
    # A key the file lacks but an option supplies is fine; one it lacks and no option gives is the file's.
    assert training.main(["--cfg-path", str(tmp_path / "missing.yaml")]) == 2
    capsys.readouterr()
    partial = tmp_path / "partial.yaml"
    partial.write_text("run: {seed: 3}\n")
    assert training.main(["--cfg-path", str(partial), "--options", "run.max_epoch=2"]) == 2
    one_line_error(capsys, "train.py", str(partial), "model.llm.hf_config")


def test_every_module_error_is_a_user_error():
    from tinygpt.common.device import DeviceError
    from tinygpt.datasets.base import DataError
    from tinygpt.evaluation import EvalInputError, MissingToolError
    from tinygpt.models.quantize import QuantizationError
    from tinygpt.models.weights import WeightLoadError
    from tinygpt.serve.main import StartupError

    for cls in (ConfigError, DeviceError, DataError, EvalInputError, MissingToolError, QuantizationError,
                WeightLoadError, StartupError):
        assert issubclass(cls, UserError), cls


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_error(capsys, prog: str, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{prog}: error: "), err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[-1], err[-1]


@pytest.fixture
def corrupt_ckpt_config(tmp_path, tiny_root):
    """A config whose second model.ckpt file is a corrupt .safetensors (as the tiny stage 4's lists)."""
    from tinygpt.models.build import build_model
    from tinygpt.models.weights import save_trainable

    cfg = tiny_config(tiny_root)
    good, bad = tmp_path / "stage2.safetensors", tmp_path / "stage3.safetensors"
    save_trainable(build_model(cfg, "cpu", load_weights=False), str(good))
    bad.write_bytes(good.read_bytes()[:40])  # cut inside the header
    cfg.model.ckpt = [str(good), str(bad)]
    cfg.datasets = {}
    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg))
    return str(path), str(bad)


def test_a_corrupt_checkpoint_is_one_line_naming_it_in_every_entry_point(corrupt_ckpt_config, capsys):
    from tinygpt import inspect as inspect_cli
    from tinygpt import training

    path, bad = corrupt_ckpt_config
    assert training.main(["--cfg-path", path]) == 2
    one_line_error(capsys, "train.py", bad)
    assert load_script("demo.py").main(["--cfg-path", path, "--cli", "--image", path]) == 2
    one_line_error(capsys, "demo.py", bad)
    # inspect builds on the meta device and reads no weights: the config itself is fine there.
    assert inspect_cli.main(["--cfg-path", path]) == 0


@pytest.mark.parametrize("change, words", [
    (lambda sd: (sd, {"prompt_style": "{not json"}), ["prompt_style metadata is not JSON"]),
    (lambda sd: (sd, {"prompt_style": '{"end_sym": 7}'}), ["'end_sym' is '7' (int); expected a str"]),
    (lambda sd: ({**sd, "projector.fc2.weight": sd["projector.fc2.weight"].int()}, {}),
     ["dtype mismatch", "projector.fc2.weight int32, model float32"]),
], ids=["style_not_json", "style_wrong_type", "int32_weight"])
def test_a_checkpoint_with_a_bad_record_or_weight_is_one_line_in_train_py(tmp_path, tiny_root, capsys, change, words):
    from safetensors.torch import load_file, save_file

    from tinygpt import training
    from tinygpt.models.build import build_model
    from tinygpt.models.weights import save_trainable

    cfg = tiny_config(tiny_root)
    good = tmp_path / "good.safetensors"
    save_trainable(build_model(cfg, "cpu", load_weights=False), str(good))
    tensors, metadata = change(load_file(str(good)))
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"format": "tinygpt-trainable", **metadata})
    cfg.model.ckpt = [str(bad)]
    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg))
    assert training.main(["--cfg-path", str(path)]) == 2
    one_line_error(capsys, "train.py", str(bad), *words)


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_prediction_file_in_another_encoding_is_one_line(tmp_path, capsys, encoding):
    from tinygpt.evaluation.score import main as score

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": []}))
    pred = tmp_path / "pred.json"
    pred.write_bytes(json.dumps([{"question_id": 1, "answer": "café"}], ensure_ascii=False).encode(encoding))
    assert score(["--benchmark", "vqav2", "--pred", str(pred), "--ann", str(ann)]) == 2
    one_line_error(capsys, "python -m tinygpt.evaluation.score", str(pred), "not UTF-8")
