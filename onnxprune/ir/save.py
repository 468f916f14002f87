"""Write a model atomically, with an external data file beside it when it is too large for one protobuf."""
from __future__ import annotations

import os
import tempfile

import onnx
from onnx import external_data_helper

from . import limits


def is_large(proto: onnx.ModelProto) -> bool:
    """Too large for one protobuf: saved with external data, handed to ONNX Runtime as a file."""
    return proto.ByteSize() > limits.EXTERNAL_DATA_THRESHOLD


def remove_saved(path: str | os.PathLike) -> None:
    """Delete a model written by `save`, with its external data file if it has one."""
    for name in (os.fspath(path), os.fspath(path) + ".data"):
        if os.path.exists(name):
            os.remove(name)


def save(proto: onnx.ModelProto, path: str | os.PathLike, keep: bool = True) -> None:
    """Write atomically; models too large for one protobuf get an external data file beside them.

    Writing external data moves the weights out of `proto`; `keep` reads them back so the caller's
    model stays usable (pass False when it is not used again: that saves reading gigabytes back).
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    external = is_large(proto)
    tmp_dir = tempfile.mkdtemp(prefix=".onnxprune-", dir=directory)
    try:
        base = os.path.basename(path)
        tmp_model = os.path.join(tmp_dir, base)
        if external:
            data_name = base + ".data"
            onnx.save_model(proto, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            # save_model moved the tensors' bytes out of `proto`; read them back so the caller's model
            # is unchanged (no second in-memory copy of a model this large)
            if keep:
                external_data_helper.load_external_data_for_model(proto, tmp_dir)
            data_path = os.path.join(tmp_dir, data_name)
            if os.path.exists(data_path):  # absent when every tensor is small
                os.chmod(data_path, os.stat(tmp_model).st_mode & 0o777)  # the temp folder's files are private
                os.replace(data_path, os.path.join(directory, data_name))
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)
    finally:
        for leftover in os.listdir(tmp_dir):
            os.unlink(os.path.join(tmp_dir, leftover))
        os.rmdir(tmp_dir)
