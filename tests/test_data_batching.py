"""Padding, collate, bucketing (measured on UD English EWT) and language-model stream batches."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    Batch,
    BucketSampler,
    StreamBatches,
    batch_loader,
    collate,
    count_padding,
    pad_sequences,
    read_conllu,
)
from rnnkit.data.batching import IGNORE_INDEX

torch.set_num_threads(1)
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
EWT_TRAIN = SHARED_DATA / "tagging" / "ud_english_ewt" / "en_ewt-ud-train.conllu"


def test_pad_sequences_keeps_values_and_lengths():
    padded, lengths = pad_sequences([[1, 2, 3], [4], [5, 6]])
    torch.testing.assert_close(padded, torch.tensor([[1, 2, 3], [4, 0, 0], [5, 6, 0]]))
    torch.testing.assert_close(lengths, torch.tensor([3, 1, 2]))
    features, _ = pad_sequences([torch.ones(2, 4), torch.ones(1, 4)], padding_value=-1.0)
    assert features.shape == (2, 2, 4) and features[1, 1].eq(-1).all()


def test_collate_classes_and_tags():
    batch = collate([([1, 2], 0), ([3], 1)])
    assert isinstance(batch, Batch)
    torch.testing.assert_close(batch.targets, torch.tensor([0, 1]))
    torch.testing.assert_close(batch.lengths, torch.tensor([2, 1]))
    tagged = collate([([1, 2, 3], [4, 5, 6]), ([7], [8])])
    torch.testing.assert_close(tagged.targets, torch.tensor([[4, 5, 6], [8, IGNORE_INDEX, -100]]))
    assert collate([([1], None)]).targets is None


def test_collate_rejects_scalars_and_empty():
    with pytest.raises(ValueError, match="time dimension"):
        collate([(3, 0)])
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])


def test_padding_promotes_dtypes_instead_of_truncating():
    """torch's pad_sequence copies into the first tensor's dtype; ints then floats must not
    truncate the floats (0.5 -> 0)."""
    batch = collate([([0, 1, 2], 0), ([0.5, 1.5], 1)])
    torch.testing.assert_close(batch.inputs, torch.tensor([[0.0, 1.0, 2.0], [0.5, 1.5, 0.0]]))
    padded, _ = pad_sequences([torch.tensor([1, 2]), np.array([0.25])])  # int64, float64
    torch.testing.assert_close(padded, torch.tensor([[1.0, 2.0], [0.25, 0.0]], dtype=torch.float64))
    tagged = collate([([1], [0.5]), ([2, 3], [1, 2])])
    torch.testing.assert_close(tagged.targets, torch.tensor([[0.5, -100.0], [1.0, 2.0]]))


def test_empty_inputs_are_rejected_by_index_and_empty_targets_pad():
    """An empty input (the layers reject length 0) is named; an empty target (a CTC
    transcript of silence) pads to all padding in the other targets' dtype."""
    with pytest.raises(ValueError, match=r"sample 0 of the batch has an empty input"):
        collate([([], 0), ([5, 6], 1)])
    with pytest.raises(ValueError, match=r"sample 2 of the batch has an empty input"):
        collate([(torch.ones(1, 4), 0), (torch.ones(2, 4), 1), (torch.zeros(0, 4), 2)])
    silent = collate([([0.1, 0.2], []), ([0.3], [4, 5])], target_padding_value=0)
    torch.testing.assert_close(silent.targets, torch.tensor([[0, 0], [4, 5]]))
    padded, lengths = pad_sequences([[], [7]], padding_value=-1)
    torch.testing.assert_close((padded, lengths), (torch.tensor([[-1], [7]]), torch.tensor([0, 1])))


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=300),
    batch_size=st.integers(1, 17),
    pool_batches=st.integers(1, 5),
    seed=st.integers(0, 3),
)
def test_bucket_sampler_covers_each_index_once(lengths, batch_size, pool_batches, seed):
    sampler = BucketSampler(lengths, batch_size, seed=seed, pool_batches=pool_batches)
    for _ in range(2):  # two epochs, two different orders, each complete
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        assert all(1 <= len(batch) <= batch_size for batch in batches)
        assert sum(len(batch) < batch_size for batch in batches) <= 1


def test_bucket_sampler_epochs_differ_and_repeat():
    sampler = BucketSampler(list(range(1, 200)), batch_size=8)
    first, second = list(sampler), list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize("world_size", [2, 3])
