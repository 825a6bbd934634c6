"""Agent frameworks: a Pipecat service (``pipecat.py``) and a LiveKit Agents video generator
(``livekit.py``), each in-process or driving a lipstream server, on the framework-free avatar
backends of ``backends.py``.  Importing this package imports neither framework."""
