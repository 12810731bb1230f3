"""The registered TinyGPT-V model: encode images, splice them into the prompt, loss, generate.

    image [B,3,S,S] -> visual_encoder -> ln_vision -> qformer(query_tokens) -> projector
        -> [B, Q, D_llm] visual tokens, spliced into the prompt at `<ImageHere>` -> Phi-2 (+LoRA)

The same class runs every small backbone the config names (issue "any small backbone"): the tower
(`model.vision.kind`: EVA ViT-g, CLIP, SigLIP; `ln_vision` only where the recipe has it), the
connector (`model.connector.kind`: the Q-Former + TinyGPT-V's two linear layers, LLaVA's MLP, one
linear, a resampler; the non-Q-Former ones are the `projector` attribute) and the LLM
(`model.llm.family`: TinyGPT-V's Phi subclass, or any Hugging Face causal LM).

Architecture only: no file paths, no dataloaders, no torch.distributed (see build.py / weights.py).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import LogitsProcessorList, PretrainedConfig, RepetitionPenaltyLogitsProcessor

from ..common.config import ModelConfig
from ..common.registry import registry
from ..conversation.packing import pack_rows
from ..conversation.protocol import Dialogue, PromptStyle, encode_all, pad_rows, sample_dialogues
from . import components, sequences
from .components import Component
from .connectors import build_connector
from .llm import AUTO_FAMILY, build_llm, family_of, keep_norms_fp32, norm_weight_names
from .lora import inject_lora
from .projector import Projector
from .qformer import CELL_HEAD, build_qformer
from .sequences import splice_visual
from .vision import LN_VISION_EPS, build_vision_tower, n_patch_tokens, prefix_tokens, tower_features


@registry.register("model", "tinygpt_v")
class TinyGPTV(nn.Module):
    # The model's parts, once (models/components.py): what each is called, which weight-loading group
    # it is in, which config key says it trains, and which are towers or training aids.
    COMPONENTS = (
        Component("visual_encoder", "vision", "vision.train", tower=True),
        Component("ln_vision", "vision", "vision.train", tower=True),
        Component("qformer", "qformer", "qformer.train", tower=True),
        Component("query_tokens", "qformer", "qformer.train", tower=True),
        Component("projector", "projector", "train_projection"),
        Component("llm", "llm base", "llm.train"),
        # Training aid (QFormerConfig.cell_classes): resumed, never in checkpoint_final.
        Component(CELL_HEAD, "training aids", "qformer.train", aid=True),
    )

    def __init__(self, cfg: ModelConfig, llm_config: PretrainedConfig, tokenizer=None, source: str = "<config>"):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.visual_encoder = build_vision_tower(cfg.vision, source)
        d_vision = self.visual_encoder.config.hidden_size
        self.ln_vision = nn.LayerNorm(d_vision, eps=LN_VISION_EPS) if cfg.vision.ln_vision else None
        self.qformer = self.query_tokens = self.cell_head = None
        if cfg.connector.kind == "qformer":
            self.qformer, self.query_tokens = build_qformer(cfg.qformer, d_vision)
            self.projector = Projector(cfg.qformer.width, cfg.proj_mid_dim, llm_config.hidden_size)
            # Training aid (QFormerConfig.cell_classes), not used at inference.
            if cfg.qformer.cell_classes:
                self.cell_head = nn.Linear(cfg.qformer.width, cfg.qformer.cell_classes)
        else:
            self.projector = build_connector(cfg.connector, d_vision, llm_config.hidden_size, source)
        self.llm = build_llm(cfg.llm.family, llm_config)
        if cfg.llm.family == AUTO_FAMILY:
            keep_norms_fp32(self.llm)  # TinyGPT-V's Phi has fp32 norm classes of its own
        self.llm.get_output_embeddings().register_forward_pre_hook(_contiguous_input)
        # Which Linears carry LoRA (None without): recorded in checkpoints, shown by tinygpt.inspect.
        self.lora_targets = inject_lora(self.llm, cfg.llm.lora, family_of(self.llm), source)
        self.apply_trainable()

    # ------------------------------------------------------------------ what trains
    def apply_trainable(self) -> None:
        """Set requires_grad from the config (the YAML states what trains, not the code)."""
        components.apply_trainable(self)

    def frozen_towers(self) -> list[nn.Module]:
        return components.frozen_towers(self)

    def llm_norm_weight_names(self) -> list[str]:
        """The LLM's norm weights that train in fp32 with `model.llm.train_norms` (names inside `self.llm`)."""
        return norm_weight_names(self.llm)

    def train(self, mode: bool = True):
        # Frozen towers stay in eval mode (no dropout) even while the rest trains, as in BLIP-2.
        super().train(mode)
        for tower in self.frozen_towers():
            tower.eval()
        return self

    # ------------------------------------------------------------------ images
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> visual tokens [B, Q, D_llm]."""
        return self.project_queries(self.query_features(images))

    def query_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> what the connector's trainable part starts from (what the feature
        cache stores): Q-Former outputs [B, Q, D_qformer] with the `qformer` connector, else the
        tower's selected features [B, N, D_vision] (after `ln_vision` where the recipe has it)."""
        tower_dtype = next(self.visual_encoder.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.vision.train):
            feats = tower_features(self.visual_encoder, self.cfg.vision, images.to(tower_dtype))
            if self.ln_vision is not None:
                feats = self.ln_vision(feats.to(self.ln_vision.weight.dtype))
        if self.qformer is None:
            return feats
        queries = self.query_tokens.expand(feats.shape[0], -1, -1)
        # Gradients must pass through a frozen Q-Former when the tower below it trains.
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.cfg.qformer.train or self.cfg.vision.train)):
            out = self.qformer(query_embeds=queries, encoder_hidden_states=feats).last_hidden_state
        return out

    def project_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """`query_features`' output -> visual tokens [B, Q, D_llm]"""
        return self.projector(queries.to(next(self.projector.parameters()).dtype))

    # ------------------------------------------------------------------ text
    @property
    def style(self) -> PromptStyle:
        """The prompt style this model reads (template, end marker, image placement, lengths)."""
        return PromptStyle.from_config(self.cfg)

    @property
    def n_visual_tokens(self) -> int:
        """Visual tokens one image takes in the sequence (the Q-Former's queries, or what the
        connector makes of the tower's patch tokens)."""
        if self.qformer is not None:
            return self.cfg.qformer.num_query_tokens
        v = self.cfg.vision
        return self.projector.n_visual_tokens(n_patch_tokens(v.kind, v.image_size, v.patch_size, v.keep_cls,
                                                             prefix_tokens(self.visual_encoder, v.kind)))

    @property
    def max_positions(self) -> int:
        """The longest sequence the LLM can position (prompt + answer)."""
        return getattr(self.llm.config, "max_position_embeddings", None) or self.cfg.max_context_len

    @property
    def training_aid_prefixes(self) -> tuple[str, ...]:
        """Name prefixes of training aids: trained and resumed, never in checkpoint_final."""
        return components.aid_prefixes(type(self))

    def wrap(self, instruction: str) -> str:
        """An instruction (with `<Img><ImageHere></Img>`) in this stage's conversation template."""
        return self.style.wrap(instruction)

    def embed_inputs(self, dialogues: list[Dialogue | str], visual: torch.Tensor):
        """Assemble inputs_embeds [B, T, D], attention_mask [B, T] and labels [B, T] (-100 where not
        supervised) from the protocol's layouts (conversation/protocol.py).  A str is one instruction
        to answer (a single-turn Dialogue).  `visual` is [B, Q, D] (Q = 0: text only).  Dialogues
        still waiting for their last answer are generation prompts: no BOS, left padding; training
        dialogues are right-padded."""
        rows, generating = self.layouts(dialogues, visual.shape[1])
        return self.embed_layouts(rows, visual, left=generating)

    def embed_layouts(self, rows: list, visual: torch.Tensor, left: bool):
        """`embed_inputs` from layouts already encoded (protocol.encode; the serving scheduler encodes
        them off its model thread): inputs_embeds [B, T, D], attention_mask [B, T], labels [B, T]."""
        ids, labels, mask, starts = pad_rows(rows, self.tokenizer.pad_token_id, left=left)
        ids, labels, mask = (torch.tensor(x, dtype=torch.long) for x in (ids, labels, mask))
        embeds = splice_visual(self.llm.get_input_embeddings(), ids,
                               [(i, s) if s >= 0 else (-1, -1) for i, s in enumerate(starts)], visual)
        return embeds, mask.to(visual.device), labels.to(visual.device)

    def layouts(self, dialogues: list[Dialogue | str], n_query: int) -> tuple[list, bool]:
        """The protocol layout of each dialogue, and whether they are generation prompts."""
        if self.tokenizer is None:
            raise RuntimeError("this model was built without a tokenizer (model.llm.tokenizer is not set)")
        dialogues = [Dialogue.single(d) if isinstance(d, str) else d for d in dialogues]
        rows = encode_all(self.style, self.tokenizer, dialogues, n_query)
        generating = dialogues[0].generating
        if any(d.generating != generating for d in dialogues):
            raise ValueError("a batch mixes generation prompts and training samples")
        return rows, generating

    # ------------------------------------------------------------------ training
    def forward(self, samples: dict, pack_length: int = 0) -> dict:
        """The numbers a loss is made of; the task (tasks/image_text.py) reduces and weights them.

        samples: {"image": [B,3,S,S] (or "query_features" [B,Q,Dq], e.g. from the task's feature
        cache), "answer": list[str], "instruction_input": list[str] (optional), "cell_labels" [B,C]
        (optional; used when the model has a cell head)}; `pack_length`: see `answer_nll`.
        Returns {"answer_nll": [B] summed next-token NLL of each sample's answer tokens,
        "answer_tokens": [B] how many there are, "aux": {"cell": mean cell cross-entropy} (only the
        auxiliary losses this batch has)}."""
        queries = samples.get("query_features")
        if queries is None and "image" in samples:
            queries = self.query_features(samples["image"])
        if queries is not None:
            visual = self.project_queries(queries)
        else:  # a text-only batch (e.g. unnatural instructions): no visual tokens at all
            embed = self.llm.get_input_embeddings().weight
            visual = embed.new_zeros(len(samples["answer"]), 0, embed.shape[1])
        nll, count = self.answer_nll(visual, sample_dialogues(samples), pack_length)
        aux = {}
        cells = samples.get("cell_labels")
        if cells is not None and self.cell_head is not None and queries is not None:
            aux["cell"] = self._cell_loss(queries, cells)
        return {"answer_nll": nll, "answer_tokens": count, "aux": aux}

    def answer_nll(self, visual: torch.Tensor, dialogues: list[Dialogue | str],
                   pack_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per dialogue, the summed next-token NLL over its supervised (answer) tokens and their
        count: ([B], [B]); `visual` [B, Q, D_llm].  `pack_length` > 0 packs several samples into
        rows of that many tokens (conversation/packing.py; the same numbers).  Training, candidate
        ranking and the evaluators' answer losses all come through here (models/sequences.py)."""
        rows, generating = self.layouts(dialogues, visual.shape[1])
        if generating:
            raise ValueError("answer_nll needs every answer; got generation prompts")
        packed = pack_rows(rows, self.tokenizer.pad_token_id, pack_length)
        return sequences.answer_nll(self.llm, packed, visual, len(rows))

    def _cell_loss(self, queries: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of query k's predicted content class against cell k's label."""
        n_cells, n_queries = cells.shape[1], queries.shape[1]
        if n_cells > n_queries:
            raise ValueError(f"the batch's cell_labels name {n_cells} cells but model.qformer.num_query_tokens "
                             f"is {n_queries}: the cell loss needs one query per cell")
        logits = self.cell_head(queries[:, :n_cells])
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), cells.flatten().long())

    @torch.no_grad()
    def dialogue_losses(self, visual: torch.Tensor, dialogues: list[Dialogue | str]) -> torch.Tensor:
        """Mean answer-token NLL of each dialogue given its visual tokens [B, Q, D_llm]: [B]."""
        nll, count = self.answer_nll(visual, dialogues)
        return nll / count.clamp(min=1)

    @torch.no_grad()
    def answer_losses(self, images: torch.Tensor, instructions: list[str], answers: list[str]) -> torch.Tensor:
        """Mean NLL of each answer given its image and instruction: [B] (ranks IconQA candidates)."""
        return self.dialogue_losses(self.encode_images(images),
                                    [Dialogue.single(t, a) for t, a in zip(instructions, answers)])

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[str | Dialogue], *,
                 max_new_tokens: int = 300, num_beams: int = 1, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 0.9, repetition_penalty: float = 1.0,
                 length_penalty: float = 1.0, min_new_tokens: int = 1, streamer=None,
                 visual: torch.Tensor | None = None) -> list[str]:
        """Answer each prompt about its image.  A prompt is an instruction containing
        `<Img><ImageHere></Img>` (wrapped in the stage template) or a Dialogue whose last answer is
        None (the Chat's multi-turn history).  Batched with left padding and a KV cache; stops at
        the end marker the model was trained with (or EOS) and cuts the answer there.  `visual`:
        the images' visual tokens already encoded (`encode_images`; a Chat keeps its image's for
        the next turns), so `images` is not encoded again."""
        visual = self.encode_images(images) if visual is None else visual
        embeds, mask, _ = self.embed_inputs(list(prompts), visual)
        options = dict(
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
            length_penalty=length_penalty, min_new_tokens=min_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, streamer=streamer,
        )
        if repetition_penalty != 1.0:
            # Given as a processor: from inputs_embeds the ids it sees are the generated ones (what
            # TinyGPT-V penalises).  The `repetition_penalty` kwarg warns on every call and, for
            # left-padded rows, skips as many *generated* tokens as the row has padding, so an
            # answer would depend on its batch.
            options["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(repetition_penalty)])
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
        style = self.style
        if style.end_sym and style.end_sym != self.tokenizer.eos_token:
            options.update(stop_strings=[style.end_sym], tokenizer=self.tokenizer)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, **options)
        return [style.clean_answer(self.tokenizer.decode(row, skip_special_tokens=True)) for row in out]


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """lm_head pre-hook.  When generating, transformers hands the head `hidden[:, -1:, :]`, a
    non-contiguous [B, 1, H] view for B > 1; torch's CPU linear then takes a batched-matmul path that
    materialises B copies of the [vocab, H] weight (Phi-2 in bf16: +262 MB per row and ~1 s per
    prefill, torch 2.13).  A contiguous input takes the single-matmul path (training's
    labelled-positions-only logits, models/sequences.py, hand it such a view too)."""
    return (args[0].contiguous(), *args[1:])
