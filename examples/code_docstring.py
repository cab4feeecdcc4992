"""Retrieve functions from their docstrings (and back) under noisy pairs, with IN2R.

The pairs come from the standard library of the Python that runs this
script: side a is a function's source without its docstring, side b is the
docstring's first paragraph. Trivial pairs are dropped (dunder methods,
docstrings under 5 words, bodies that only pass or raise, repeated
docstrings or bodies). A share of the training docstrings is then shuffled
among their functions. IN2R and the contrastive baseline, as one network
and as an ensemble of two (IN2R also averages two networks), are trained
through ``in2r_graph.generic.train_paired`` with the same encoders. These
feed the hashed character n-grams of each side to a bag embedding and an
MLP. Dev and test pairs stay as found. They can still be wrong, because some
docstrings describe another function or were copied.

    python examples/code_docstring.py            # 4,000 pairs, 2 to 5 minutes on 2 CPU cores
    python examples/code_docstring.py --small    # 600 pairs, 3 epochs, under a minute
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import re
import sysconfig
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import HashingVectorizer
from torch import nn

from in2r_graph.data.noise import make_noise, realised_noise_rate
from in2r_graph.generic import PairedDataset, format_paired_table, train_paired

SKIPPED_FOLDERS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
MIN_DOC_WORDS = 5


def stdlib_files() -> list[Path]:
    """Return the standard library's Python files, without tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(path for path in root.rglob("*.py") if not SKIPPED_FOLDERS & set(path.relative_to(root).parts))


def first_paragraph(docstring: str) -> str:
    """Return the first paragraph of a docstring on one line."""
    return " ".join(inspect.cleandoc(docstring).split("\n\n")[0].split())


def is_trivial_body(body: list[ast.stmt]) -> bool:
    """Return whether a function body, without its docstring, only passes, returns nothing or raises."""
    if not body:
        return True
    for statement in body:
        if isinstance(statement, (ast.Pass, ast.Raise)):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if isinstance(statement, ast.Return) and statement.value is None:
            continue
        return False
    return True


def function_pairs(path: Path) -> list[tuple[str, str]]:
    """Return ``(source without docstring, docstring paragraph)`` for the non-trivial functions of a file."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if docstring is None or (node.name.startswith("__") and node.name.endswith("__")):
            continue
        paragraph = first_paragraph(docstring)
        doc_node = node.body[0]
        if len(paragraph.split()) < MIN_DOC_WORDS or doc_node.lineno == node.lineno or is_trivial_body(node.body[1:]):
            continue
        code_lines = lines[node.lineno - 1 : doc_node.lineno - 1] + lines[doc_node.end_lineno : node.end_lineno]
        pairs.append((textwrap.dedent("\n".join(code_lines)), paragraph))
    return pairs


def collect_pairs(max_pairs: int, seed: int) -> tuple[list[str], list[str], int]:
    """Return up to ``max_pairs`` random distinct (code, docstring) pairs and the count found."""
    codes, docs, seen_codes, seen_docs = [], [], set(), set()
    for path in stdlib_files():
        for code, doc in function_pairs(path):
            if code in seen_codes or doc in seen_docs:
                continue
            seen_codes.add(code)
            seen_docs.add(doc)
            codes.append(code)
            docs.append(doc)
    order = np.random.default_rng(seed).permutation(len(codes))[:max_pairs]
    return [codes[i] for i in order], [docs[i] for i in order], len(codes)


def split_words(text: str) -> str:
    """Lower-case a text and split identifiers (``get_source``, ``getSource``) into words."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return re.sub(r"[_\W]+", " ", text).lower()


