"""Page templates of the verification stage (Python modules, so they ship with the package)."""
