"""The D-Bus contract between the pyctr frontend and pyctr-helper.

Both sides import these names; neither writes them again. The interface XML beside this
file is the published form, and a unit test keeps the two in step.
"""

BUS_NAME = "org.pyctr.Helper1"
OBJECT_PATH = "/org/pyctr/Helper1"
NETWORK_INTERFACE = "org.pyctr.Helper1.Network"
RESOURCES_INTERFACE = "org.pyctr.Helper1.Resources"
VERSION = "0.1.0"

# Error names: the helper raises them, the frontend maps them to messages and exit codes.
ERROR_PREFIX = "org.pyctr.Helper1.Error."
NOT_AUTHORIZED = ERROR_PREFIX + "NotAuthorized"
INVALID_ARGUMENT = ERROR_PREFIX + "InvalidArgument"
INVALID_NAMESPACE = ERROR_PREFIX + "InvalidNamespace"
QUOTA_EXCEEDED = ERROR_PREFIX + "QuotaExceeded"
PORT_IN_USE = ERROR_PREFIX + "PortInUse"
NO_SUCH_LEASE = ERROR_PREFIX + "NoSuchLease"
FAILED = ERROR_PREFIX + "Failed"
# Standard D-Bus name for "this needs a password prompt, and the caller did not allow one".
INTERACTIVE_AUTHORIZATION_REQUIRED = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"

# polkit action ids (polkit/org.pyctr.policy).
ACTION_ATTACH = "org.pyctr.network.attach"
ACTION_PUBLISH_PORT = "org.pyctr.network.publish-port"
ACTION_PUBLISH_PRIVILEGED_PORT = "org.pyctr.network.publish-privileged-port"
ACTION_MANAGE_ALL = "org.pyctr.network.manage-all"
ACTION_LIMIT_RESOURCES = "org.pyctr.resources.limit"

DEFAULT_NETWORK = "pyctr"
DEFAULT_IFNAME = "eth0"

# Wire form of one published port: (host_ip, host_port, container_port, protocol).
# host_ip "" means every local address; host_port 0 asks the helper to pick one.
PORT_SIGNATURE = "(sqqs)"
PROTOCOLS = ("tcp", "udp")

# Attach options and their D-Bus signatures; anything else is InvalidArgument.
ATTACH_OPTIONS = {
    "network": "s",
    "ifname": "s",
    "ports": "a" + PORT_SIGNATURE,
    "address": "s",
}
# Keys of Attach's result and of each List entry.
LEASE_FIELDS = {
    "lease": "s",
    "network": "s",
    "address": "s",
    "gateway": "s",
    "mac": "s",
    "dns": "as",
    "ports": "a" + PORT_SIGNATURE,
    "host_ifname": "s",
}

# Limit options and their D-Bus signatures; anything else is InvalidArgument.
LIMIT_OPTIONS = {
    "memory": "x",
    "memory_swap": "x",
    "cpus": "d",
    "pids": "x",
}

INTERFACE_XML = "org.pyctr.Helper1.xml"


def interface_xml() -> str:
    """The interface description, as served by Introspect."""
    from pathlib import Path

    return (Path(__file__).with_name(INTERFACE_XML)).read_text()