def hashed_bags(texts: list[str], num_features: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hash the character 3- to 5-grams of each text into ``(feature ids, weights)``."""
    vectorizer = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=(3, 5),
        n_features=num_features,
        alternate_sign=False,
        norm="l2",
        preprocessor=split_words,
    )
    matrix = vectorizer.transform(texts).tocsr()
    bags = []
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        bags.append(
            (torch.from_numpy(matrix.indices[start:stop].astype(np.int64)), torch.from_numpy(matrix.data[start:stop].astype(np.float32)))
        )
    return bags


def collate_bags(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate bags into the ``input``, ``offsets`` and ``weights`` of ``nn.EmbeddingBag``."""
    lengths = torch.tensor([len(ids) for ids, _ in items])
    offsets = torch.zeros(len(items), dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)[:-1]
    return {"input": torch.cat([ids for ids, _ in items]), "offsets": offsets, "weights": torch.cat([w for _, w in items])}


class BagEncoder(nn.Module):
    """Weighted bag of hashed features, LayerNorm, GELU and a linear layer.

    In training mode each feature weight is dropped with probability
    ``dropout``, so two forward passes give two views of one batch.

    Shapes:
        - bags: ``input`` and ``weights`` (F,) over the whole batch, ``offsets`` (B,)
        - output: (B, embed_dim)
    """

    def __init__(self, num_features: int, hidden_dim: int, embed_dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(num_features, hidden_dim, mode="sum")
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, embed_dim)
        self.dropout = dropout

    def forward(self, bags: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = F.dropout(bags["weights"], self.dropout, self.training)
        hidden = self.bag(bags["input"], bags["offsets"], per_sample_weights=weights)  # (B, hidden_dim)
        return self.head(F.gelu(self.norm(hidden)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="quick run: 600 pairs and 3 epochs unless given")
    parser.add_argument("--max-pairs", type=int, help="pairs drawn from the standard library (default: 4000, small: 600)")
    parser.add_argument("--epochs", type=int, help="training epochs, warm-up included (default: 10, small: 3)")
    parser.add_argument("--noise-ratio", type=float, default=0.4, help="share of training docstrings shuffled (default: 0.4)")
    parser.add_argument("--num-features", type=int, default=2**14, help="hashed n-gram features per side (default: 16384)")
    parser.add_argument("--embed-dim", type=int, default=128, help="joint embedding size (default: 128)")
    parser.add_argument("--refiner", default="attention", help="registered refiner name (default: attention)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling, noise and training (default: 0)")
    parser.add_argument("--out-dir", default="runs", help="folder that receives the two run directories (default: runs)")
    args = parser.parse_args()
    max_pairs = args.max_pairs or (600 if args.small else 4000)
    epochs = args.epochs or (3 if args.small else 10)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    codes, docs, found = collect_pairs(max_pairs, args.seed)
    count = len(codes)
    eval_size = max(20, count // 10)  # pairs in each of dev and test
    if count - 2 * eval_size < 100:
        raise SystemExit(
            f"{count} pairs are too few ({found} found in the standard library, --max-pairs {max_pairs}); "
            f"expected at least {100 + 2 * eval_size}: raise --max-pairs"
        )
    code_bags = hashed_bags(codes, args.num_features)
    doc_bags = hashed_bags(docs, args.num_features)
    train_rows, dev_rows, test_rows = np.arange(2 * eval_size, count), np.arange(eval_size), np.arange(eval_size, 2 * eval_size)

    # Caption-level noise with one docstring per function: training pair j joins
    # function paired_function[j] with docstring train_rows[j].
    noisy_mapping = make_noise(len(train_rows), 1, args.noise_ratio, "caption", args.seed)
    paired_function = train_rows[noisy_mapping]
    train = PairedDataset([code_bags[i] for i in paired_function], [doc_bags[i] for i in train_rows], clean=paired_function == train_rows)
    dev = PairedDataset([code_bags[i] for i in dev_rows], [doc_bags[i] for i in dev_rows])
    test = PairedDataset([code_bags[i] for i in test_rows], [doc_bags[i] for i in test_rows])
    noise = realised_noise_rate(noisy_mapping, 1)
    print(f"{found} distinct function/docstring pairs in {sysconfig.get_paths()['stdlib']}; using {count}: "
          f"{len(train)} train ({100 * noise:.1f}% noisy), {len(dev)} dev, {len(test)} test")

    def encoder() -> nn.Module:
        return BagEncoder(args.num_features, hidden_dim=2 * args.embed_dim, embed_dim=args.embed_dim)

    settings = {
        "train.epochs": epochs,
        "train.warmup_epochs": 1 if args.small else 2,
        "train.lr_decay_epochs": [max(1, epochs * 2 // 3)],
        "train.batch_size": 64 if args.small else 128,
        "train.seed": args.seed,
        "train.progress": False,
        "rectify.refiner": args.refiner,
        "rectify.k": 5 if args.small else 10,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = {
        "in2r": {"train.method": "in2r"},
        "contrastive": {"train.method": "contrastive"},
        "contrastive-ensemble": {"train.method": "contrastive", "train.ensemble": True},
    }
    rows, split = {}, {}
    for name, method_settings in runs.items():
        torch.manual_seed(args.seed)
        result = train_paired(
            encoder,
            encoder,
            train,
            dev=dev,
            test=test,
            config={**settings, **method_settings},
            run_dir=Path(args.out_dir) / f"{stamp}-code-docstring-{name}",
            collate_a=collate_bags,
            collate_b=collate_bags,
        )
        rows[f"{name} (best dev, epoch {result.best_epoch + 1})"] = result.test["best"]
        split = split or result.split

    print("test retrieval, a = function source, b = docstring:")
    print(format_paired_table(rows))
    if split:
        print(f"in2r clean/noisy split at the last epoch: precision {split['precision']:.3f}, recall {split['recall']:.3f}")


if __name__ == "__main__":
    main()
