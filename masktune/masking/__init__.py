"""Masking: which pixels to mask (`rules`: MaskTune's saliency threshold, RandMask's squares) and the
`materialize_masked_dataset` step that writes the masks file (`compute`)."""
