"""The modality-neutral API: paired datasets, train_paired and synthesize_prototypes."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import in2r_graph
from in2r_graph import MemoryBank, build_refiner, synthesize_prototypes
from in2r_graph.generic import (
    PairedDataset,
    PairedSplit,
    SideBatch,
    format_paired_table,
    move_to_device,
    neutral_name,
    train_paired,
)

TINY = {
    "train.epochs": 3,
    "train.warmup_epochs": 1,
    "train.batch_size": 32,
    "train.lr": 5e-3,
    "train.progress": False,
    "train.device": "cpu",
    "rectify.k": 4,
}


def clustered_pairs(count: int, noise: float, seed: int = 0) -> tuple[PairedDataset, PairedDataset]:
    """Return noisy training pairs and clean dev pairs of two linked feature spaces.

    Side a is a cluster centre plus noise in 12 dimensions. Side b is a fixed
    random map of the same centre plus noise in 20 dimensions. A share
    ``noise`` of the training pairs gets another pair's side b.
    """
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(count // 8, 12, generator=generator)
    mapping = torch.randn(12, 20, generator=generator)
    cluster = torch.randint(0, centres.size(0), (count + 64,), generator=generator)
    a = centres[cluster] + 0.3 * torch.randn(count + 64, 12, generator=generator)
    b = centres[cluster] @ mapping + 0.3 * torch.randn(count + 64, 20, generator=generator)
    partner = torch.arange(count)
    chosen = torch.randperm(count, generator=generator)[: round(noise * count)]
    partner[chosen] = chosen[torch.randperm(chosen.numel(), generator=generator)]
    train = PairedDataset(a[:count], b[partner], clean=(partner == torch.arange(count)).numpy())
    dev = PairedDataset(a[count:], b[count:])
    return train, dev


def mlp(input_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(input_dim, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 16))


# ---------------------------------------------------------------- datasets


def test_dataset_rejects_unequal_sides():
    with pytest.raises(ValueError, match="a has 3 items but b has 2"):
        PairedDataset([1, 2, 3], [1, 2])


def test_dataset_rejects_wrong_clean_length():
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        PairedDataset([1, 2, 3], [4, 5, 6], clean=[True, False])


def test_dataset_rejects_non_flag_clean():
    with pytest.raises(ValueError, match="booleans or 0/1"):
        PairedDataset([1, 2, 3], [4, 5, 6], clean=[0, 1, 2])


def test_split_presents_pairs_as_one_to_one():
    a, b = torch.randn(6, 3), torch.randn(6, 5)
    split = PairedSplit(PairedDataset(a, b))
    rows = np.array([4, 0, 2])
    assert split.num_pairs == 6
    assert split.num_images == 6
    assert np.array_equal(split.caption_to_image, np.arange(6))
    assert torch.equal(split.images(rows).value, a[rows])
    assert torch.equal(split.image_inputs(rows).value, a[rows])
    assert torch.equal(split.texts(rows).value, b[rows])


def test_split_collates_plain_sequences():
    a, b = torch.randn(5, 3), torch.randn(5, 2)
    items = [(a[i], b[i]) for i in range(5)]
    split = PairedSplit(items)
    assert torch.equal(split.texts([1, 3]).value, b[[1, 3]])
    assert torch.equal(split.images([1, 3]).value, a[[1, 3]])


def test_split_uses_given_collate():
    items = [("first text", 1), ("second", 2), ("third one", 3)]
    split = PairedSplit(items, collate_a=lambda texts: {"lengths": torch.tensor([len(t) for t in texts])})
    assert torch.equal(split.images([0, 2]).value["lengths"], torch.tensor([10, 9]))


def test_side_batch_moves_nested_tensors():
    batch = SideBatch({"ids": [torch.ones(2), torch.zeros(1)], "names": ["x", "y"], "mask": torch.ones(2, dtype=torch.bool)})
    moved = batch.to("meta")
    assert moved.value["ids"][0].device.type == "meta"
    assert moved.value["mask"].device.type == "meta"
    assert moved.value["names"] == ["x", "y"]


def test_move_to_device_keeps_tuple_type():
    moved = move_to_device((torch.ones(1), "x"), torch.device("meta"))
    assert isinstance(moved, tuple)
    assert moved[0].device.type == "meta"


def test_neutral_name_translates_trainer_names():
    assert neutral_name("dev_i2t_r1") == "dev_a2b_r1"
    assert neutral_name("dev_t2i_meanr") == "dev_b2a_meanr"
    assert neutral_name("A/image_rectify_loss") == "A/a_rectify_loss"
    assert neutral_name("B/text_view_loss") == "B/b_view_loss"
    assert neutral_name("A/split_precision") == "A/split_precision"


def test_format_table_rejects_missing_metric():
    with pytest.raises(ValueError, match="a2b_r5"):
        format_paired_table({"run": {"a2b_r1": 1.0}})


# ---------------------------------------------------------------- training


def test_in2r_trains_on_clustered_pairs(tmp_path):
    torch.manual_seed(0)
    train, dev = clustered_pairs(256, noise=0.4)
    result = train_paired(mlp(12), mlp(20), train, dev=dev, test=dev, config=TINY, run_dir=tmp_path / "run")
    assert result.epochs == 3
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (result.run_dir / name).is_file(), name
    last = result.history[-1]
    assert "A/a_rectify_loss" in last
    assert "B/b_rectify_loss" in last
    assert "dev_a2b_r1" in last
    assert not [key for key in last if "image" in key or "text" in key or "i2t" in key]
    assert set(result.test) == {"best", "last"}
    assert result.test["best"]["rsum"] == pytest.approx(result.best_dev_rsum)
    assert 0.0 <= result.split["precision"] <= 1.0
    # Chance rSum on 64 dev pairs is 2 * (1 + 5 + 10) / 64 * 100 = 50.
    assert result.best_dev_rsum > 200
    assert len(result.encoders) == 2
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["method"] == "in2r"


def test_embed_returns_unit_vectors(tmp_path):
    train, dev = clustered_pairs(128, noise=0.2)
    result = train_paired(mlp(12), mlp(20), train, dev=dev, config={**TINY, "train.epochs": 1}, run_dir=tmp_path / "run")
    embeddings = result.embed(list(dev.b[:10]), "b")
    assert len(embeddings) == 2
    assert embeddings[0].shape == (10, 16)
    assert torch.allclose(embeddings[0].norm(dim=1), torch.ones(10), atol=1e-5)


def test_contrastive_uses_one_network(tmp_path):
    train, dev = clustered_pairs(128, noise=0.2)
    config = {**TINY, "train.method": "contrastive", "train.epochs": 2}
    result = train_paired(mlp(12), mlp(20), train, dev=dev, config=config, run_dir=tmp_path / "run")
    assert len(result.encoders) == 1
    assert result.split == {}


def test_missing_dev_holds_out_pairs(tmp_path, caplog):
    train, _ = clustered_pairs(120, noise=0.2)
    with caplog.at_level(logging.WARNING, logger="in2r_graph"):
        result = train_paired(mlp(12), mlp(20), train, config={**TINY, "train.epochs": 1}, run_dir=tmp_path / "run")
    assert "holding out 12 of 120 pairs" in caplog.text
    assert result.epochs == 1


def test_module_encoders_start_equal(tmp_path):
    train, dev = clustered_pairs(96, noise=0.2)
    frozen = {**TINY, "train.epochs": 1, "train.lr": 1e-12}
    result = train_paired(mlp(12), mlp(20), train, dev=dev, config=frozen, run_dir=tmp_path / "run")
    first, second = (pair[0].module[0].weight for pair in result.encoders)
    assert torch.allclose(first, second)


def test_factory_encoders_start_apart(tmp_path):
    train, dev = clustered_pairs(96, noise=0.2)
    frozen = {**TINY, "train.epochs": 1, "train.lr": 1e-12}
    result = train_paired(lambda: mlp(12), lambda: mlp(20), train, dev=dev, config=frozen, run_dir=tmp_path / "run")
    first, second = (pair[0].module[0].weight for pair in result.encoders)
    assert not torch.allclose(first, second)


def test_string_items_reach_the_encoder(tmp_path):
    class CharCounts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(26, 16)

        def forward(self, texts: list[str]) -> torch.Tensor:
            counts = torch.zeros(len(texts), 26)
            for row, text in enumerate(texts):
                for char in text:
                    if "a" <= char <= "z":
                        counts[row, ord(char) - ord("a")] += 1
            return self.linear(counts.to(self.linear.weight.device))

    words = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"] * 8
    features = torch.randn(len(words), 6)
    train = PairedDataset(words, features)
    dev = PairedDataset(words[:16], features[:16])
    config = {**TINY, "train.epochs": 1, "train.batch_size": 16}
    result = train_paired(CharCounts(), mlp(6), train, dev=dev, config=config, run_dir=tmp_path / "run")
    assert result.epochs == 1


def test_rejects_embedding_size_mismatch(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    with pytest.raises(ValueError, match="encoder_a returns 16-dimensional embeddings but encoder_b returns 8"):
        train_paired(mlp(12), nn.Linear(20, 8), train, dev=dev, config=TINY, run_dir=tmp_path / "run")


def test_rejects_non_module_encoder(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    with pytest.raises(TypeError, match="encoder_b must be an nn.Module"):
        train_paired(mlp(12), "mlp", train, dev=dev, config=TINY, run_dir=tmp_path / "run")


def test_rejects_factory_returning_non_module(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    with pytest.raises(TypeError, match=r"encoder_a\(\) returned int"):
        train_paired(lambda: 3, mlp(20), train, dev=dev, config=TINY, run_dir=tmp_path / "run")


def test_rejects_used_run_dir(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("old")
    with pytest.raises(FileExistsError, match="not empty"):
        train_paired(mlp(12), mlp(20), train, dev=dev, config=TINY, run_dir=tmp_path / "run")


def test_rejects_unknown_config_key(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    with pytest.raises(ValueError, match="unknown config key"):
        train_paired(mlp(12), mlp(20), train, dev=dev, config={"train.epoch": 2}, run_dir=tmp_path / "run")


def test_rejects_wrong_clean_argument(tmp_path):
    train, dev = clustered_pairs(64, noise=0.2)
    with pytest.raises(ValueError, match=r"expected \(64,\)"):
        train_paired(mlp(12), mlp(20), train, dev=dev, clean=[True] * 10, config=TINY, run_dir=tmp_path / "run")


# ---------------------------------------------------------------- rectification step


def test_synthesize_prototypes_is_exported():
    assert "synthesize_prototypes" in in2r_graph.__all__
    assert in2r_graph.synthesize_prototypes is synthesize_prototypes


def test_mean_prototype_matches_brute_force():
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(50, 8), dim=-1)
    partners = F.normalize(torch.randn(50, 8), dim=-1)
    queries = F.normalize(torch.randn(4, 8), dim=-1)
    prototypes, found = synthesize_prototypes(queries, keys, partners, build_refiner("mean", 8), k=5)
    nearest = (queries @ keys.T).topk(5, dim=1).indices  # (4, 5)
    expected = F.normalize(partners[nearest].mean(dim=1), dim=-1)
    assert torch.allclose(prototypes, expected, atol=1e-6)
    assert torch.equal(found.positions.sort(dim=1).values, nearest.sort(dim=1).values)


def test_prototypes_skip_the_query_pair():
    torch.manual_seed(1)
    bank = MemoryBank(capacity=40, dim=8)
    images = F.normalize(torch.randn(40, 8), dim=-1)
    bank.push(images, F.normalize(torch.randn(40, 8), dim=-1), torch.arange(40))
    query_ids = torch.tensor([3, 7, 11])
    # Each query is exactly its own bank entry, which must still not be a neighbour.
    _, found = synthesize_prototypes(
        images[query_ids], bank.images, bank.texts, build_refiner("mean", 8), k=6,
        query_ids=query_ids, key_ids=bank.indices,
    )
    neighbour_ids = bank.indices[found.positions]  # (3, 6)
    assert not (neighbour_ids == query_ids[:, None]).any()


def test_prototypes_train_the_refiner():
    torch.manual_seed(2)
    keys, partners = F.normalize(torch.randn(30, 8), dim=-1), F.normalize(torch.randn(30, 8), dim=-1)
    queries = F.normalize(torch.randn(5, 8), dim=-1)
    refiner = build_refiner("gat", 8, heads=2)
    prototypes, _ = synthesize_prototypes(queries, keys, partners, refiner, k=4)
    assert prototypes.shape == (5, 8)
    assert torch.allclose(prototypes.norm(dim=1), torch.ones(5), atol=1e-5)
    (prototypes * queries).sum().backward()
    gradients = [parameter.grad for parameter in refiner.parameters() if parameter.grad is not None]
    assert gradients
    assert any(float(gradient.abs().sum()) > 0 for gradient in gradients)
