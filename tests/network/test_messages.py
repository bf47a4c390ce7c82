"""What the user reads when the helper says no: one line, the reason, and the way out."""

from __future__ import annotations

import pyctr_bus
import pytest

from pyctr import network
from pyctr.errors import EXIT_RUNTIME, HelperError
from pyctr.spec import NetworkConfig, PortMapping

BRIDGE = NetworkConfig(mode="bridge", ports=(PortMapping(container_port=80, host_port=8080),))


def _message(name: str, text: str, config: NetworkConfig = BRIDGE, prompted: bool = False) -> str:
    error = network._user_error(HelperError(name, text), config, prompted=prompted)
    assert error.exit_code == EXIT_RUNTIME and error.name == name
    [line] = str(error).splitlines()
    return line


def test_port_in_use_keeps_the_helpers_reason():
    line = _message(pyctr_bus.PORT_IN_USE, "host port 8080/tcp is already in use")
    assert line == "cannot attach to network 'pyctr': host port 8080/tcp is already in use"


@pytest.mark.parametrize("action", [pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT])
def test_refusal_names_the_action_and_the_group_that_grants_it(action):
    line = _message(pyctr_bus.NOT_AUTHORIZED, f"not authorized for {action}")
    assert line.startswith(f"not authorized for {action} (network 'pyctr'): ")
    assert "'pyctr' group" in line
    assert line.count(action) == 1


def test_privileged_port_refusal_asks_for_a_rule_not_the_group():
    action = pyctr_bus.ACTION_PUBLISH_PRIVILEGED_PORT
    line = _message(pyctr_bus.NOT_AUTHORIZED, f"not authorized for {action}")
    assert f"an administrator must grant {action}" in line and "group" not in line


def test_password_needed_without_terminal_says_so():
    line = _message(pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED,
                    f"{pyctr_bus.ACTION_ATTACH} needs authentication; retry allowing interactive")
    assert "password" in line and "terminal" in line


def test_unreachable_helper_is_named():
    line = _message("org.freedesktop.DBus.Error.ServiceUnknown", "The name is not activatable")
    assert line == "pyctr-helper is not reachable on the system bus: The name is not activatable"


def test_helper_text_is_one_printable_line_of_bounded_length():
    line = _message(pyctr_bus.FAILED, "first\nsecond\x1b[31m" + "x" * 1000)
    assert "\x1b" not in line and len(line) < 400
