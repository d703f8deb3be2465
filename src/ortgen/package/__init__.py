"""The package contract: what ``ortgen export`` writes and everything downstream reads.

File and tensor names (:mod:`~ortgen.package.contract`), the typed manifest
(:mod:`~ortgen.package.manifest`), the tokenizer description, the generation defaults and the
option rules they share with every request (:mod:`~ortgen.package.generation_options`), the
prompt format of fine-tunes, and :func:`open_package`, which parses the manifest field by field
and checks it against the graphs on disk. The runtime, the server, the Triton repository writer
and retrieval QA read packages only through this floor; it imports nothing above it.
"""

from __future__ import annotations

from ortgen.package import contract
from ortgen.package.check import check_package, open_package
from ortgen.package.generation_options import GenerationDefaults, check_option
from ortgen.package.manifest import (
    Architecture,
    FileEntry,
    GraphInfo,
    Manifest,
    Quantization,
    SpecialTokens,
    TensorSpec,
    file_entry,
    verify_files,
)
from ortgen.package.prompt_format import PromptFormat
from ortgen.package.tokenizer_info import TokenizerInfo

__all__ = [
    "contract", "open_package", "check_package", "Manifest", "Architecture", "GraphInfo", "TensorSpec",
    "SpecialTokens", "FileEntry", "Quantization", "GenerationDefaults", "check_option", "PromptFormat",
    "TokenizerInfo", "file_entry", "verify_files",
]
