"""Speed and deployment: benchmark (latency, throughput, memory, FLOPs), peer comparison and ONNX export.
Built on models and engine (``engine.optimize`` does BN folding / bf16 / compile); nothing imports it back."""
