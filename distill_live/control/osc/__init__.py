"""OSC and OSCQuery: the registry over UDP, TCP and HTTP."""
