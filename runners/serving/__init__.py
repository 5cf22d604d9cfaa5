"""What every model runner shares to be served well: its lifecycle (`base`), the engines and
precision it computes with (`openvino_ir`, `precision`), memory handed back to the OS
(`memory`) and the BentoML 1.4.40 patches that keep batching and runner connections sound
(`batching`, `client_keepalive`)."""
