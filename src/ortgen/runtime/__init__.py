"""Runtime: load a package and generate, with neither torch nor transformers."""
