"""Answer questions about an image with onnxruntime alone: no torch (`python -m tinygpt.export
--format onnx` wrote the directory).

    from tinygpt.onnx_runtime import OnnxModel
    model = OnnxModel("exported/tiny-onnx")
    model.answer(PIL.Image.open("photo.png"), "[vqa] what colour is the circle?")

The directory holds `vision.onnx` (images [B,3,S,S] -> visual tokens [B,Q,D]), `llm_step.onnx`
(inputs_embeds, attention_mask, past keys, past values -> logits, keys, values: one graph for the
prefill and every decode step, the KV cache as [layers, B, kv heads, T, head_dim] tensors),
`embed_tokens.npy`, the tokenizer and `onnx.json` (image size and normalisation, prompt style).
Prompts are laid out by the same protocol as the torch model (conversation/protocol.py, torch-free);
decoding is greedy, stops at the trained end marker and cuts the answer there.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .common.errors import UserError
from .conversation.protocol import Dialogue, PromptStyle, encode

MANIFEST = "onnx.json"


class _Ids:
    def __init__(self, ids):
        self.input_ids = ids


class Tokenizer:
    """The exported tokenizer.json through `tokenizers` (no torch), with the few attributes the
    protocol reads."""

    def __init__(self, directory: str, bos: str, eos: str, pad: str):
        from tokenizers import Tokenizer as Fast

        self._tok = Fast.from_file(os.path.join(directory, "tokenizer.json"))
        self.bos_token, self.eos_token = bos, eos
        self.bos_token_id, self.eos_token_id = self._tok.token_to_id(bos), self._tok.token_to_id(eos)
        self.pad_token_id = self._tok.token_to_id(pad)

    def __call__(self, text: str, add_special_tokens: bool = False) -> _Ids:
        return _Ids(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


class OnnxModel:
    def __init__(self, directory: str, threads: Optional[int] = None):
        import onnxruntime as ort

        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
            self.manifest = json.load(f)
        if "kv_cache" not in self.manifest:
            raise UserError(f"{os.path.join(directory, MANIFEST)}: no 'kv_cache' (written by an older tinygpt, for "
                            "Phi's cache layout only); export the model again with `python -m tinygpt.export "
                            "--format onnx`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.vision = ort.InferenceSession(os.path.join(directory, "vision.onnx"), options)
        self.step = ort.InferenceSession(os.path.join(directory, "llm_step.onnx"), options)
        self.embed = np.load(os.path.join(directory, "embed_tokens.npy"))
        m = self.manifest
        self.style = PromptStyle(**m["style"])
        self.tokenizer = Tokenizer(directory, m["bos_token"], m["eos_token"], m["pad_token"])

    def preprocess(self, image) -> np.ndarray:
        """PIL image -> [3, S, S] float32: BLIP-2's eval transform (bicubic resize of the whole
        image, /255, the tower's mean/std from the manifest), as processors/image.py computes it."""
        from PIL import Image

        size = self.manifest["image_size"]
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        mean, std = (np.asarray(self.manifest[k], dtype=np.float32) for k in ("mean", "std"))
        return ((pixels - mean) / std).transpose(2, 0, 1)

    def visual_tokens(self, images: np.ndarray) -> np.ndarray:
        return self.vision.run(None, {"images": images.astype(np.float32)})[0]

    def prompt(self, visual: np.ndarray, question: str) -> tuple[np.ndarray, np.ndarray]:
        """One question about one image -> (inputs_embeds [1, T, D], attention mask [1, T])."""
        layout = encode(self.style, self.tokenizer, Dialogue.single(self.style.place_image(question)),
                        visual.shape[1])
        embeds = self.embed[np.asarray(layout.ids)].astype(np.float32)
        embeds[layout.image_at:layout.image_at + visual.shape[1]] = visual[0]
        return embeds[None], np.asarray([layout.attention], dtype=np.int64)

    def empty_cache(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The (keys, values) of no position: [layers, batch, heads, 0, dim], the layout onnx.json records."""
        kv = self.manifest["kv_cache"]
        return tuple(np.zeros((kv["layers"], batch, kv["heads"], 0, kv[dim]), dtype=np.float32)
                     for dim in ("key_dim", "value_dim"))

    def logits(self, embeds: np.ndarray, mask: np.ndarray, past: tuple) -> tuple:
        logits, keys, values = self.step.run(None, {"embeds": embeds, "mask": mask, "past_k": past[0],
                                                    "past_v": past[1]})
        return logits, (keys, values)

    def answer(self, image, question: str, max_new_tokens: int = 30) -> str:
        return self.style.clean_answer(self.tokenizer.decode(self.greedy_ids(image, question, max_new_tokens)))

    def greedy_ids(self, image, question: str, max_new_tokens: int = 30) -> list[int]:
        """The generated token ids, greedy, up to the end marker (included) or EOS (not)."""
        visual = self.visual_tokens(self.preprocess(image)[None])
        embeds, mask = self.prompt(visual, question)
        past, out = self.empty_cache(), []
        eos, end = self.tokenizer.eos_token_id, self.style.end_sym
        for step in range(max_new_tokens):
            logits, past = self.logits(embeds, mask, past)
            scores = logits[0, -1]
            if step == 0 and eos is not None:
                scores = scores.copy()
                scores[eos] = -np.inf  # at least one token, as generate's min_new_tokens=1
            token = int(scores.argmax())
            if token == eos:
                break
            out.append(token)
            if end and end in self.tokenizer.decode(out):
                break
            embeds, mask = self.next_inputs(token, mask)
        return out

    def next_inputs(self, token: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The decode step's inputs after `token`: its embedding [1, 1, D] and the mask one longer."""
        return (self.embed[[token]][None].astype(np.float32),
                np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1))
