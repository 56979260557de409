"""The training order depends on (seed, epoch) only, splits across processes, and resumes mid-epoch exactly."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from zsad.data.resumable import EpochSampler, ResumableDataLoader

DATASET = TensorDataset(torch.arange(20))


def loader(batch_size: int, replicas: int = 1, rank: int = 0, seed: int = 3) -> ResumableDataLoader:
    sampler = EpochSampler(DATASET, num_replicas=replicas, rank=rank, seed=seed)
    return ResumableDataLoader(DATASET, sampler=sampler, batch_size=batch_size)


def batches(data: ResumableDataLoader, epoch: int) -> list[list[int]]:
    data.sampler.set_epoch(epoch)
    return [batch[0].tolist() for batch in data]


def test_order_is_a_function_of_seed_and_epoch():
    first, again = batches(loader(4), 0), batches(loader(4), 0)
    torch.manual_seed(123)  # the global random state plays no part
    assert first == again == batches(loader(4), 0)
    assert first != batches(loader(4), 1)
    assert sorted(i for batch in first for i in batch) == list(range(20))


def test_two_processes_at_batch_b_see_one_process_batch_2b():
    one = batches(loader(4), 1)
    two = [batches(loader(2, replicas=2, rank=r), 1) for r in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*two, strict=True)] == [sorted(batch) for batch in one]


def test_resumed_epoch_continues_after_the_done_batches():
    data = loader(4)
    data.sampler.set_epoch(1)
    iterator = iter(data)
    done = [next(iterator)[0].tolist() for _ in range(2)]
    state = data.state_dict()
    assert state == {"epoch": 1, "batches_done": 2, "batch_size": 4}

    resumed = loader(4)
    resumed.load_state_dict(state)
    rest = batches(resumed, 1)
    assert done + rest == batches(loader(4), 1)
    assert resumed.state_dict()["batches_done"] == 5  # counted from the epoch's start
    assert batches(resumed, 2) == batches(loader(4), 2)  # the next epoch starts from its beginning


def test_a_saved_position_of_another_epoch_is_ignored():
    resumed = loader(4)
    resumed.load_state_dict({"epoch": 0, "batches_done": 5, "batch_size": 4})  # saved at epoch 0's end
    assert batches(resumed, 1) == batches(loader(4), 1)
