"""Deployment: party.toml, identities and certificates, TLS contexts."""
