"""Where the model runs: one small interface (load, encode/classify, generate) and its backends.

base.py        the interface every backend implements
catalog.py     which models exist, where their built files live, how to load one
onnx_encoder.py onnxruntime + tokenizers sentence encoder (CPU, or CUDA when onnxruntime-gpu finds a GPU)
onnx_generator.py onnxruntime decoder with a KV cache: batched greedy generation (summaries)
classifier.py  label prototypes from the taxonomy and scoring of embeddings
worker.py      runs model calls on a dedicated thread, off the event loop
server.py      `slmstream model-server`: one model process per host, batching across its workers (Unix socket)
remote.py      a worker's client of that server: a drop-in for worker.py's ModelWorker
wire.py        the server's frames: orjson headers, arrays as raw bytes, no pickle
build.py       `slmstream models build`: export to ONNX and quantize, once, into the cache
export_decoder.py the generator's export (GGUF → torch → ONNX with KV cache → 8-bit weights), build time only
decoder_families.py the decoder families a user may bring (Llama-style, Phi-3, Gemma 1/2/3): masks, template, stops
import_decoder.py `slmstream models import-decoder`: a user's checkpoint → cache, or a manifest for a ready ONNX export
"""
