"""Files: atomic outputs, HDF5 helpers and the resume journal. Knows nothing of datasets or models."""
