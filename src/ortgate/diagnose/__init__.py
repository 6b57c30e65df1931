"""Why a gate fails and what passes instead: profiling, tensor-error diagnosis and repair of quantized variants."""
