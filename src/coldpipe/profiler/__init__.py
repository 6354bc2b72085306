"""Real inputs for scenarios: the device catalog, model profiles from checkpoints and GGUF files, the profiler.

- :mod:`coldpipe.profiler.catalog` reads ``data/devices.yaml`` (cited figures of real edge devices);
- :mod:`coldpipe.profiler.checkpoint` profiles a checkpoint from its safetensors headers (no tensor data; the
  reader is :mod:`coldpipe.checkpoint_files`, shared with the runtime);
- :mod:`coldpipe.profiler.gguf_model` profiles a llama.cpp GGUF file from its header (the reader is
  :mod:`coldpipe.gguf_files`);
- :mod:`coldpipe.profiler.measure` measures this machine (imports torch lazily, only when asked);
- :mod:`coldpipe.profiler.link` measures a link to a peer over TCP.

Importing this package imports neither torch nor transformers.
"""
