"""Output paths: checked before any work starts, written atomically so a failed write leaves nothing."""
from __future__ import annotations

import os
import tempfile

from .errors import BadInputError, OutputWriteError

DATA_SUFFIX = ".data"  # a large model's external data file, beside it (see ir/save.py)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Raise BadInputError unless every output path (flag -> path) can be written: not a folder, not an
    input, not another output, a name the file system accepts, in a folder that exists or can be made
    and that takes a new file. `inputs`: what each input is ("the input model") -> its path."""
    seen: dict[str, str] = {}
    ins = {_real(p): what for what, p in inputs.items() if p}
    for flag, path in outputs.items():
        if path is None:  # not asked for (an empty string is asked for, and refused)
            continue
        check_output(path, flag)
        real = _real(path)
        if real in ins:
            raise BadInputError(f"{flag} '{path}' is {ins[real]}; choose another path")
        if real in seen:
            raise BadInputError(f"{flag} '{path}' is also the path of {seen[real]}; give them different paths")
        seen[real] = flag


def check_output(path: str, flag: str) -> None:
    """Raise BadInputError unless a file can be written at `path` (missing folders are made later)."""
    if not path or not path.strip():
        raise BadInputError(f"{flag} is empty; give a file path")
    if path.endswith(os.sep) or os.path.isdir(path):
        raise BadInputError(f"{flag} '{path}' is a directory; give a file path")
    if os.path.exists(path) and not os.path.isfile(path):
        raise BadInputError(f"{flag} '{path}' exists and is not a regular file")
    if os.path.isdir(path + DATA_SUFFIX):  # where a large model's external data would go
        raise BadInputError(f"{flag} '{path}': '{path + DATA_SUFFIX}' is a directory")
    folder = _existing_folder(path, flag)
    _check_names(path, folder, flag)
    _probe(folder, flag, path)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _existing_folder(path: str, flag: str) -> str:
    """The nearest folder above `path` that exists; it must be a folder."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BadInputError(f"{flag} '{path}': '{parent}' is a file, not a folder")
    return parent


def _check_names(path: str, folder: str, flag: str) -> None:
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    full = os.path.abspath(path)
    parts = full.split(os.sep)
    for i, part in enumerate(parts):
        # the external data file of a large model is written beside the model as NAME.data
        room = name_max - (len(DATA_SUFFIX) if i == len(parts) - 1 else 0)
        if len(os.fsencode(part)) > room:
            raise BadInputError(f"{flag} '{path}': the name '{part[:40]}...' is {len(os.fsencode(part))} bytes long; "
                                f"this file system takes at most {room} here")
    if len(os.fsencode(full)) + len(DATA_SUFFIX) >= path_max:
        raise BadInputError(f"{flag} '{path[:60]}...' is {len(os.fsencode(full))} bytes long; the limit is {path_max}")


def _probe(folder: str, flag: str, path: str) -> None:
    """Create and remove a file in `folder`: the only check that also sees read-only mounts and quotas."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe-", dir=folder)
    except OSError as exc:
        raise BadInputError(f"{flag} '{path}': cannot write in '{folder}': {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file beside it, then a rename); missing folders
    are made. On failure nothing new is left behind and an existing file is unchanged."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputWriteError(f"cannot write '{path}': {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
