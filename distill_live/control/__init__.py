"""Control: everything a performer can steer, and the surfaces that steer it.

params.py is the parameter registry, the one list of controls; score.py reads timed control files;
osc/ and midi/ are the surfaces. A surface talks to a running engine through the engine's public
face (an object passed in), never by importing the live engine.
"""
