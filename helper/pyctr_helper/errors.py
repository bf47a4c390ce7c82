"""The helper's error types. Each carries the D-Bus error name a caller sees and a message fit
for a user; the facade turns them into D-Bus errors. Anything else becomes Failed with a generic
message, so a traceback or an internal detail never reaches a caller."""

from __future__ import annotations

import pyctr_bus


class HelperError(Exception):
    """Base of every error a caller may see."""

    dbus_name = pyctr_bus.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAuthorized(HelperError):
    dbus_name = pyctr_bus.NOT_AUTHORIZED


class InteractiveAuthorizationRequired(NotAuthorized):
    """polkit would ask for a password, but the caller's message did not allow a prompt."""

    dbus_name = pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED


class InvalidArgument(HelperError):
    dbus_name = pyctr_bus.INVALID_ARGUMENT


class InvalidNamespace(HelperError):
    dbus_name = pyctr_bus.INVALID_NAMESPACE


class QuotaExceeded(HelperError):
    dbus_name = pyctr_bus.QUOTA_EXCEEDED


class PortInUse(HelperError):
    dbus_name = pyctr_bus.PORT_IN_USE


class NoSuchLease(HelperError):
    dbus_name = pyctr_bus.NO_SUCH_LEASE


class Failed(HelperError):
    dbus_name = pyctr_bus.FAILED


class ConfigError(Exception):
    """The admin configuration is unusable; the helper refuses to serve."""
