"""Last-layer retraining: trainers that keep the ERM model's features and retrain its classifier on the
validation set with the groups of any groups file (`methods.last_layer` in params.yaml: (groups,
trainer) pairs). One module per trainer, imported by its own stage only: `dfr` (DFR, as ExMap runs it).
"""
LAST_LAYER_TRAINERS = ("dfr",)
