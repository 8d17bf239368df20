"""hvd_mlp: data-parallel MLP training with Horovod, and per-epoch communication analysis of its timeline."""
