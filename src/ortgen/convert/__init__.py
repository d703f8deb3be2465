"""Checkpoint formats that are not Hugging Face directories (fairseq BioGPT), converted to one."""
