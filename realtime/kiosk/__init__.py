"""``lipstream kiosk``: the avatar full screen on this machine, a local microphone and speaker.

Modules: ``devices`` (PortAudio's devices by name or index, clear errors), ``audio_io`` (the mic
input and the speaker, the session's audio sink), ``pacer`` (each frame on screen when its sound
plays), ``display`` (the window process and the kiosk's end of it), ``xwindow`` (the full-screen Xlib window), ``kiosk`` (the session, frame loop, modes,
barge-in, reconnects, HTTP).  Nothing here is imported by the server; sounddevice (PortAudio) is
imported on first use.  See docs/kiosk.md.
"""
