"""Storage engines; each is registered in the ``dtq.engines`` entry-point group."""
