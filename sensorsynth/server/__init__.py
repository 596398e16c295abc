"""The live service (``sensorsynth serve``): thin asyncio edges (OSC, WebSocket + pages, sound card, WAV) around
the pure renderer. See :mod:`.app` for how the parts are assembled and :mod:`.engine` for the threads."""
