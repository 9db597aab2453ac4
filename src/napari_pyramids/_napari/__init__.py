"""The napari side: reader, writer, sample data, layer data, launch.

The Pyramid Builder's layer picker, preview and texts are here, Qt-free; its Qt half
(widget, build runner, worker) is in ``_qt``.
"""
