"""The data contract: the prepared-file format (`prepared`), the in-memory splits a dataset builder
hands to `prepare` (`samples`), how images are viewed (`views`), the masks file and the one place masks
are applied (`masks`), and `splits.Split`, the Dataset every prepared split is read through."""
