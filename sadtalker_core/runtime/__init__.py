"""Weights, device and precision: which official file feeds which network (``checkpoint_files``), reading the
file formats (``weight_files``), building and strictly loading the networks (``network_loading``), getting
the files (``download``), and ``models.ModelRuntime``, the one owner of every loaded weight."""
