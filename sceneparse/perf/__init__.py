"""Speed and deployment: benchmark (latency, throughput, memory, FLOPs), peer comparison, inference
optimisation (BN folding, bf16, torch.compile) and ONNX export. Built on models and the inference engine;
``engine.evaluate`` uses ``optimize`` for its bf16 / folded-BN fast path."""
