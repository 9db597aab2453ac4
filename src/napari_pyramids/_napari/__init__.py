"""The napari side: reader, writer, sample data, layer data, launch."""
