"""Reading released reward-model weights without running code from the file."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import torch


def _numpy_scalar_globals() -> list:
    """What checkpoints holding numpy scalars (training metadata in many releases) need beyond tensors.

    ``multiarray.scalar`` rebuilds a scalar from a dtype and raw bytes; the dtype classes carry no
    code. Listed under the name the pickle uses (``numpy.core...``) as well as numpy's own.
    """
    multiarray = importlib.import_module("numpy._core.multiarray" if np.__version__ >= "2" else "numpy.core.multiarray")
    scalar = multiarray.scalar
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, *dtype_classes]


def load_weight_file(path: str | Path, owner: str, allow_pickle: bool = False, hint: str = "") -> dict:
    """A ``.safetensors`` file, or a torch checkpoint read with ``weights_only=True`` (numpy scalars allowed).

    ``allow_pickle=True`` unpickles anything, for trusted files only. ``owner`` (e.g. ``"clap"``)
    prefixes the errors: a missing file (with ``hint`` on what to pass) and a refused unpickling,
    which names the ``allow_pickle`` option.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: checkpoint {str(path)!r} is not a file{'; ' + hint if hint else ''}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f"{owner}: {str(path)!r} holds objects other than tensors and numpy scalars, so it was not "
            f"unpickled. If you trust the file, pass allow_pickle=True (reward option {owner}.allow_pickle), "
            f"or convert it to .safetensors.\n{err}") from err
