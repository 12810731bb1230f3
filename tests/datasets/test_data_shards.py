"""laion / cc_sbu webdataset streams: formats, sharding over workers, corrupt shards and images."""
import io
import json
import tarfile

import pytest
from PIL import Image
from torch.utils.data import DataLoader

import tinygpt.datasets  # noqa: F401
from tinygpt.common.config import Config, ConfigError, DatasetConfig, ProcessorConfig
from tinygpt.common.registry import registry
from tinygpt.datasets import build_loader, build_train_loader, collate, skips


def _jpg_bytes(color):
    buf = io.BytesIO()
    Image.new("RGB", (24, 18), color).save(buf, "JPEG")
    return buf.getvalue()


def write_shard(path, start, n, caption_as="json", bad_image_at=None, cells=None):
    """An img2dataset-style shard: <key>.jpg + <key>.json {"caption"} (or <key>.txt); `cells(i)`
    gives sample i's json a "cells" entry (the synthetic shards' per-cell class ids)."""
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            key = f"{i:09d}"
            files = {"jpg": b"garbage" if i == bad_image_at else _jpg_bytes((i * 7 % 255, 10, 10))}
            if caption_as == "json":
                meta = {"caption": f"Caption {i}.", "key": key, **({"cells": cells(i)} if cells else {})}
                files["json"] = json.dumps(meta).encode()
            else:
                files["txt"] = f"Caption {i}.".encode()
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def dataset_config(name, storage, **kw):
    return DatasetConfig(builder=name, storage=storage,
                         vis_processor=ProcessorConfig(name="blip2_image_train", image_size=14, min_scale=1.0), **kw)


def build(name, storage, **kw):
    cfg = dataset_config(name, storage, **kw)
    return registry.get("dataset", name)(cfg, name=name, seed=5).build()


def captions(stream):
    return [s["answer"] for s in stream]


def test_json_and_txt_captions(tmp_path):
    a = write_shard(tmp_path / "00000.tar", 0, 3)
    b = write_shard(tmp_path / "00001.tar", 3, 3, caption_as="txt")
    stream = build("laion", [a, b])
    out = list(stream)
    assert sorted(s["answer"] for s in out) == [f"caption {i}" for i in range(6)]
    assert out[0]["image"].shape == (3, 14, 14) and set(out[0]) == {"image", "answer"}
    assert skips.drain() == []  # nothing skipped


def test_cells_become_cell_labels_and_malformed_cells_are_skipped(tmp_path):
    good = write_shard(tmp_path / "00000.tar", 0, 3, cells=lambda i: [i, 0, 7])
    bad = write_shard(tmp_path / "00001.tar", 3, 2, cells=lambda i: [1, "red"] if i == 3 else -1)
    out = sorted(build("laion", [good, bad]), key=lambda s: s["answer"])
    assert [s["answer"] for s in out] == ["caption 0", "caption 1", "caption 2"]
    assert [s["cell_labels"].tolist() for s in out] == [[0, 0, 7], [1, 0, 7], [2, 0, 7]]
    assert skips.SkipCounter(skips.drain()).counts()["laion"] == {"'cells' is not a list of class ids": 2}


def test_storage_forms_and_missing_shards(tmp_path):
    for k in range(3):
        write_shard(tmp_path / f"{k:05d}.tar", 10 * k, 2)
    assert len(captions(build("cc_sbu", [str(tmp_path)]))) == 6  # a directory
    assert len(captions(build("cc_sbu", [str(tmp_path / "0000[01].tar")]))) == 4  # a glob
    stream = build("cc_sbu", [str(tmp_path / "{00000..00004}.tar")])  # a brace range with two gaps
    assert len(captions(stream)) == 6
    assert skips.SkipCounter(skips.drain()).counts()["cc_sbu"]["missing shard"] == 2
    with pytest.raises(ConfigError, match=r"datasets\.cc_sbu\.storage: shard .*99\.tar does not exist"):
        build("cc_sbu", [str(tmp_path / "99.tar")])


def test_the_train_loader_counts_what_its_builders_skipped_at_start_up(tmp_path):
    for k in range(2):
        write_shard(tmp_path / f"{k:05d}.tar", 10 * k, 2)
    cfg = Config(datasets={"cc_sbu": dataset_config("cc_sbu", [str(tmp_path / "{00000..00002}.tar")])})
    cfg.run.batch_size_train, cfg.run.num_workers = 2, 0
    loader = build_train_loader(cfg)
    assert loader.skips.counts() == {"cc_sbu": {"missing shard": 1}}
    next(loader), next(loader)
    assert loader.skips.counts() == {"cc_sbu": {"missing shard": 1}}  # counted once, not again per batch
    assert "00002.tar" in loader.skips.report()


