"""Mixing by sample_ratio: proportions, determinism, epochs, exact resume; collate; the sampler."""
import io
import json
import random
import tarfile

import pytest
import torch
from PIL import Image

from tinygpt.common.config import DatasetConfig, ProcessorConfig
from tinygpt.common.registry import registry
from tinygpt.datasets import MultiSourceLoader, RecordDataset, ResumableSampler, build_loader, collate, skips


def toy_sample(record, rng: random.Random) -> dict:
    # The per-sample generator drives the "augmentation", so resume must reproduce it too.
    return {"image": torch.full((3, 2, 2), float(record)) + rng.random(), "answer": f"r{record}"}


def toy_loader(n, batch_size, name="toy", num_workers=0, seed=0):
    return build_loader(RecordDataset(name, list(range(n)), toy_sample, seed), batch_size, name=name,
                        num_workers=num_workers, seed=seed)


def shard_stream(tmp_path, n_shards=3, per_shard=5):
    for k in range(n_shards):
        with tarfile.open(tmp_path / f"{k:05d}.tar", "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (k * 40, i * 40, 0)).save(buf, "PNG")
                for ext, data in (("png", buf.getvalue()), ("json", json.dumps({"caption": f"s{k}-{i}"}).encode())):
                    info = tarfile.TarInfo(f"{k}{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    cfg = DatasetConfig(builder="laion", storage=[str(tmp_path / "{00000..00002}.tar")],
                        vis_processor=ProcessorConfig(name="blip2_image_train", image_size=8, min_scale=0.5))
    stream = registry.get("dataset", "laion")(cfg, name="stream", seed=1).build()
    stream.shuffle_buffer = 4
    return stream


def test_sources_are_drawn_in_proportion_to_ratio():
    loader = MultiSourceLoader([("a", toy_loader(8, 2, "a"), 1.0), ("b", toy_loader(8, 2, "b"), 3.0)], seed=0)
    picks = [loader.next_with_source()[0] for _ in range(4000)]
    assert 0.22 < picks.count("a") / 4000 < 0.28
    assert loader.state_dict()["sources"]["a"]["drawn"] == picks.count("a")


def test_sequence_is_deterministic_and_seed_dependent():
    def run(seed):
        loader = MultiSourceLoader([("a", toy_loader(6, 2, "a"), 2), ("b", toy_loader(6, 3, "b"), 1)], seed=seed)
        return [(name, batch["answer"]) for name, batch in (loader.next_with_source() for _ in range(30))]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_exhausted_source_starts_a_new_epoch_in_a_new_order():
    loader = MultiSourceLoader([("a", toy_loader(6, 3), 1.0)], seed=0)
    answers = [tuple(next(loader)["answer"]) for _ in range(6)]
    epoch0, epoch1 = sorted(answers[0] + answers[1]), sorted(answers[2] + answers[3])
    assert epoch0 == epoch1 == [f"r{i}" for i in range(6)]
    assert answers[:2] != answers[2:4]  # reshuffled
    assert loader.state_dict()["sources"]["a"] == {"drawn": 6, "epoch": 2, "in_epoch": 2}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tmp_path, workers):
    def make():
        return MultiSourceLoader([
            ("map", toy_loader(10, 3, "map", num_workers=workers), 2.0),
            ("stream", build_loader(shard_stream(tmp_path), 2, num_workers=workers), 1.0),
            ("plain", [{"answer": [f"p{i}"]} for i in range(4)], 1.0),  # no seek support: replayed
        ], seed=11)

    first = make()
    for _ in range(9):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # must survive a JSON round trip
    expected = [next(first) for _ in range(12)]
    resumed = make()
    resumed.load_state_dict(state)
    for want in expected:
        _same(next(resumed), want)


def test_bad_ratio_and_empty_source_are_reported():
    from tinygpt.datasets.base import DataError

    with pytest.raises(ValueError, match=r"datasets\.b\.sample_ratio"):
        MultiSourceLoader([("a", [1], 1.0), ("b", [1], 0.0)])
    loader = MultiSourceLoader([("empty", [], 1.0)])
    with pytest.raises(DataError, match="datasets.empty: no batch in a whole epoch"):
        next(loader)


