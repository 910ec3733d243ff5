"""Secure protocols run inside one MPyC session: private joins and secure aggregates."""
