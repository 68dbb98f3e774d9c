"""Statistics, tables and plots computed from per-episode results."""
