"""``python -m engine.server``: run one party server (party.toml or the embedded JSON config)."""

from engine.server.party import main

main()
