"""The frontend's errors. Each carries the exit code the CLI returns for it (docker's codes)."""

from __future__ import annotations

EXIT_RUNTIME = 125        # pyctr itself failed, or was used wrongly
EXIT_CANNOT_INVOKE = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND = 127      # the command does not exist in the container


class PyctrError(Exception):
    """A failure with a message fit for the user's terminal, one line."""

    exit_code = EXIT_RUNTIME


class UsageError(PyctrError):
    """Bad input: an option, a path, a name."""


class MountError(PyctrError):
    """A mount the container needs cannot be made (a destination escaping the rootfs...)."""


class CommandNotFound(PyctrError):
    exit_code = EXIT_NOT_FOUND


class CommandNotExecutable(PyctrError):
    exit_code = EXIT_CANNOT_INVOKE


class HelperError(PyctrError):
    """The helper refused or failed; `name` is its D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
