"""IN2R on paired data of any two modalities ("side a" and "side b").

:func:`train_paired` trains with two user encoders on a paired dataset and
returns the trained encoders and retrieval metrics. :class:`PairedDataset`
builds a dataset from two row-aligned sequences. For the rectification step
alone, inside another training loop, use
:func:`in2r_graph.synthesize_prototypes`.
"""

from .dataset import PairedDataset, PairedSplit, SideBatch, move_to_device
from .train import PairedResult, SideEncoder, format_paired_table, neutral_name, resolve_config, train_paired

__all__ = [
    "PairedDataset",
    "PairedResult",
    "PairedSplit",
    "SideBatch",
    "SideEncoder",
    "format_paired_table",
    "move_to_device",
    "neutral_name",
    "resolve_config",
    "train_paired",
]
