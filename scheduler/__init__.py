"""gpupool's scheduler: the pure allocation core, the trace simulator and the live loop."""