def test_corrupt_shards_and_images_are_skipped_and_counted(tmp_path):
    good = write_shard(tmp_path / "00000.tar", 0, 4, bad_image_at=2)
    garbage = tmp_path / "00001.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 50)
    whole = write_shard(tmp_path / "full.tar", 10, 6)
    truncated = tmp_path / "00002.tar"
    truncated.write_bytes(open(whole, "rb").read()[:3400])  # inside the 2nd sample's image data
    got = captions(build("laion", [good, str(garbage), str(truncated)]))
    assert {"caption 0", "caption 1", "caption 3"} <= set(got) and "caption 2" not in got
    counter = skips.SkipCounter(skips.drain())
    counts = counter.counts()["laion"]
    assert counts["unreadable image"] == 1
    assert counts["corrupt or unreadable shard"] == 2
    assert "00001.tar" in counter.report()


def test_workers_split_shards_and_ship_skips_to_the_main_process(tmp_path):
    shards = [write_shard(tmp_path / f"{k:05d}.tar", 10 * k, 5, bad_image_at=10 * k) for k in range(4)]
    stream = build("laion", shards)
    loader = build_loader(stream, 2, num_workers=2, drop_last=False)
    seen, counter = [], skips.SkipCounter()
    for batch in loader:
        counter.absorb(batch)
        seen += batch["answer"]
    assert sorted(seen) == sorted(f"caption {10 * k + i}" for k in range(4) for i in range(1, 5))
    assert counter.counts()["laion"]["unreadable image"] == 4  # counted in workers, reported here
    assert skips.drain() == []  # nothing recorded in this process


def test_fewer_shards_than_readers_split_by_sample(tmp_path):
    shard = write_shard(tmp_path / "00000.tar", 0, 7)
    stream = build("laion", [shard])
    parts = []
    for rank in range(3):
        stream.set_distributed(rank, 3)
        parts.append(captions(stream))
    assert sorted(sum(parts, [])) == sorted(f"caption {i}" for i in range(7))
    assert all(parts)


def test_epochs_reshuffle_reproducibly(tmp_path):
    shards = [write_shard(tmp_path / f"{k:05d}.tar", 10 * k, 6) for k in range(3)]
    stream = build("laion", shards)
    stream.shuffle_buffer = 4
    first = captions(stream)
    assert captions(stream) == first
    stream.set_epoch(1)
    assert captions(stream) != first and sorted(captions(stream)) == sorted(first)


def test_skip_batches_fast_forwards_without_decoding(tmp_path):
    shards = [write_shard(tmp_path / f"{k:05d}.tar", 10 * k, 6) for k in range(2)]
    stream = build("laion", shards)
    full = captions(DataLoader(stream, batch_size=None))
    stream.skip_batches(2, 3, 1)  # two batches of three
    assert captions(stream) == full[6:]
    assert captions(stream) == full  # the skip applied to one pass only


def test_prompts_give_an_instruction(tmp_path):
    shard = write_shard(tmp_path / "00000.tar", 0, 2)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Describe the picture.\n")
    s = next(iter(build("laion", [shard], prompts_path=str(prompts))))
    assert s["instruction_input"] == "<Img><ImageHere></Img> Describe the picture. "  # a caption set's wrap
    assert collate([s, s])["instruction_input"] == [s["instruction_input"]] * 2


def test_a_worker_that_serves_no_batch_still_reports_what_it_skipped(tmp_path):
    from tinygpt.datasets.base import DataError
    from tinygpt.datasets.mixing import MultiSourceLoader

    shard = write_shard(tmp_path / "00000.tar", 0, 3)
    bad = tmp_path / "bad.tar"
    with tarfile.open(shard) as src, tarfile.open(bad, "w") as out:  # every image replaced by garbage
        for member in src.getmembers():
            data = src.extractfile(member).read()
            member.size = len(b"garbage") if member.name.endswith(".jpg") else member.size
            out.addfile(member, io.BytesIO(b"garbage" if member.name.endswith(".jpg") else data))
    loader = build_loader(build("laion", [str(bad)]), 2, num_workers=1)
    with pytest.raises(DataError, match=r"datasets\.laion: .*skipped 3 item\(s\) laion: 3 x unreadable image"):
        next(MultiSourceLoader([("laion", loader, 1.0)]))


def test_skips_after_the_last_full_batch_reach_the_loader_from_a_worker(tmp_path):
    stream = build("laion", [write_shard(tmp_path / "00000.tar", 0, 5, bad_image_at=4)])
    stream.shuffle_buffer = 0  # the shard's order: the unreadable image comes after two full batches
    counter = skips.SkipCounter()
    seen = [s for batch in build_loader(stream, 2, num_workers=1) for s in counter.absorb(batch).get("answer", [])]
    assert len(seen) == 4
    assert counter.counts() == {"laion": {"unreadable image": 1}}
