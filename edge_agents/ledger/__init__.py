"""The ledger agent: every result, stored exactly once."""
