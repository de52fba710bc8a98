"""Where the model runs: one small interface (load, encode/classify, generate) and its backends.

base.py        the interface every backend implements
catalog.py     which models exist, where their built files live, how to load one
onnx_encoder.py onnxruntime + tokenizers sentence encoder (CPU, or CUDA when onnxruntime-gpu finds a GPU)
onnx_generator.py onnxruntime decoder with a KV cache: batched greedy generation (summaries)
classifier.py  label prototypes from the taxonomy and scoring of embeddings
worker.py      runs model calls on a dedicated thread, off the event loop
build.py       `slmstream models build`: export to ONNX and quantize, once, into the cache
export_decoder.py the generator's export (GGUF → torch → ONNX with KV cache → 8-bit weights), build time only
"""
