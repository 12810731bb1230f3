"""Dataset builders (registered by the names YAML uses), mixing by sample_ratio, skip accounting.

Importing this package registers every builder: laion, cc_sbu, cc_sbu_align, coco_caption, textcaps,
llava_detail, llava_reason, llava_conversation, multitask_conversation, unnatural_instruction,
refcoco(p/g), invrefcoco(p/g), refvg, flickr_grounded_caption, flickr_caption_to_phrase,
flickr_object_to_phrase, coco_vqa, ok_vqa, aok_vqa, gqa (see dataset/README.md for the files each reads);
and the formats users bring (docs/own-data.md): vqa_jsonl, llava_mix, llava_mix_text, sharegpt4v,
imagefolder, parquet, arrow (the last three need the `datasets` library: extra `data`).
"""
from tinygpt.datasets import captions, conversation, grounding, skips, vqa, webdata  # noqa: F401  (registration)
from tinygpt.datasets import hf_formats, jsonl_vqa, llava_mix  # noqa: F401  (registration: a user's own data, docs/own-data.md)
from tinygpt.datasets.base import Builder, DataError, ImageUnreadable, RecordDataset
from tinygpt.datasets.collate import collate
from tinygpt.datasets.loader import ResumableSampler, build_dataset, build_loader, build_train_loader
from tinygpt.datasets.mixing import MultiSourceLoader
from tinygpt.datasets.webdata import ShardStream

__all__ = [
    "Builder", "DataError", "ImageUnreadable", "MultiSourceLoader",
    "RecordDataset", "ResumableSampler", "ShardStream", "build_dataset", "build_loader", "build_train_loader",
    "collate", "skips",
]
