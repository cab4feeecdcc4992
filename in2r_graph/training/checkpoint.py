"""Atomic checkpoints of plain tensors and dicts, RNG state capture, and
interrupt handling around checkpoint writes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import random
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

PAUSE_IN_SAVE_VARIABLE = "IN2R_GRAPH_TEST_PAUSE_IN_SAVE"
"""Test hook: seconds to sleep between writing a temporary file and renaming it.

Only the atomic writers of this module read it. The interruption tests set it
to kill a training process while a checkpoint write is in progress; leave it
unset otherwise.
"""


PAUSE_AFTER_EPOCH_VARIABLE = "IN2R_GRAPH_TEST_PAUSE_AFTER_EPOCH"
"""Test hook: seconds to sleep after each epoch is saved, before the next one starts.

The interruption tests set it so that a signal sent once an epoch is saved
reliably lands before the next epoch ends, however loaded the machine is.
"""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the run."""


def _pause_for_tests(variable: str = PAUSE_IN_SAVE_VARIABLE) -> None:
    value = os.environ.get(variable)
    if not value:
        return
    try:
        seconds = float(value)
    except ValueError:
        logger.warning("ignoring %s=%r: expected a number of seconds", variable, value)
        return
    time.sleep(seconds)


def pause_after_epoch_for_tests() -> None:
    """Sleep for :data:`PAUSE_AFTER_EPOCH_VARIABLE` seconds when the test hook is set."""
    _pause_for_tests(PAUSE_AFTER_EPOCH_VARIABLE)


def _write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    A reader never sees a half-written file: until the rename the old file
    (if any) stays in place. A process killed before the rename leaves a
    hidden ``.{name}.*.tmp`` file, which :func:`remove_stale_temporaries`
    deletes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "xb") rather than tempfile.mkstemp: mkstemp creates files with
    # mode 0600, while a plain open applies the user's umask like any output file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _pause_for_tests()
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` to a temporary file, fsync it, then rename.

    A reader never sees a half-written file: until the rename the old
    checkpoint (if any) stays in place.
    """
    _write_atomic(path, lambda stream: torch.save(state, stream))


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file, fsync and rename."""
    _write_atomic(path, lambda stream: stream.write(payload))


def save_array_atomic(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file through a temporary file, fsync and rename."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that a killed atomic write left in ``directory``.

    Returns:
        The deleted paths (empty when the folder does not exist).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(entry for entry in directory.glob(".*.tmp") if entry.is_file())
    for entry in stale:
        entry.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted write", entry)
    return stale


@contextlib.contextmanager
def deferred_keyboard_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block has finished, then raise KeyboardInterrupt.

    Wrapping the end-of-epoch bookkeeping in this block means that Ctrl-C
    never leaves the epoch counter and the saved checkpoint out of step.
    Outside the main thread signal handlers cannot be installed, so there the
    block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt


# First bytes of every file that torch.save writes (a zip archive).
ZIP_MAGIC = b"PK\x03\x04"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as stream:
        if stream.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise CheckpointError(
                f"{path} is not an in2r-graph checkpoint: it is not a PyTorch zip file (torch.save writes one)"
            )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # PyTorch's own text suggests weights_only=False, which would run code from the file.
        raise CheckpointError(
            f"{path} is not an in2r-graph checkpoint: it holds objects other than tensors and plain containers"
        ) from error
    except Exception as error:  # torch raises several unrelated types for a corrupt file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first_line}") from error


def capture_rng_state() -> dict[str, Any]:
    """Return the Python, NumPy and torch RNG states as tensors and plain lists."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    state = {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            int(numpy_state[2]),
            int(numpy_state[3]),
            float(numpy_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
