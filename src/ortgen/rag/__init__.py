"""Retrieval: documents, chunking, the ONNX embedder runtime, the Milvus store and hybrid search.

The entry point for applications is :class:`ortgen.rag.index.Index` (open an index directory,
``search(question, k, filters)``); :func:`ortgen.rag.indexer.index_documents` builds or updates
one. Submodules import their heavy dependencies (onnxruntime, pymilvus) themselves, so importing
this package is cheap.
"""
