"""studiod.dsp: pure DSP kernels, processors, the engine graph and meters."""
