"""Benchmarks: ortgen against transformers and CTranslate2, with the machine's own speed floor."""
