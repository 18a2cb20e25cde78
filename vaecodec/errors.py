"""Errors a user can cause. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations


class VaecodecError(Exception):
    """Base of every expected failure: bad input, damaged file, missing weights."""

    exit_code = 1


class UsageError(VaecodecError):
    """The command line asks for something impossible (bad option value, output exists)."""

    exit_code = 2


class InputError(VaecodecError):
    """An input file is missing, unreadable or not what it claims to be."""


class FormatError(VaecodecError):
    """A .vlat file is malformed; the message names the byte offset or chunk."""


class ModelError(VaecodecError):
    """A model name is unknown, its weights are missing, or they do not match the file."""
