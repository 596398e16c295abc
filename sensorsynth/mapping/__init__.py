"""Mappings: sensor frames → control events and deformations, for any instrument, from any source.

Pure (arrays and values in, commands out; time arrives with the frames; no I/O but reading preset files):

- :mod:`sensorsynth.instrument.basis`  the instrument's own basis (fitted on its control signal, stored in
  the instrument file; it lives with the instrument because the file format computes it when upgrading)
- :mod:`.filters`      One-Euro smoothing and a high-pass, per axis
- :mod:`.calibration`  per-axis ranges, learned over the first seconds or set
- :mod:`.gate`         the velocity gate: when an event fires, and how loud
- :mod:`.features`     per kind (motion, hand, raw): drive, change, pose, continuous quantity
- :mod:`.source`       one source's mapping: frames in, Control/Deform out
- :mod:`.learned`      record → train → run regressors (Wekinator style), stored as JSON data
- :mod:`.presets`      address tables of OSC apps (``presets/*.toml``) and frame assembly
- :mod:`.hub`          every owner's sources, learn sessions and learned models

The server's edge is :mod:`sensorsynth.server.mapping_edge`; the README's "Mappings" section documents it all.
"""
