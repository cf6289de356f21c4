"""Evaluation: group, worst-group and Background Challenge metrics (`metrics`), figures (`figures`)."""
