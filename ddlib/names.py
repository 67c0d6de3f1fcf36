"""One table of names: methods (id -> display name, in the paper's order) and datasets.

Store paths, result columns, figure labels and config validation all read these, so a
method is spelled in one place. A run name is `<method>[+dd[-k<k>]]`: icarl, icarl+dd,
icarl+dd-k2.
"""

from __future__ import annotations

METHOD_NAMES = {"lwf": "LwF", "icarl": "iCaRL", "ucir": "UCIR", "bic": "BiC"}  # paper order
DATASETS = ("synthetic", "cifar100", "arrays", "imagenet100", "imagenet")
IMAGENET_DATASETS = ("imagenet100", "imagenet")  # ResNet-18, random-resized crop (PROTOCOL)
DATASET_LABELS = {"synthetic": "synthetic", "cifar100": "CIFAR-100", "arrays": "arrays",
                  "imagenet100": "ImageNet-Subset", "imagenet": "ImageNet-1k"}
DEFAULT_SIMILAR_K = 1  # the paper's k


def run_name(method: str, dd: bool, similar_k: int = DEFAULT_SIMILAR_K) -> str:
    """icarl, icarl+dd, icarl+dd-k2 (k only when it is not the paper's)."""
    name = method + ("+dd" if dd else "")
    if dd and similar_k != DEFAULT_SIMILAR_K:
        name += f"-k{similar_k}"
    return name


def parse_run_name(name: str) -> tuple[str, bool, int]:
    """(method, dd, similar_k) of a run name; ValueError for anything else."""
    method, plus, rest = name.partition("+")
    if method not in METHOD_NAMES or (plus and not rest.startswith("dd")):
        raise ValueError(f"{name!r} is not a run name (<method>[+dd[-k<k>]], method one of "
                         f"{list(METHOD_NAMES)})")
    if not plus:
        return method, False, DEFAULT_SIMILAR_K
    k = rest[len("dd"):]
    if k and not (k.startswith("-k") and k[2:].isdigit()):
        raise ValueError(f"{name!r} is not a run name: expected +dd or +dd-k<k>")
    return method, True, int(k[2:]) if k else DEFAULT_SIMILAR_K


def display_name(name: str) -> str:
    """The label of a run name in tables and plots: iCaRL, iCaRL+DD, iCaRL+DD (k=2)."""
    method, dd, k = parse_run_name(name)
    label = METHOD_NAMES[method] + ("+DD" if dd else "")
    return label + (f" (k={k})" if dd and k != DEFAULT_SIMILAR_K else "")
