"""Data verification for training: contracts, quality steps, leakage checks, the dataset report."""
