"""`python -m tinygpt.doctor` on this (CPU-only) machine."""
from __future__ import annotations

import json
import textwrap

import pytest

from tinygpt import doctor


@pytest.fixture(scope="module")
def cpu_report() -> dict:
    return doctor.collect()


def test_json_reports_cpu_gloo_fp32(capsys):
    assert doctor.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    env = report["environment"]
    assert (env["device"], env["backend"], env["autocast_dtype"]) == ("cpu", "gloo", "fp32")
    assert env["error"] is None
    assert set(report) == {"environment", "compute", "int8", "bitsandbytes", "java", "packages", "config"}
    assert report["config"] is None


def test_text_report_names_the_essentials(capsys):
    assert doctor.main([]) == 0
    text = capsys.readouterr().out
    for word in ("torch", "torch_npu", "CANN", "would use: device cpu, backend gloo", "bitsandbytes",
                 "java", "gradio", "playwright"):
        assert word in text, word


def test_optional_tools_are_reported_not_required(cpu_report):
    bnb = cpu_report["bitsandbytes"]
    assert set(bnb) >= {"version", "imports", "int8_matmul"}
    if bnb["imports"] and bnb["int8_matmul"] is not None and not bnb.get("error"):
        assert bnb["max_abs_error"] < 0.5
    assert isinstance(cpu_report["java"]["ok"], bool)
    assert set(cpu_report["packages"]) == {"gradio", "playwright", "playwright_chromium"}


def test_config_missing_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "phi2").mkdir()
    (tmp_path / "phi2" / "config.json").write_text("{}")
    (tmp_path / "eva.pth").write_bytes(b"")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "s-000.tar").write_bytes(b"")  # s-001.tar is missing
    cfg = tmp_path / "stage1.yaml"
    cfg.write_text(textwrap.dedent("""\
        model:
          vision: {weights: eva.pth}
          qformer: {weights: blip2.pth}
          llm: {hf_config: phi2, weights: phi2/model.safetensors, tokenizer: phi2}
          ckpt: [out/stage1.pth]
        datasets:
          laion:
            storage: ["shards/s-{000..001}.tar", "https://example.invalid/x.tar"]
            image_root: images
        run: {device: cpu}
        """))
    assert doctor.main(["--cfg-path", str(cfg), "--json"]) == 1  # missing weights: it cannot run
    report = json.loads(capsys.readouterr().out)["config"]
    assert report["error"] is None
    missing = {(g["key"], g["missing"], g["of"], g["first"], g["fatal"]) for g in report["missing"]}
    assert missing == {
        ("model.qformer.weights", 1, 1, "blip2.pth", True),
        ("model.llm.weights", 1, 1, "phi2/model.safetensors", True),
        ("model.ckpt[0]", 1, 1, "out/stage1.pth", True),
        ("datasets.laion.storage[0]", 1, 2, "shards/s-001.tar", False),  # a gap in a range still runs
        ("datasets.laion.image_root", 1, 1, "images", True),
    }
    remote = [r for r in report["files"] if r["path"].startswith("https://")]
    assert remote and remote[0]["exists"] is None  # cannot be checked, not called missing
    assert doctor.main(["--cfg-path", str(cfg)]) == 1
    text = capsys.readouterr().out
    assert "MISSING model.ckpt[0]: missing: out/stage1.pth" in text and "5 missing" in text
    assert "some missing datasets.laion.storage[0]: 1 of 2 missing, e.g. shards/s-001.tar" in text
    assert "cannot run as it is" in text


def test_many_missing_shards_are_one_line_and_a_runnable_config_exits_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00007.tar").write_bytes(b"")
    cfg = tmp_path / "stage1.yaml"
    (tmp_path / "phi2").mkdir()
    cfg.write_text('model: {llm: {hf_config: phi2, tokenizer: phi2}}\n'
                   'datasets:\n  laion:\n    storage: ["shards/{00000..10488}.tar"]\nrun: {device: cpu}\n')
    assert doctor.main(["--cfg-path", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "some missing datasets.laion.storage[0]: 10488 of 10489 missing, e.g. shards/00000.tar" in text
    assert len(text.splitlines()) < 40


def test_bad_config_is_reported_and_exits_non_zero(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("run: {not_a_key: 1}\nmodel: {llm: {hf_config: x}}\n")
    assert doctor.main(["--cfg-path", str(cfg)]) == 1
    assert "ERROR" in capsys.readouterr().out
    assert doctor.main(["--cfg-path", str(tmp_path / "absent.yaml"), "--json"]) == 1
    assert "not found" in json.loads(capsys.readouterr().out)["config"]["error"]


def test_says_what_each_component_computes_in_and_why(tmp_path, monkeypatch, capsys):
    from tinygpt.common import device as devices

    # A CPU where bf16 matmuls are slow from 16 rows on (an AVX2-only one, as the probe sees it).
    monkeypatch.setattr(devices, "_matmul_probe", lambda dtype: {
        m: {"native_ms": 10.0 if m >= 16 else 1.0, "upcast_ms": 1.0 if m >= 16 else 2.0} for m in (1, 4, 16, 64)})
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(textwrap.dedent("""\
        model:
          vision: {image_size: 448, dtype: bf16}
          llm: {hf_config: phi2, dtype: bf16}
        run: {device: cpu}
        """))
    assert doctor.main(["--cfg-path", str(cfg)]) == 1  # phi2 is not there: it cannot run, but it says why
    text = capsys.readouterr().out
    assert "compute dtype on cpu, bf16 weights: fp32 (weights upcast on the fly) from 16 rows, bf16 below" in text
    assert "16 rows 10.00 / 1.00 ms" in text  # the figures it was decided from
    assert "visual_encoder (bf16 weights, 1025 rows/image): fp32 -- bf16 matmuls are slow here" in text
    assert "llm (bf16 weights): fp32 from 16 rows (prefill), bf16 below (decoding up to 15 sequences)" in text
    assert doctor.main(["--cfg-path", str(cfg), "--json"]) == 1
    rows = {r["component"]: r for r in json.loads(capsys.readouterr().out)["compute"]["components"]}
    assert (rows["qformer"]["storage"], rows["qformer"]["rows_per_image"], rows["qformer"]["compute"]) == \
        ("bf16", 32, "fp32")


def test_reports_int8_quantization_and_what_the_config_quantizes(tmp_path, capsys):
    cfg = tmp_path / "chat.yaml"
    cfg.write_text("model:\n  llm: {hf_config: phi2, quantize: int8}\nrun: {device: cpu}\n")
    assert doctor.main(["--cfg-path", str(cfg), "--json"]) == 1  # phi2 is absent: it says so, and what runs in int8
    int8 = json.loads(capsys.readouterr().out)["int8"]
    assert int8["ok"] is True and 0 < int8["relative_error"] < 0.05  # a real int8 matmul ran
    assert int8["config"] == {"llm": "int8", "vision": "none"}
    assert doctor.main(["--cfg-path", str(cfg)]) == 1
    assert "[ok] quantize: int8 (torch dynamic quantized Linear" in capsys.readouterr().out
