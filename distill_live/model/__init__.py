"""The model: what a .distill file holds and how it runs, with no notion of time, threads or controls.

config.py (one dataclass per part), codec.py (encoder, quantizer, decoder), prior.py (the
autoregressive model over codes), modelfile.py (the file), descriptors.py (loudness, brightness,
noisiness), kernels.py (which of torch's kernels it plays on). Imports nothing else from distill_live.
"""
