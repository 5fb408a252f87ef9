"""Loopback ports for the engines a test or the cluster demo starts."""

from __future__ import annotations

import socket

from ct_assets.cluster.processes import free_ports


def test_ports_asked_together_are_distinct_and_free() -> None:
    # asked one at a time, 500 ports come back with a repeat almost surely (SeaweedFS was
    # once given one port for its filer and its S3 gateway, and lost the gateway)
    ports = free_ports(500)
    assert len(set(ports)) == 500
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