def test_bucket_sampler_shards_for_distributed_training(world_size):
    lengths = [n % 40 + 1 for n in range(203)]
    samplers = [
        BucketSampler(lengths, 10, rank=r, world_size=world_size) for r in range(world_size)
    ]
    shards = [list(sampler) for sampler in samplers]
    assert [len(shard) for shard in shards] == [len(samplers[0])] * world_size  # same count
    seen = [i for shard in shards for batch in shard for i in batch]
    assert set(seen) == set(range(203))  # together they cover every sample
    assert len(seen) - 203 < world_size * 10  # repeated: only what evens the counts


def test_bucket_sampler_drop_last():
    sampler = BucketSampler([5] * 10, batch_size=4, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and all(len(b) == 4 for b in batches)
    assert list(BucketSampler([5] * 3, batch_size=4, drop_last=True, world_size=2)) == []


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 40),
    batch_size=st.integers(1, 8),
    world_size=st.integers(1, 9),
    drop_last=st.booleans(),
)
def test_bucket_sampler_gives_every_rank_as_many_non_empty_batches(
    count, batch_size, world_size, drop_last
):
    """Even with fewer batches than processes (the batches are repeated from the first)."""
    lengths = [n % 7 + 1 for n in range(count)]
    shards = [
        list(BucketSampler(lengths, batch_size, drop_last=drop_last, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    expected = len(BucketSampler(lengths, batch_size, drop_last=drop_last, world_size=world_size))
    assert [len(shard) for shard in shards] == [expected] * world_size
    assert all(batch for shard in shards for batch in shard)
    single = list(BucketSampler(lengths, batch_size, drop_last=drop_last))
    seen = {i for shard in shards for batch in shard for i in batch}
    assert seen == {i for batch in single for i in batch}  # together: every batch's samples


def test_bucket_sampler_one_batch_four_ranks():
    shards = [
        list(BucketSampler([1, 2, 3, 4], 3, world_size=4, rank=r, drop_last=True)) for r in range(4)
    ]
    assert shards == [[[0, 1, 2]]] * 4


@pytest.fixture(scope="module")
def ewt_lengths():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent")
    return [len(sentence.tokens) for sentence in read_conllu(EWT_TRAIN)]


def test_ewt_bucketing_halves_padding_and_keeps_every_sentence(ewt_lengths):
    assert len(ewt_lengths) == 12_544
    batch_size = 32
    sampler = BucketSampler(ewt_lengths, batch_size, seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # two epochs
        order = torch.randperm(len(ewt_lengths), generator=generator).tolist()
        random_batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        bucketed = list(sampler)
        seen = [i for batch in bucketed for i in batch]
        assert len(seen) == len(set(seen)) == len(ewt_lengths)  # none lost, none repeated
        bucket_padding = count_padding(ewt_lengths, bucketed)
        random_padding = count_padding(ewt_lengths, random_batches)
        assert bucket_padding <= 0.5 * random_padding, (bucket_padding, random_padding)


def test_batch_loader_yields_batches_over_all_samples():
    samples = [(list(range(1, n + 1)), n % 3) for n in range(1, 50)]
    loader = batch_loader(samples, batch_size=8, bucket=True)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(samples)
    for batch in batches:
        # each row's last real value is its length, since sample n is 1..n
        last = batch.inputs[torch.arange(len(batch)), batch.lengths - 1]
        torch.testing.assert_close(last, batch.lengths)
        torch.testing.assert_close(batch.targets, batch.lengths % 3)
    plain = list(batch_loader(samples, batch_size=8, bucket=False, shuffle=False))
    torch.testing.assert_close(plain[0].lengths, torch.arange(1, 9))


def test_stream_batches_are_contiguous_for_truncated_bptt():
    ids = torch.arange(103)
    stream = StreamBatches(ids, batch_size=4, bptt=7)
    rows = (103 - 1) // 4
    batches = list(stream)
    assert len(batches) == len(stream) == -(-rows // 7)
    inputs = torch.cat([b.inputs for b in batches], dim=1)  # (B, rows)
    targets = torch.cat([b.targets for b in batches], dim=1)
    expected = torch.arange(4 * rows).view(4, rows)
    torch.testing.assert_close(inputs, expected)  # row b continues across batches
    torch.testing.assert_close(targets, expected + 1)  # the next token
    assert all(b.inputs.shape[1] <= 7 for b in batches)
    torch.testing.assert_close(batches[-1].lengths, torch.full((4,), rows % 7 or 7))


def test_stream_batches_too_short():
    with pytest.raises(ValueError, match="too short for batch_size=8"):
        StreamBatches([1, 2, 3], batch_size=8, bptt=4)
