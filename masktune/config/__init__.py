"""Params: the schema of params.yaml (every key's type and bounds, in one place) and the typed, frozen
config each stage resolves once when it starts. Depends only on `errors` (and PyYAML)."""
