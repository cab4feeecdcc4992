"""Errors that stop a training run."""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss or weight.

    The message names the epoch, the step, the loss terms and the last
    checkpoint that was saved before the values went bad.
    """
