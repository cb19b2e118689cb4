"""MIDI: ports, the MIDI clock, map files and the mapper that turns MIDI into registry messages."""
