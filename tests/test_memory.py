import torch

from in2r_graph.memory import MemoryBank


def _pairs(start: int, count: int, dim: int = 4):
    images = torch.arange(start, start + count, dtype=torch.float32).view(-1, 1).repeat(1, dim)
    return images, -images, torch.arange(start, start + count)


def test_bank_fills_in_order():
    bank = MemoryBank(capacity=5, dim=4)
    bank.push(*_pairs(0, 3))
    images, texts, ids = bank.valid()
    assert bank.size == 3
    assert ids.tolist() == [0, 1, 2]
    assert torch.equal(texts, -images)


def test_bank_wraps_around_oldest_first():
    bank = MemoryBank(capacity=5, dim=4)
    bank.push(*_pairs(0, 4))
    bank.push(*_pairs(4, 3))
    _, _, ids = bank.valid()
    assert bank.size == 5
    assert sorted(ids.tolist()) == [2, 3, 4, 5, 6]
    assert ids.tolist() == [5, 6, 2, 3, 4]
    assert int(bank.pointer) == 2


def test_bank_push_larger_than_capacity_keeps_newest():
    bank = MemoryBank(capacity=3, dim=4)
    bank.push(*_pairs(0, 8))
    _, _, ids = bank.valid()
    assert sorted(ids.tolist()) == [5, 6, 7]


def test_bank_entries_are_detached():
    bank = MemoryBank(capacity=4, dim=2)
    images = torch.randn(2, 2, requires_grad=True)
    bank.push(images * 2, images * 3, torch.tensor([0, 1]))
    assert not bank.images.requires_grad
    assert not bank.texts.requires_grad


def test_bank_state_dict_round_trip():
    bank = MemoryBank(capacity=4, dim=3)
    bank.push(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([7, 8, 9]))
    restored = MemoryBank(capacity=4, dim=3)
    restored.load_state_dict(bank.state_dict())
    assert restored.size == 3
    assert torch.equal(restored.images, bank.images)
    assert torch.equal(restored.indices, bank.indices)
    assert int(restored.pointer) == int(bank.pointer)


def test_bank_rejects_wrong_shapes():
    bank = MemoryBank(capacity=4, dim=3)
    try:
        bank.push(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]))
    except ValueError as error:
        assert "(B, 3)" in str(error)
    else:
        raise AssertionError("a wrong embedding size was accepted")


def test_bank_clear():
    bank = MemoryBank(capacity=4, dim=3)
    bank.push(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([0, 1, 2]))
    bank.clear()
    assert bank.size == 0
    assert len(bank) == 0
