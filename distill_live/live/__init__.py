"""The live engine: from the registry's values to samples on the sound card, in real time.

player.py (controls in, audio out, a chunk at a time; `render` offline), engine.py (the generator
thread between the registry and the ring), ringbuffer.py, resample.py, soundcard.py (PortAudio and
file outputs), audioinput.py (serve --input). Imports the model and the parameter registry.
"""
