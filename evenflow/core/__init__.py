"""The engine-free model: schema, sources, features, steps, splits, pipeline."""
