"""Private inner joins: the published Paillier join and the masked fast path."""
