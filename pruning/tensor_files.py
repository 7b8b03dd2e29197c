"""Files of named tensors: torch's format or safetensors, told apart by their content.

A safetensors file is an 8-byte little-endian header length, a JSON header (``{name: {dtype,
shape, data_offsets}}``) and the raw tensor bytes: it cannot carry code at all. A torch file is a
zip archive (or an older bare pickle), never a length followed by ``{``, so the first bytes decide;
the file's name is used only to say what was expected when a ``.safetensors`` file is not one.
Torch files are read with ``torch.load(weights_only=True)``, which refuses anything but tensors
and plain containers.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from pruning.cache import atomic_write_bytes
from pruning.errors import BadInputError

SAFETENSORS_SUFFIX = ".safetensors"
LENGTH_BYTES = 8  # the header length that opens a safetensors file


def safetensors_problem(content: bytes) -> str | None:
    """None if ``content`` opens like a safetensors file, else why it does not."""
    if len(content) < LENGTH_BYTES + 2:
        return f"it has {len(content)} bytes, too few for a header"
    length = int.from_bytes(content[:LENGTH_BYTES], "little")
    if length > len(content) - LENGTH_BYTES:
        return f"its first 8 bytes give a {length}-byte header, longer than the file ({len(content)} bytes)"
    if content[LENGTH_BYTES:LENGTH_BYTES + 1] != b"{":
        return "its header is not a JSON object"
    return None


def is_safetensors(content: bytes) -> bool:
    return safetensors_problem(content) is None


def read_tensors(content: bytes, what: str = "weights", name: str | None = None):
    """What a torch or safetensors file holds (safetensors: always ``{name: tensor}``), never
    running code from it; a clear :class:`BadInputError` for anything else."""
    check_named(content, name, what)
    return _read_safetensors(content, what) if is_safetensors(content) else _read_torch(content, what)


def check_named(content: bytes, name: str | None, what: str = "weights") -> None:
    """A file named ``*.safetensors`` must be one (else it would be read as a torch file)."""
    if name is not None and name.lower().endswith(SAFETENSORS_SUFFIX) and not is_safetensors(content):
        raise BadInputError(f"the {what} file {name!r} is not a safetensors file: {safetensors_problem(content)}")


def _read_safetensors(content: bytes, what: str) -> dict[str, torch.Tensor]:
    try:
        return safetensors_load(content)
    except Exception as error:  # SafetensorError (bad header, offsets, dtype), a dtype torch lacks, ...
        detail = " ".join(str(error).split()) or type(error).__name__
        raise BadInputError(f"the {what} file is a damaged safetensors file: {detail}") from None


def _read_torch(content: bytes, what: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes: the outcome is what counts
            return torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        detail = f", it asks for {found.group(1)}" if found else ""
        raise BadInputError(
            f"the {what} file was refused: it is not a file of plain tensors (a pickle that would build other objects "
            f"or run code{detail}, or neither a torch nor a safetensors file); save model.state_dict(), not the model"
        ) from None
    except Exception as error:  # truncated, not a torch file, ...
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f"the {what} file cannot be read as a torch file ({detail}) "
                            f"nor as a safetensors file ({safetensors_problem(content)})") from None


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """``{name: tensor}`` as a safetensors file, written atomically; tensors that share storage
    (safetensors refuses them) are stored as copies."""
    plain = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    atomic_write_bytes(safetensors_save(plain, metadata={"format": "pt"}), path)


def load_tensor_file(path: str | Path, what: str = "tensors"):
    """A torch or safetensors file's content (see :func:`read_tensors`)."""
    path = Path(path)
    return read_tensors(path.read_bytes(), what, path.name)
