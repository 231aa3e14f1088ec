"""Errors a user can fix: the command line prints their message as one line and exits 2.

Anything that is not a ``UserError`` (CUDA out of memory, a bug) keeps its
traceback. The subclasses also derive from the built-in type callers already
catch (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
A check that guards the code itself (a tensor shape, an internal invariant) raises a
plain ``ValueError`` instead, and the command line shows its traceback.
"""
from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): what a one-line error,
    a manifest reason or a skipped-sample note quotes of it."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def described(e: BaseException, limit: int = 200) -> str:
    """``Type: message`` with the message's lines joined and cut at ``limit`` characters (``Type`` alone when it
    has none): for errors whose first line says too little (a loader's multi-line report)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


class UserError(Exception):
    """A mistake in the command, its options or its input, explained in one line."""


class ConfigError(UserError, ValueError):
    """An unknown or inconsistent setting (option, preset, config file, backend name)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is not given, or that does not fit the model it is loaded into."""


class CheckpointNotFound(UserError, FileNotFoundError):
    """A checkpoint path or model id that names nothing on this machine."""


class DeviceError(UserError, RuntimeError):
    """A device was asked for that this machine does not have (``--gpus`` without CUDA)."""


class InputError(UserError, ValueError):
    """An input (dataset, recipe file, sample key, shard member) that does not hold what the command needs."""


class InputNotFound(UserError, FileNotFoundError):
    """An input path that names nothing: no such dataset, clip folder or metadata file."""


class OutputExists(UserError, FileExistsError, ValueError):
    """An output that already holds results and would be overwritten (no --resume / --overwrite given).

    Both built-in bases, because some commands raised ``FileExistsError`` for this and others ``ValueError``.
    """