def test_collate_stacks_tensors_keeps_strings_and_carries_skips():
    s = {"image": torch.zeros(3, 4, 4), "answer": "a", "instruction_input": "q"}
    skips.record("ds", "unreadable image", "x.jpg")
    batch = collate([s, dict(s, answer="b")])
    assert batch["image"].shape == (2, 3, 4, 4) and batch["answer"] == ["a", "b"]
    assert batch[skips.SKIPS_KEY] == [("ds", "unreadable image", "x.jpg")]
    counter = skips.SkipCounter()
    counter.absorb(batch)
    assert skips.SKIPS_KEY not in batch and counter.counts() == {"ds": {"unreadable image": 1}}
    assert skips.SKIPS_KEY not in collate([s])
    with pytest.raises(ValueError, match="keys"):
        collate([s, {"answer": "x"}])


def test_sampler_shards_ranks_and_starts_mid_epoch():
    parts = [list(ResumableSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(p) == 3 for p in parts) and len(set(sum(parts, []))) == 9
    s = ResumableSampler(10, seed=1)
    full = list(s)
    s.set_start(4)
    assert len(s) == 6 and list(s) == full[4:] and list(s) == full
    s.set_epoch(1)
    assert list(s) != full and sorted(s) == sorted(full)


def test_unreadable_images_are_counted_once_per_epoch_and_no_sample_is_repeated():
    from tinygpt.datasets.base import ImageUnreadable

    bad = {2, 3, 4, 9, 13}  # three in a row among them

    def sample(record, rng):
        if record in bad:
            raise ImageUnreadable("unreadable image", f"img{record}.jpg")
        return {"image": torch.zeros(3, 2, 2), "answer": f"r{record}"}

    n, batch = 16, 4
    loader = MultiSourceLoader([("toy", build_loader(RecordDataset("toy", list(range(n)), sample), batch,
                                                     name="toy"), 1.0)])
    seen = []
    while loader.drawn[0] < 2 * n // batch:  # two whole epochs of loader batches
        seen.append(next(loader)["answer"])
    answers = [a for b in seen for a in b]
    good = [f"r{i}" for i in range(n) if i not in bad]
    # Each good record once per epoch, never a neighbour served in a bad one's place.
    assert sorted(answers[:len(good)]) == sorted(good)
    assert sorted(answers[len(good):2 * len(good)]) == sorted(good)
    assert loader.skips.counts() == {"toy": {"unreadable image": 10}}  # 5 bad files x 2 epochs


class BadAt:
    """make_sample for RecordDataset: records in `bad` have an unreadable image."""

    def __init__(self, prefix, bad):
        self.prefix, self.bad = prefix, bad

    def __call__(self, record, rng):
        from tinygpt.datasets.base import ImageUnreadable

        if record in self.bad:
            raise ImageUnreadable("unreadable image", f"{self.prefix}{record}.jpg")
        return {"image": torch.zeros(3, 2, 2), "answer": f"r{record}"}


def test_two_loaders_in_one_process_keep_their_own_skip_counts():
    def mixed(name, bad, workers):
        source = build_loader(RecordDataset(name, list(range(8)), BadAt(name, bad)), 4, name=name, num_workers=workers)
        return MultiSourceLoader([(name, source, 1.0)])

    a, b = mixed("a", {1}, 0), mixed("b", {2, 5, 6}, 1)  # in-process and in a worker
    for _ in range(2):  # one epoch each, interleaved
        next(a), next(b)
    assert a.skips.counts() == {"a": {"unreadable image": 1}}
    assert b.skips.counts() == {"b": {"unreadable image": 3}}
    assert "a1.jpg" in a.skips.report() and "b2.jpg" not in a.skips.report()


def test_a_source_without_one_readable_image_is_an_error():
    from tinygpt.datasets.base import DataError, ImageUnreadable

    def sample(record, rng):
        raise ImageUnreadable("missing image", f"img{record}.jpg")

    loader = MultiSourceLoader([("dead", build_loader(RecordDataset("dead", list(range(8)), sample), 4,
                                                      name="dead"), 1.0)])
    with pytest.raises(DataError, match="datasets.dead: a whole epoch without one readable sample; "
                                        "data: skipped 8 item"):
        next(loader)
