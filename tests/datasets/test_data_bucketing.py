"""Length bucketing: same samples, less padding, deterministic, resumable; workers/pinning per device."""
import random

import torch

from tinygpt.common.config import Config, DatasetConfig
from tinygpt.datasets import RecordDataset, ResumableSampler, build_loader
from tinygpt.datasets.loader import BUCKET_WINDOW_BATCHES, build_train_loader, default_num_workers, worker_settings


def text_sample(record, rng: random.Random) -> dict:
    return {"image": torch.zeros(3, 2, 2), "answer": record["answer"], "index": record["i"]}


def dataset_of_lengths(n, seed=0):
    rng = random.Random(seed)
    return RecordDataset("lens", [{"i": i, "answer": "w" * rng.randint(1, 400)} for i in range(n)], text_sample)


def padding_waste(batches, lengths) -> float:
    """Padded characters / real characters over all batches (each batch pads to its longest)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return padded / real - 1


def test_record_lengths_count_text_characters():
    ds = RecordDataset("x", [("img.jpg", "abc", (("yes", 2),)), {"q": "hello", "turns": ["a", "bc"]}, 7], text_sample)
    assert ds.lengths == [len("img.jpg") + 3 + 3, 5 + 1 + 2, 0]


def test_bucketed_order_is_the_same_samples_with_less_padding():
    n, batch = 2000, 8
    lengths = dataset_of_lengths(n).lengths
    plain = list(ResumableSampler(n, seed=3))
    bucketed = list(ResumableSampler(n, seed=3, lengths=lengths, batch_size=batch))
    assert sorted(bucketed) == sorted(plain) and bucketed != plain
    as_batches = lambda order: [order[k:k + batch] for k in range(0, len(order) - batch + 1, batch)]  # noqa: E731
    waste_plain, waste_bucketed = padding_waste(as_batches(plain), lengths), padding_waste(as_batches(bucketed), lengths)
    assert waste_bucketed < 0.1 * waste_plain, (waste_plain, waste_bucketed)
    # Still a random draw: the first window's batches do not come out longest-first.
    firsts = [lengths[b[0]] for b in as_batches(bucketed)[:BUCKET_WINDOW_BATCHES]]
    assert firsts != sorted(firsts, reverse=True)


def test_bucketing_is_deterministic_per_epoch_and_resumes_mid_epoch():
    n, batch = 500, 4
    lengths = dataset_of_lengths(n).lengths
    s = ResumableSampler(n, seed=1, lengths=lengths, batch_size=batch)
    first = list(s)
    assert list(ResumableSampler(n, seed=1, lengths=lengths, batch_size=batch)) == first
    s.set_start(37 * batch)
    assert list(s) == first[37 * batch:]
    s.set_epoch(1)
    assert list(s) != first


def test_bucketing_keeps_ranks_disjoint_and_the_partial_batch_last():
    n, batch, world = 1003, 8, 2
    lengths = dataset_of_lengths(n).lengths
    parts = [list(ResumableSampler(n, seed=2, rank=r, world_size=world, lengths=lengths, batch_size=batch))
             for r in range(world)]
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) == len(parts[1]) == n // world
    # 501 per rank: 62 full batches, then the one leftover sample, which drop_last discards.
    per_rank = n // world
    full = per_rank // batch * batch
    order = parts[0]
    loader_batches = [order[k:k + batch] for k in range(0, full, batch)]
    assert all(len(b) == batch for b in loader_batches) and len(order) - full == per_rank % batch


def test_build_loader_batches_follow_the_bucketed_sampler():
    ds = dataset_of_lengths(400)
    loader = build_loader(ds, 8, name="lens", seed=5, group_by_length=True)
    batches = [b["index"] for b in loader]
    order = list(loader.sampler)
    assert [i for b in batches for i in b] == order
    spread = sum(max(ds.lengths[i] for i in b) - min(ds.lengths[i] for i in b) for b in batches) / len(batches)
    plain = [b["index"] for b in build_loader(ds, 8, name="lens", seed=5)]
    plain_spread = sum(max(ds.lengths[i] for i in b) - min(ds.lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < 0.2 * plain_spread


def test_train_loader_picks_workers_and_pinning_per_device(monkeypatch):
    cfg = Config(datasets={"a": DatasetConfig(), "b": DatasetConfig()})
    monkeypatch.setattr("tinygpt.datasets.loader.build_dataset", lambda name, cfg: dataset_of_lengths(64))
    assert cfg.run.num_workers is None  # the default: chosen per device
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    cpu = build_train_loader(cfg, device="cpu")
    cuda = build_train_loader(cfg, device=torch.device("cuda", 0))
    for mixed, workers, pinned in ((cpu, 4, False), (cuda, 8, True)):
        assert {(loader.num_workers, loader.pin_memory) for loader in mixed.loaders} == {(workers, pinned)}
    cfg.run.num_workers = 0
    assert {loader.num_workers for loader in build_train_loader(cfg, device="cuda").loaders} == {0}


def test_worker_policy_follows_cpus_ranks_and_device(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_num_workers(torch.device("cuda", 0)) == 7
    assert default_num_workers("cpu") == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_num_workers("cpu") == 0  # intra-op threads already use both cores
    assert default_num_workers(torch.device("cuda", 0)) == 1
    assert worker_settings(None, "cpu") == {"num_workers": 0, "pin_memory": False}
    assert worker_settings(3, torch.device("cuda", 0)) == {"num_workers": 3, "pin_memory": True}
