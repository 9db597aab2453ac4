"""The OME-Zarr format: images read strictly from their metadata, multiscales written."""
