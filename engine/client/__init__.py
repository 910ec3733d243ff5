"""Clients of a party server: PEP 249 connection, remote transport, embedded federation."""
