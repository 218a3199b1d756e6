"""What outlives a run: the label cache and the JSONL outputs read back (merge, export)."""
