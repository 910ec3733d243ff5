"""The control channel between analysts and party servers: framing and typed messages."""
