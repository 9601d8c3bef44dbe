"""The source face: 68 landmarks (``landmarks``), the crop of each preprocess mode (``crop``) and the
alignment the 3DMM regressor takes (``align``)."""
